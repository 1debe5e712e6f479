"""The trial page, run headless with AppTest against a trial that really trained (test_resnet, one
epoch, on the classification shapes) and rows stored as the worker stores them."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import plotly.io
import pytest
from streamlit.testing.v1 import AppTest

from core.base.tasks import Task
from core.data.importer import ImportOptions, import_dataset
from core.data.records import Instance
from core.data.samples import write_sample
from core.zoo.base import PARAMS_FILE
from storage.artifacts import BlobStore
from storage.db import make_engine, session_scope
from storage.repos import jobs, models, trials
from storage.settings import Settings

APP = str(Path(__file__).resolve().parents[2] / "app.py")
TINY = {"model_name": "test_resnet", "number_of_epochs": 1, "training_batch_size": 16, "validation_batch_size": 32,
        "training_crop_size": 32, "validation_crop_size": 32, "validation_resize_size": 32}
CLASSES = ["circle", "square", "triangle"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, template_db: Path) -> dict[str, Any]:
    """A home with a job whose one trial trained for real and left its rows and artifacts."""
    import torch

    from core.runs.trial import run_trial

    home = tmp_path_factory.mktemp("trial_page") / "home"
    home.mkdir()
    shutil.copyfile(template_db, home / "kestrel.db")
    settings = Settings(home=home)
    engine = make_engine(settings.db_url)
    jsonl = write_sample(Task.CLASSIFICATION, home.parent / "shapes", count=24, size=32)
    import_dataset(jsonl, ImportOptions("shapes"), settings=settings, engine=engine)
    with session_scope(engine) as session:
        job_id = jobs.enqueue(session=session, kind="automl", name="shapes sweep",
                              spec={"dataset": "shapes", "version": 1}).id
        trial_id = trials.create(session=session, job_id=job_id, model_name="test_resnet", params=TINY,
                                 primary_metric="accuracy").id
    threads = torch.get_num_threads()
    try:
        result = run_trial(settings=settings, engine=engine, dataset="shapes", version=1, overrides=TINY,
                           trial_id=trial_id, threads=1)
    finally:
        torch.set_num_threads(threads)
        engine.dispose()
    assert result.status == "completed"
    return {"home": home, "job_id": job_id, "trial_id": trial_id, "accuracy": result.metrics["accuracy"],
            "artifacts": Path(result.artifacts["evaluation"]).parent}


@pytest.fixture
def home(trained: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A copy of the trained home per test, so registrations and new rows stay in their test."""
    copy = tmp_path / "home"
    shutil.copytree(trained["home"], copy)
    monkeypatch.setenv("KESTREL_HOME", str(copy))
    monkeypatch.delenv("KESTREL_DATABASE_URL", raising=False)
    return Settings()


def _open(trial_id: int | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page("pages/trial.py")
    if trial_id is not None:
        at.query_params["trial"] = str(trial_id)
    return at.run()


def _charts(at: AppTest) -> dict[str, Any]:
    """The page's plotly figures by title."""
    figures = [plotly.io.from_json(chart.proto.spec) for chart in at.get("plotly_chart")]
    return {f.layout.title.text or "": f for f in figures}


def _array(value: Any) -> np.ndarray:
    """A figure's array, which plotly ships as base64 bytes with a dtype and a shape."""
    if isinstance(value, dict):
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        return flat.reshape([int(n) for n in str(value["shape"]).split(",")]) if "shape" in value else flat
    return np.asarray(value)


def _trial_row(settings: Settings, *, status: str, artifact_dir: Path | None = None, job_id: int | None = None,
               error: str = "", losses: tuple[float, ...] = (0.9, 0.7), stop_reason: str = "") -> int:
    """A trial as the worker leaves it at ``status``, with one metric point per loss."""
    engine = make_engine(settings.db_url)
    with session_scope(engine) as session:
        trial_id = trials.create(session=session, job_id=job_id, model_name="yolov8n", params={"model_name": "yolov8n"},
                                 primary_metric="mean_average_precision").id
        trials.start(session=session, trial_id=trial_id, device="cpu (2 threads)", pid=1,
                     artifact_dir=str(artifact_dir or ""), software={}, epochs=5)
        for step, loss in enumerate(losses, start=1):
            trials.append_metrics(session=session, trial_id=trial_id, step=step,
                                  metrics={"train_loss": loss, "val_loss": loss + 0.1, "mean_average_precision": 0.2})
        trials.progress(session=session, trial_id=trial_id, epochs=len(losses) + 0.5)
        if status != "running":
            trials.finish(session=session, trial_id=trial_id, status=status, metrics={}, error=error,
                          primary_metric_value=None if error else 0.2, stop_reason=stop_reason)
    engine.dispose()
    return trial_id


def test_finished_trial_shows_status_curves_evaluation_samples_and_log(home, trained) -> None:  # type: ignore[no-untyped-def]
    at = _open(trained["trial_id"])
    assert not at.exception
    assert at.markdown[0].value == ":green-badge[:material/check_circle: completed]"
    assert at.markdown[1].value.startswith("**test_resnet** on cpu")
    assert {m.label: m.value for m in at.metric} == {"Epochs": "1 of 1", "accuracy": f"{trained['accuracy']:.4f}"}
    charts = _charts(at)
    loss = charts["Loss (train and validation)"]
    assert {"train_loss", "val_loss"} <= {trace.name for trace in loss.data}
    assert "accuracy (validation)" in charts
    assert "f1_score_macro" in {t.name for t in charts[next(k for k in charts if k.startswith("Other"))].data}
    heatmap, clickable = charts["Confusion matrix"].data
    assert _array(heatmap.z).shape == (3, 3) and _array(heatmap.z).sum() == 5  # each of the 5 validation images once
    cells = {(y, x) for x, y in zip(clickable.x, clickable.y)}  # one invisible marker per non-empty cell
    matrix = _array(heatmap.z)
    assert cells == {(CLASSES[t], CLASSES[p]) for t in range(3) for p in range(3) if matrix[t][p]}
    assert {t.name for t in charts["Precision–recall per class"].data} <= set(CLASSES)
    assert {t.name for t in charts["Recall per class"].data} == set(CLASSES)
    assert not [c for c in at.caption if "class-weighted loss" in c.value]  # a balanced set: no remedy
    table = next(d.value for d in at.dataframe if "class" in d.value.columns)
    assert list(table["class"]) == CLASSES and {"precision", "recall", "f1", "support"} <= set(table.columns)
    assert "epoch 1" in at.code[0].value  # the log's end
    captions = [c for image in at.get("image") for c in [i.caption for i in image.proto.imgs]]
    assert sum("ground truth" in c for c in captions) == sum(c.startswith("predicted:") for c in captions) > 0
    assert "learning_rate" in list(next(d.value for d in at.dataframe if "parameter" in d.value.columns)["parameter"])


def test_train_more_epochs_queues_an_extension_whose_page_marks_where_it_went_on(home, trained) -> None:  # type: ignore[no-untyped-def]
    at = _open(trained["trial_id"])
    at.number_input(key="trial_extend_epochs").set_value(2).run()
    assert at.button(key="trial_extend").label == "Train 2 more epochs"
    at.button(key="trial_extend").click().run()
    assert not at.exception and at.success[-1].value.startswith("Queued as job")
    engine = make_engine(home.db_url)
    with session_scope(engine) as session:
        job = jobs.list_jobs(session=session)[0]
        assert (job.spec["extends"], job.spec["extend_epochs"]) == (trained["trial_id"], 2)
        assert "number_of_epochs: 3" in job.spec["yaml"]  # the first trial's one epoch and two more
        extension = trials.create(session=session, job_id=job.id, model_name="test_resnet", params={},
                                  primary_metric="accuracy").id
        trials.set_metrics(session=session, trial_id=extension, key="manifest",
                           values={"extends": {"trial": trained["trial_id"], "epoch": 1}})
        for step in (1, 2, 3):
            trials.append_metrics(session=session, trial_id=extension, step=step,
                                  metrics={"train_loss": 1 / step, "accuracy": step / 4})
    engine.dispose()
    page = _open(extension)
    assert f"Goes on from trial {trained['trial_id']} after its epoch 1" in page.info[0].value
    loss = _charts(page)["Loss (train and validation)"]
    assert [shape.x0 for shape in loss.layout.shapes] == [1.5]  # the dotted line between the two trials' epochs


def test_a_trial_that_compensated_for_imbalance_says_how_beside_its_recall(home, trained, tmp_path) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "artifacts"
    shutil.copytree(trained["artifacts"], folder)
    params = json.loads((folder / PARAMS_FILE).read_text()) | {"weighted_loss": 2}
    (folder / PARAMS_FILE).write_text(json.dumps(params))
    at = _open(_trial_row(home, status="completed", artifact_dir=folder))
    assert not at.exception and "Recall per class" in _charts(at)
    assert [c.value for c in at.caption if "class-weighted loss" in c.value] == [
        "Trained with a class-weighted loss (weighted_loss 2): mistakes on rare classes counted more."]


def test_the_images_of_a_confusion_cell_are_shown_most_frequent_mistake_first(home, trained) -> None:  # type: ignore[no-untyped-def]
    evaluation = json.loads((trained["artifacts"] / "evaluation.json").read_text())
    matrix = evaluation["confusion_matrix"]["matrix"]
    cells = {(c["true"], c["predicted"]): c["images"] for c in evaluation["confusion_matrix"]["cells"]}
    assert sum(len(images) for images in cells.values()) == 5
    assert all(len(cells[cell]) == matrix[cell[0]][cell[1]] for cell in cells)
    worst = max(cells, key=lambda c: (c[0] != c[1], matrix[c[0]][c[1]]))
    at = _open(trained["trial_id"])
    true, predicted = at.selectbox(key=f"trial_{trained['trial_id']}_cell_true"), at.selectbox(
        key=f"trial_{trained['trial_id']}_cell_predicted")
    assert (true.value, predicted.value) == (CLASSES[worst[0]], CLASSES[worst[1]])

    def shown() -> set[str]:
        return {i.caption for image in at.get("image") for i in image.proto.imgs
                if not i.caption.startswith("predicted:") and "ground truth" not in i.caption}

    assert shown() == {i["image"] for i in cells[worst]}
    empty = next((t, p) for t in range(3) for p in range(3) if (t, p) not in cells)
    true.set_value(CLASSES[empty[0]])
    predicted.set_value(CLASSES[empty[1]])
    at = at.run()
    assert not shown()
    assert any(f"No validation image of {CLASSES[empty[0]]} was predicted as {CLASSES[empty[1]]}" in c.value
               for c in at.caption)


def test_register_adds_version_1_then_2_and_refuses_a_bad_name(home, trained) -> None:  # type: ignore[no-untyped-def]
    at = _open(trained["trial_id"])
    for expected in ("shapes-model:1", "shapes-model:2"):
        at.text_input(key="trial_register_name").input("shapes-model")
        at.button(key="trial_register").click().run()
        assert not at.exception and not at.error
        assert expected in at.success[0].value
    at.text_input(key="trial_register_name").input("../escape")
    at.button(key="trial_register").click().run()
    assert "letters, digits" in at.error[0].value
    engine = make_engine(home.db_url)
    with session_scope(engine) as session:
        version = models.get_version(session=session, name="shapes-model")
        assert version.version == 2 and version.trial_id == trained["trial_id"]
        assert Path(version.artifact_dir, "model.safetensors").is_file()
        assert (trained["artifacts"] / "resume.pt").is_file()  # the trial keeps it to be extended...
        assert not Path(version.artifact_dir, "resume.pt").exists()  # ...the model does not need it
    engine.dispose()


def test_running_trial_draws_its_curves_and_waits_for_the_evaluation(home) -> None:  # type: ignore[no-untyped-def]
    trial_id = _trial_row(home, status="running")
    at = _open(trial_id)
    assert not at.exception
    assert at.markdown[0].value == ":blue-badge[:material/play_arrow: running]"
    assert at.metric[0].value == "2 of 5" and at.metric[1].value == "0.2000"  # the latest value while it runs
    assert at.get("progress")[0].proto.text == "epoch 3 of 5, 50% through"
    assert "Loss (train and validation)" in _charts(at)
    assert any("appear when the trial ends" in c.value for c in at.caption)
    assert not at.get("form")  # nothing to register yet


def test_failed_trial_shows_its_error_and_opens_the_log(home, tmp_path) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "failed"
    folder.mkdir()
    (folder / "trial.log").write_text("line\n" * 10_000 + "Traceback ...\nRuntimeError: out of memory\n")
    trial_id = _trial_row(home, status="failed", artifact_dir=folder, error="RuntimeError: out of memory")
    at = _open(trial_id)
    assert not at.exception
    assert "out of memory" in at.error[0].value
    assert at.code[0].value.endswith("RuntimeError: out of memory") and len(at.code[0].value) <= 64_000
    assert any("no evaluation" in i.value for i in at.info)
    assert any("Only a finished trial" in c.value for c in at.caption)


def test_a_trial_stopped_before_its_first_epoch_says_by_what_and_what_to_change(home) -> None:  # type: ignore[no-untyped-def]
    error = ("job timeout after 1 min, before its first epoch finished: nothing to keep; raise "
             "limits.timeout_minutes or pick a smaller model/img size")
    trial_id = _trial_row(home, status="failed", error=error, stop_reason="job timeout after 1 min", losses=())
    at = _open(trial_id)
    assert not at.exception
    assert at.error[0].value == f"Stopped: {error}."  # not "failed … the log shows where"


def _finished(home: Settings, folder: Path, evaluation: dict[str, Any], classes: list[str]) -> int:
    """A finished trial whose artifact folder holds ``evaluation`` (and the class list)."""
    folder.mkdir()
    (folder / "evaluation.json").write_text(json.dumps(evaluation))
    (folder / "settings.json").write_text(json.dumps({"classes": classes}))
    return _trial_row(home, status="completed", artifact_dir=folder)


def test_detection_trial_shows_its_ap_table_pr_curves_and_predicted_boxes(home, trained, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from core.base.prediction import Detection, Prediction
    from core.data.view import Item
    from core.metrics.detection import detection_metrics
    from core.zoo.base import validation_samples

    sha256 = json.loads((trained["artifacts"] / "evaluation.json").read_text())["samples"][0]["blob"]
    truth = Item(BlobStore(home.blobs_dir).path(sha256), "two.png", 100, 100, (),
                 (Instance("a", 0.1, 0.1, 0.4, 0.4), Instance("b", 0.5, 0.5, 0.9, 0.9)))
    found = Prediction(detections=[Detection("a", 0.9, 0.1, 0.1, 0.4, 0.4), Detection("b", 0.4, 0.0, 0.0, 0.2, 0.2)])
    _, evaluation = detection_metrics([truth], [found], ["a", "b"], "voc")
    evaluation["samples"] = validation_samples([truth], [found])
    at = _open(_finished(home, tmp_path / "detection", evaluation, ["a", "b"]))
    assert not at.exception
    assert {t.name for t in _charts(at)["Precision–recall at IoU 0.5"].data} == {"a", "b"}
    table = next(d.value for d in at.dataframe if "class" in d.value.columns)
    assert list(table["average_precision"]) == [1.0, 0.0] and list(table["ground_truth"]) == [1, 1]
    bars = {trace.name: list(_array(trace.y)) for trace in _charts(at)["Average precision per class"].data}
    assert bars == {"a": [1.0], "b": [0.0]}
    captions = [i.caption for image in at.get("image") for i in image.proto.imgs]
    assert captions == ["two.png: ground truth", "predicted: 2 objects"]


def test_multilabel_trial_shows_a_confusion_row_per_class(home, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import torch

    from core.metrics.classification import classification_metrics

    probs = torch.tensor([[0.9, 0.2, 0.7], [0.1, 0.8, 0.6], [0.7, 0.6, 0.1]])
    _, evaluation = classification_metrics(probs, torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 0]]), CLASSES, True)
    at = _open(_finished(home, tmp_path / "multilabel", evaluation, CLASSES))
    assert not at.exception
    (heatmap,) = _charts(at)["Confusion per class"].data
    assert list(heatmap.y) == CLASSES and _array(heatmap.z).sum() == 9  # 3 images x 3 labels
    assert any("its dataset version is not known" in i.value for i in at.info)  # no job, no stored samples


def test_trial_without_stored_predictions_shows_its_jobs_ground_truth_and_says_so(home, trained, tmp_path) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "older"
    shutil.copytree(trained["artifacts"], folder)
    evaluation = json.loads((folder / "evaluation.json").read_text())
    del evaluation["samples"], evaluation["confusion_matrix"]["cells"]  # neither was kept before
    (folder / "evaluation.json").write_text(json.dumps(evaluation))
    at = _open(_trial_row(home, status="completed", artifact_dir=folder, job_id=trained["job_id"]))
    assert not at.exception
    assert any("ground truth only" in i.value for i in at.info)
    captions = [i.caption for image in at.get("image") for i in image.proto.imgs]
    assert captions and all(c.endswith("ground truth") for c in captions)


def test_missing_trial_points_to_the_jobs_page(home) -> None:  # type: ignore[no-untyped-def]
    at = _open(999)
    assert not at.exception
    assert "Trial 999 does not exist" in at.info[0].value


def test_jobs_leaderboard_links_to_its_trials(home, trained) -> None:  # type: ignore[no-untyped-def]
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page("pages/jobs.py")
    at.query_params["job"] = str(trained["job_id"])
    at.run()
    assert not at.exception
    (link,) = at.get("page_link")
    assert link.proto.label == f"Open trial {trained['trial_id']}"
    assert (link.proto.page, link.proto.query_string) == ("trial", f"trial={trained['trial_id']}")
