"""Registered models behind a real endpoint process on a loopback port: keys, size limit, bad input,
both request forms for each task, traffic split, the deployment header, explanations, restart; and
batch scoring with a metrics report."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from factories import check_scoring_answers
from PIL import Image
from typer.testing import CliRunner

from core.base.tasks import Task
from core.data.importer import ImportOptions, import_dataset
from core.data.samples import write_sample
from core.runs.trial import run_trial
from storage.db import make_engine
from storage.settings import Settings

TINY = {"number_of_epochs": 1, "training_batch_size": 8}
MODELS = {  # deployment -> (task, model, overrides)
    "cls": (Task.CLASSIFICATION, "test_resnet", {"training_crop_size": 32, "validation_crop_size": 32,
                                                 "validation_resize_size": 32}),
    "ml": (Task.MULTILABEL, "test_resnet", {"training_crop_size": 32, "validation_crop_size": 32,
                                           "validation_resize_size": 32}),
    "det": (Task.DETECTION, "fasterrcnn_resnet18_fpn", {"min_size": 64, "max_size": 64, "box_score_threshold": 0.0}),
    # Ten detections, not 100: Mask R-CNN pastes each mask in a Python loop.
    "seg": (Task.SEGMENTATION, "maskrcnn_resnet18_fpn", {"min_size": 64, "max_size": 64, "box_score_threshold": 0.0,
                                                         "max_number_of_polygon_points": 12,
                                                         "box_detections_per_image": 10}),
}
LIMIT = 300_000  # bytes per request, set low to test 413


class Kestrel:
    def __init__(self, home: Path) -> None:
        from core.cli import app

        self.app, self.env = app, {"KESTREL_HOME": str(home), "KESTREL_MAX_REQUEST_BYTES": str(LIMIT)}

    def __call__(self, *args: str) -> Any:
        result = CliRunner().invoke(self.app, [*args, "--json"], env=self.env)
        assert result.exit_code == 0, f"{args}: {result.stdout}{result.stderr}{result.exception!r}"
        return json.loads(result.stdout)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, template_db: Path):  # type: ignore[no-untyped-def]
    """Four tiny models (one per task) registered and deployed behind endpoint ``ep``."""
    root = tmp_path_factory.mktemp("serving")
    home = root / "home"
    home.mkdir()
    shutil.copyfile(template_db, home / "kestrel.db")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in Kestrel(home).env.items():
            mp.setenv(key, value)
        settings = Settings()
        engine = make_engine(settings.db_url)
        kestrel, images = Kestrel(home), {}
        for seed, (dep, (task, model, overrides)) in enumerate(MODELS.items()):
            jsonl = write_sample(task, root / dep, count=16, size=64, seed=seed)
            import_dataset(jsonl, ImportOptions(dep, task), settings=settings, engine=engine)
            result = run_trial(settings=settings, engine=engine, dataset=dep, version=None,
                               overrides={"model_name": model, **TINY, **overrides})
            kestrel("model", "register", "--trial", str(result.trial_id), "--name", f"m-{dep}")
            images[dep] = sorted((root / dep / "images").iterdir())[:2]
        kestrel("endpoint", "create", "ep")
        for dep in MODELS:
            info = kestrel("deployment", "create", "--endpoint", "ep", "--name", dep, "--model", f"m-{dep}:1")
        keys = kestrel("endpoint", "keys", "ep")
        yield {"kestrel": kestrel, "uri": info["scoring_uri"], "key": keys["primary_key"], "keys": keys,
               "images": images, "settings": settings, "engine": engine, "root": root}
        kestrel("endpoint", "delete", "ep")
        engine.dispose()


def _post(served: dict, body: bytes | None = None, *, key: str | None = "primary", dep: str | None = None,
          json_body: Any = None, content_type: str = "application/octet-stream") -> httpx.Response:
    headers = {"Content-Type": content_type if json_body is None else "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {served['key'] if key == 'primary' else key}"
    if dep:
        headers["azureml-model-deployment"] = dep
    content = json.dumps(json_body).encode() if json_body is not None else body
    return httpx.post(served["uri"], content=content, headers=headers, timeout=60)


def test_show_names_the_scoring_uri_state_deployments_and_traffic(served):
    info = served["kestrel"]("endpoint", "show", "ep")
    assert info["scoring_uri"] == served["uri"] and info["scoring_uri"].startswith("http://127.0.0.1:")
    assert info["state"] == "ready" and info["traffic"] == {"cls": 100}
    assert {d["name"] for d in info["deployments"]} == set(MODELS)
    assert httpx.get(served["uri"].replace("/score", "/docs")).status_code == 200


def test_keys_size_limit_and_bad_input_are_refused_and_the_server_goes_on(served):
    image = served["images"]["cls"][0].read_bytes()
    assert _post(served, image, key=None).status_code == 401
    assert _post(served, image, key="not-the-key").status_code == 401
    assert _post(served, image, key=served["keys"]["secondary_key"]).status_code == 200
    assert _post(served, b"\0" * (LIMIT + 1)).status_code == 413
    bad = _post(served, b"this is not an image")
    assert bad.status_code == 400 and "not an image" in bad.json()["error"]
    assert _post(served, json_body={"input_data": {"data": ["%%%"]}}).status_code == 400
    assert _post(served, b"{}", content_type="text/plain").status_code == 400
    ok = _post(served, image)
    assert ok.status_code == 200 and ok.json()["labels"] == ["circle", "square", "triangle"]


@pytest.mark.parametrize("dep", list(MODELS))
def test_bytes_and_json_forms_answer_in_the_schema_of_each_task(served, dep):
    files = served["images"][dep]
    one = _post(served, files[0].read_bytes(), dep=dep)
    assert one.status_code == 200 and one.headers["azureml-model-deployment"] == dep
    encoded = [base64.b64encode(f.read_bytes()).decode() for f in files]
    data = [encoded[0], json.dumps({"image_base64": encoded[1]})]
    many = _post(served, json_body={"input_data": {"columns": ["image"], "data": data}}, dep=dep)
    assert many.status_code == 200
    answers = many.json()
    assert len(answers) == 2
    task = MODELS[dep][0]
    if task in (Task.CLASSIFICATION, Task.MULTILABEL):
        for answer in answers:
            assert len(answer["probs"]) == len(answer["labels"]) == 3
            if task is Task.CLASSIFICATION:
                assert abs(sum(answer["probs"]) - 1) < 1e-4
    else:
        check_scoring_answers([*answers, one.json()], ["circle", "square", "triangle"],
                              polygons=task is Task.SEGMENTATION)


def test_traffic_70_30_and_the_header_override(served):
    kestrel = served["kestrel"]
    kestrel("endpoint", "update", "ep", "--traffic", "cls=70,ml=30")
    image = served["images"]["cls"][0].read_bytes()
    picked = Counter(_post(served, image).headers["azureml-model-deployment"] for _ in range(200))
    assert set(picked) == {"cls", "ml"} and 60 <= picked["cls"] / 2 <= 80, picked
    assert all(_post(served, image, dep="ml").headers["azureml-model-deployment"] == "ml" for _ in range(5))
    assert _post(served, image, dep="nope").status_code == 404
    kestrel("endpoint", "update", "ep", "--traffic", "cls=100")


def test_explanations_come_back_with_the_answer(served):
    encoded = base64.b64encode(served["images"]["cls"][0].read_bytes()).decode()
    request = json.dumps({"image_base64": encoded, "model_explainability": True,
                          "xai_parameters": {"xai_algorithm": "guided_backprop", "visualizations": True,
                                             "attributions": True}})
    answer = _post(served, json_body={"input_data": {"columns": ["image"], "data": [request]}}, dep="cls").json()[0]
    assert len(answer["attributions"]) == 3 and len(answer["attributions"][0]) == 32
    picture = Image.open(io.BytesIO(base64.b64decode(answer["visualizations"])))
    assert picture.format == "PNG" and picture.size == (64, 64)
    bad = {"image_base64": encoded, "model_explainability": True, "xai_parameters": {"xai_algorithm": "magic"}}
    refused = _post(served, json_body={"input_data": {"data": [json.dumps(bad)]}}, dep="cls")
    assert refused.status_code == 400 and "xai_algorithm" in refused.json()["error"]


def test_a_new_key_replaces_the_old_one_at_once(served):
    kestrel, image = served["kestrel"], served["images"]["cls"][0].read_bytes()
    old = served["key"]
    new = kestrel("endpoint", "regenerate-key", "ep", "--key-type", "primary")["primary_key"]
    assert new != old
    assert _post(served, image, key=old).status_code == 401
    served["key"] = new
    assert _post(served, image).status_code == 200


def test_a_killed_endpoint_comes_back_on_its_port_when_the_studio_starts(served):
    from core.base.processes import process_alive
    from core.serving.runner import restore_all, wait_ready

    info = served["kestrel"]("endpoint", "show", "ep")
    os.kill(info["pid"], signal.SIGKILL)
    for _ in range(100):
        if not process_alive(info["pid"]):
            break
        time.sleep(0.1)
    assert restore_all(served["settings"], served["engine"]) == ["ep"]
    wait_ready(served["settings"], served["engine"], "ep")
    again = served["kestrel"]("endpoint", "show", "ep")
    assert again["pid"] != info["pid"]
    served["uri"] = again["scoring_uri"]  # the same URL unless the old port was still held
    assert _post(served, served["images"]["cls"][0].read_bytes()).status_code == 200


def test_score_answers_503_with_retry_after_while_the_models_load(served, monkeypatch):
    from fastapi.testclient import TestClient

    import core.inference.predict
    from core.serving.app import create_app

    loading_may_end, real = threading.Event(), core.inference.predict.load_predictor
    monkeypatch.setattr(core.inference.predict, "load_predictor",
                        lambda *a, **k: loading_may_end.wait(60) and real(*a, **k))
    headers = {"Authorization": f"Bearer {served['key']}", "Content-Type": "application/octet-stream"}
    image = served["images"]["cls"][0].read_bytes()
    with TestClient(create_app("ep", served["settings"])) as client:
        early = client.post("/score", content=image, headers=headers)
        assert early.status_code == 503 and early.headers["retry-after"] == "2"
        assert "loading" in early.json()["error"] and client.get("/health").json()["status"] == "loading"
        loading_may_end.set()
        for _ in range(600):
            if client.get("/health").json()["status"] != "loading":
                break
            time.sleep(0.1)
        assert client.get("/health").json()["status"] == "ready"
        assert client.post("/score", content=image, headers=headers).json()["labels"] == [
            "circle", "square", "triangle"]


def test_requests_waiting_for_the_model_are_scored_together_each_getting_its_own_answer(served):
    from core.inference.predict import load_predictor, predict_json
    from core.serving.app import _Inference
    from core.serving.inputs import Item

    predictor = load_predictor(served["settings"].models_dir / "m-cls" / "1")
    passes: list[int] = []

    class Counting:
        task, classes = predictor.task, predictor.classes

        def predict(self, images):  # type: ignore[no-untyped-def]
            passes.append(len(images))
            return predictor.predict(images)

    images = [Image.open(path).convert("RGB") for dep in ("cls", "ml", "det") for path in served["images"][dep]]
    inference, busy, counting = _Inference(), threading.Event(), Counting()
    inference.call(busy.wait)  # holds the inference thread while the requests queue up
    futures = [inference.score(counting, [Item(image)]) for image in images]
    busy.set()
    answers = [future.result(timeout=60)[0] for future in futures]
    assert passes == [len(images)]
    for image, answer in zip(images, answers, strict=True):
        alone = predict_json(predictor, [image], ["image_0"])[0]
        assert answer["filename"] == "image_0" and answer["labels"] == alone["labels"]
        assert answer["probs"] == pytest.approx(alone["probs"], abs=1e-5)


def test_a_request_that_gave_up_is_skipped_and_the_next_one_is_answered(served):
    """A request past request_timeout_ms cancels its future while it waits for the inference thread;
    the thread drops that work and goes on answering."""
    from core.inference.predict import load_predictor
    from core.serving.app import _Inference
    from core.serving.inputs import Item

    predictor = load_predictor(served["settings"].models_dir / "m-cls" / "1")
    image = Image.open(served["images"]["cls"][0]).convert("RGB")
    inference, busy = _Inference(), threading.Event()
    inference.call(busy.wait)
    gave_up = inference.score(predictor, [Item(image)])
    assert gave_up.cancel()
    busy.set()
    assert inference.score(predictor, [Item(image)]).result(timeout=60)[0]["labels"] == [
        "circle", "square", "triangle"]


def test_model_settings_are_checked_and_change_what_the_model_answers(served):
    kestrel = served["kestrel"]
    changed = kestrel("model", "settings", "m-det:1", "--set", "box_score_thresh=0.5")
    assert changed["settings"]["box_score_thresh"] == 0.5
    result = CliRunner().invoke(kestrel.app, ["model", "settings", "m-det:1", "--set", "box_score_thresh=7"],
                                env=kestrel.env)
    assert result.exit_code == 2 and "out of range" in result.stderr
    assert kestrel("model", "show", "m-det:1")["settings"]["box_score_thresh"] == 0.5


def test_batch_scoring_writes_answers_and_a_metrics_report(served):
    kestrel, root = served["kestrel"], served["root"]
    out = root / "preds.jsonl"
    report = kestrel("score", str(root / "cls" / "annotations.jsonl"), "--model", "m-cls:1", "--out", str(out))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert report["images"] == len(lines) == 16 and "accuracy" in report["metrics"]
    assert json.loads(Path(report["metrics_file"]).read_text())["metrics"]["accuracy"] == report["metrics"]["accuracy"]
    folder = kestrel("score", str(root / "det" / "images"), "--model", "m-det", "--out", str(root / "det.jsonl"))
    assert folder["images"] == 16 and "metrics" not in folder
    registered = kestrel("score", "seg:1", "--model", "m-seg:1", "--out", str(root / "seg.jsonl"))
    assert "mean_average_precision" in registered["metrics"]


def test_a_registered_model_exports_to_onnx_with_its_sidecar(served):
    out = str(served["root"] / "onnx")
    exported = served["kestrel"]("model", "export", "m-cls:1", "--format", "onnx", "--out", out)
    assert Path(exported["file"]).stat().st_size > 0
    assert json.loads(Path(exported["sidecar"]).read_text())["classes"] == ["circle", "square", "triangle"]


# --- the reference's client code, pasted (issue 15): only the URL, key and image path are substituted ----

SNIPPETS = Path(__file__).parent / "snippets"

SEED_000_CLIENT = (SNIPPETS / "seed_000_client.py.txt").read_text()

SEED_003_CLIENT = (SNIPPETS / "seed_003_client.py.txt").read_text()


class _OnlineEndpoints:
    """``ml_client.online_endpoints`` of the Azure SDK, as far as seed 003 uses it: invoke posts the
    request file to the endpoint's URL with its key and the deployment header."""

    def __init__(self, served: dict) -> None:
        self.served = served

    def invoke(self, *, endpoint_name: str, deployment_name: str, request_file: str) -> str:
        assert endpoint_name == "ep"
        with open(request_file, "rb") as file:
            return _post(self.served, file.read(), dep=deployment_name, content_type="application/json").text


def test_seed_000_client_posts_raw_bytes_and_reads_boxes_from_one_object(served, tmp_path, monkeypatch, capsys):
    import matplotlib

    matplotlib.use("Agg")
    kestrel = served["kestrel"]
    kestrel("endpoint", "update", "ep", "--traffic", "det=100")  # the snippet names no deployment
    try:
        exec(SEED_000_CLIENT, {"SCORING_URI": served["uri"], "KEYS": (served["key"], None),
                               "SAMPLE_IMAGE": str(served["images"]["det"][0])})
    finally:
        kestrel("endpoint", "update", "ep", "--traffic", "cls=100")
    printed = capsys.readouterr().out.splitlines()
    answer = json.loads(printed[0])
    assert set(answer) >= {"boxes"} and all(b["label"] in ("circle", "square", "triangle") for b in answer["boxes"])


def test_seed_003_client_sends_encodebytes_base64_with_newlines_and_gets_its_visualization(served, tmp_path,
                                                                                         monkeypatch):
    from types import SimpleNamespace

    monkeypatch.chdir(tmp_path)
    scope = {"SAMPLE_IMAGE": str(served["images"]["cls"][0]), "online_endpoint_name": "ep",
             "deployment": SimpleNamespace(name="cls"),
             "ml_client": SimpleNamespace(online_endpoints=_OnlineEndpoints(served))}
    exec(SEED_003_CLIENT, scope)
    assert "\n" in json.loads(scope["request_json"]["input_data"]["data"][0])["image_base64"]
    assert scope["image"].size[0] > 32 and scope["predictions"][0]["labels"] == ["circle", "square", "triangle"]


def test_base64_in_a_data_url_is_accepted(served):
    image = served["images"]["cls"][0].read_bytes()
    data_url = "data:image/png;base64," + base64.b64encode(image).decode()
    answer = _post(served, json_body={"input_data": {"columns": ["image"], "data": [data_url]}}, dep="cls")
    assert answer.status_code == 200 and answer.json()[0]["labels"] == ["circle", "square", "triangle"]


# Seed 003's files, only the model's name substituted (a model registered in this test's studio).
SEED_003_ENDPOINT = """\
$schema: https://azuremlschemas.azureedge.net/latest/managedOnlineEndpoint.schema.json
name: od-fridge-items-endpoint
auth_mode: key
"""
SEED_003_DEPLOYMENT = """\
name: od-fridge-items-mlflow-deploy
endpoint_name: od-fridge-items-endpoint
model: azureml:m-det@latest
instance_type: Standard_DS3_v2
instance_count: 1
liveness_probe:
    failure_threshold: 30
    success_threshold: 1
    timeout: 2
    period: 10
    initial_delay: 2000
readiness_probe:
    failure_threshold: 10
    success_threshold: 1
    timeout: 10
    period: 10
    initial_delay: 2000
"""


def test_seed_003_endpoint_and_deployment_files_work_unchanged(served, tmp_path):
    kestrel = served["kestrel"]
    (tmp_path / "create_endpoint.yml").write_text(SEED_003_ENDPOINT)
    (tmp_path / "create_deployment.yml").write_text(SEED_003_DEPLOYMENT)
    created = kestrel("endpoint", "create", "--file", str(tmp_path / "create_endpoint.yml"))
    assert created["name"] == "od-fridge-items-endpoint" and created["notices"] == []
    try:
        deployed = kestrel("deployment", "create", "--file", str(tmp_path / "create_deployment.yml"))
        assert [n.split(" does not apply")[0] for n in deployed["notices"]] == [
            "instance_type", "instance_count", "liveness_probe", "readiness_probe"]
        assert deployed["deployments"] == [{"name": "od-fridge-items-mlflow-deploy", "model": "m-det:1",
                                            "task": "image_object_detection", "request_settings": {
                                                "request_timeout_ms": None,
                                                "max_concurrent_requests_per_instance": None}}]
        split = kestrel("endpoint", "update", "od-fridge-items-endpoint", "--traffic",
                        "od-fridge-items-mlflow-deploy=100")
        assert split["traffic"] == {"od-fridge-items-mlflow-deploy": 100}
        key = kestrel("endpoint", "keys", "od-fridge-items-endpoint")["primary_key"]
        answer = httpx.post(deployed["scoring_uri"], content=served["images"]["det"][0].read_bytes(), timeout=60,
                            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/octet-stream"})
        assert answer.status_code == 200 and "boxes" in answer.json()
    finally:
        kestrel("endpoint", "delete", "od-fridge-items-endpoint")


def test_a_deployment_file_refuses_unknown_keys_by_name(served, tmp_path):
    file = tmp_path / "d.yml"
    file.write_text(SEED_003_DEPLOYMENT + "request_settings:\n  request_timeout_msec: 90000\n")
    result = CliRunner().invoke(served["kestrel"].app, ["deployment", "create", "--file", str(file)],
                                env=served["kestrel"].env)
    assert result.exit_code == 2
    assert "d.yml: request_settings.request_timeout_msec: unknown key" in result.stderr
    assert "request_timeout_ms" in result.stderr


def test_request_settings_bound_the_time_and_the_requests_at_once(served, tmp_path, monkeypatch):
    """Seed 003 sets request_timeout_ms to 90 s for explanations; the reference answers 408 past it and
    429 past max_concurrent_requests_per_instance."""
    from fastapi.testclient import TestClient

    from core.serving import inputs
    from core.serving.app import create_app

    kestrel = served["kestrel"]
    for name, settings in (("hasty", "request_timeout_ms: 1"), ("single", "max_concurrent_requests_per_instance: 1")):
        (tmp_path / f"{name}.yml").write_text(f"name: {name}\nendpoint_name: ep\nmodel: azureml:m-cls:1\n"
                                              f"request_settings:\n  {settings}\n")
        kestrel("deployment", "create", "--file", str(tmp_path / f"{name}.yml"))
    image = served["images"]["cls"][0].read_bytes()
    late = _post(served, image, dep="hasty")
    assert late.status_code == 408 and late.json()["error"].startswith(
        "deployment hasty did not answer within 1 ms (request_settings.request_timeout_ms)")
    assert _post(served, image, dep="single").status_code == 200

    entered, release, real = threading.Event(), threading.Event(), inputs.decode_image

    def held_decode(decoded):  # type: ignore[no-untyped-def]
        entered.set()
        release.wait(20)
        return real(decoded)

    monkeypatch.setattr(inputs, "decode_image", held_decode)
    headers = {"Authorization": f"Bearer {served['key']}", "Content-Type": "application/octet-stream",
               "azureml-model-deployment": "single"}
    with TestClient(create_app("ep", served["settings"])) as client:
        for _ in range(600):
            if client.get("/health").json()["status"] == "ready":
                break
            time.sleep(0.1)
        first: list[Any] = []
        holder = threading.Thread(target=lambda: first.append(client.post("/score", content=image, headers=headers)))
        holder.start()
        assert entered.wait(30)
        second = client.post("/score", content=image, headers=headers)
        release.set()
        holder.join(60)
    assert second.status_code == 429 and second.headers["retry-after"] == "2"
    assert "takes 1 request(s) at once (request_settings.max_concurrent_requests_per_instance)" in \
        second.json()["error"]
    assert first[0].status_code == 200


def test_a_model_exported_as_mlflow_predicts_as_our_predictor_and_registers_back(served):
    """Azure's AutoML hands its models over as MLflow folders; ours load with MLflow's own loader."""
    import mlflow.pyfunc
    import pandas as pd

    from core.inference.predict import load_predictor, predict_json

    kestrel, root = served["kestrel"], served["root"]
    folder = root / "mlflow-model"
    assert kestrel("model", "export", "m-cls:1", "--format", "mlflow", "--out", str(folder))["folder"] == str(folder)
    assert {p.name for p in folder.iterdir()} == {"MLmodel", "conda.yaml", "python_env.yaml", "requirements.txt",
                                                  "data"}
    files = served["images"]["cls"]
    frame = pd.DataFrame({"image": [base64.encodebytes(f.read_bytes()).decode() for f in files]})
    answers = mlflow.pyfunc.load_model(str(folder)).predict(frame)
    ours = predict_json(load_predictor(folder / "data"), [Image.open(f).convert("RGB") for f in files],
                        [f.name for f in files])
    assert list(answers["labels"]) == [o["labels"] for o in ours]
    assert all(abs(a - b) < 1e-5 for row, o in zip(answers["probs"], ours) for a, b in zip(row, o["probs"]))
    back = kestrel("model", "register", "--path", str(folder), "--name", "m-back")
    assert (back["version"], back["task"], back["trial_id"]) == (1, "image_classification", None)
    assert back["settings"] == kestrel("model", "show", "m-cls:1")["settings"]
    refused = CliRunner().invoke(kestrel.app, ["model", "register", "--path", str(root), "--name", "x"],
                                 env=kestrel.env)
    assert refused.exit_code == 2 and "has no MLmodel file: it is not an MLflow model folder" in refused.stderr
