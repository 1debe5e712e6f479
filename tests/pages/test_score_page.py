"""The Test-score page against a real endpoint: a tiny classifier trained in this process, registered and
deployed behind a server process on a loopback port; the page (AppTest) sends it uploaded images over HTTP,
or has a worker (run here, in this process) score them with the registered model version."""

from __future__ import annotations

import base64
import io
import json
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import streamlit as st
from PIL import Image
from streamlit.testing.v1 import AppTest

import core.data.draw
from core.base.tasks import Task
from core.data.importer import ImportOptions, import_dataset
from core.data.samples import write_sample
from core.inference.models import register
from core.runs.trial import run_trial
from core.serving import manage, runner
from core.worker.queue import Worker
from storage.db import make_engine, session_scope
from storage.repos import jobs, models
from storage.settings import Settings

APP = str(Path(__file__).resolve().parents[2] / "app.py")
LIMIT = 200_000  # bytes per request, low so one noisy picture is too large
CLASSES = ["circle", "square", "triangle"]
MODEL = "A registered model"


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory, template_db: Path, one_thread) -> Iterator[dict[str, Any]]:  # type: ignore[no-untyped-def]
    """Endpoint ``ep`` serving deployment ``blue``: a 1-epoch test_resnet on 32 px shapes."""
    root = tmp_path_factory.mktemp("score-page")
    home = root / "home"
    home.mkdir()
    shutil.copyfile(template_db, home / "kestrel.db")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KESTREL_HOME", str(home))
        mp.setenv("KESTREL_MAX_REQUEST_BYTES", str(LIMIT))
        mp.delenv("KESTREL_DATABASE_URL", raising=False)
        settings = Settings()
        engine = make_engine(settings.db_url)
        jsonl = write_sample(Task.CLASSIFICATION, root / "shapes", count=16, size=64)
        import_dataset(jsonl, ImportOptions("shapes", Task.CLASSIFICATION), settings=settings, engine=engine)
        trial = run_trial(settings=settings, engine=engine, dataset="shapes", version=None,
                          overrides={"model_name": "test_resnet", "number_of_epochs": 1, "training_batch_size": 8,
                                     "training_crop_size": 32, "validation_crop_size": 32,
                                     "validation_resize_size": 32})
        register(settings=settings, engine=engine, name="shapes", trial_id=trial.trial_id)
        with session_scope(engine) as session:
            manage.create_endpoint(session=session, name="ep", settings=settings)
            manage.add_deployment(session=session, endpoint="ep", name="blue", model="shapes:1")
        try:
            runner.start(settings, engine, "ep")
            runner.wait_ready(settings, engine, "ep")
            yield {"images": sorted((root / "shapes" / "images").iterdir())}
        finally:
            runner.stop(engine, "ep")
            with session_scope(engine) as session:
                manage.delete_rows(session=session, name="ep")
            engine.dispose()


@pytest.fixture
def spies(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    """Records each request the page sends and each picture it draws (with what it drew on it)."""
    seen: dict[str, list[Any]] = {"posts": [], "drawn": []}
    post, draw = httpx.post, core.data.draw.draw_labels

    def counting_post(url: str, **kwargs: Any) -> httpx.Response:
        seen["posts"].append(kwargs.get("json"))
        return post(url, **kwargs)

    def recording_draw(image: Image.Image, classes: Any, overlays: Any) -> Image.Image:
        seen["drawn"].append((tuple(classes), tuple(overlays)))
        return draw(image, classes, overlays)

    monkeypatch.setattr(httpx, "post", counting_post)
    monkeypatch.setattr(core.data.draw, "draw_labels", recording_draw)
    st.cache_data.clear()  # pictures drawn by an earlier test would not be drawn again
    return seen


def _open() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page("pages/score.py")
    return at.run()


def _upload(at: AppTest, files: list[tuple[str, bytes]]) -> AppTest:
    at.file_uploader(key="score_images").set_value([(name, data, "image/png") for name, data in files]).run()
    return at.button(key="score_run").click().run()


def test_without_a_deployed_endpoint_the_page_points_to_the_models_page(settings) -> None:  # type: ignore[no-untyped-def]
    at = _open()
    assert not at.exception
    assert "deploy a registered model version on the Models page" in at.info[0].value
    assert not at.file_uploader


def test_with_a_registered_model_and_no_endpoint_the_model_is_offered(settings, engine) -> None:  # type: ignore[no-untyped-def]
    with session_scope(engine) as session:  # a version's row is all the page reads; the worker loads weights
        for name in ("shapes", "parts"):
            models.add_version(session=session, name=name, task=Task.CLASSIFICATION.value, trial_id=None,
                               metrics={}, settings={"classes": CLASSES})
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page("pages/score.py")
    at.query_params["model"] = "parts:1"
    at.run()
    assert not at.exception and not at.info
    assert at.radio(key="score_source").options == [MODEL] and at.selectbox(key="score_model").value == "parts:1"
    assert at.toggle(key="score_explain")  # a classifier can be explained
    assert at.button(key="score_run").disabled  # nothing uploaded yet


def test_a_detector_is_explained_with_the_mask_budget_the_person_sets(settings, engine) -> None:  # type: ignore[no-untyped-def]
    with session_scope(engine) as session:
        models.add_version(session=session, name="boxes", task=Task.DETECTION.value, trial_id=None,
                           metrics={}, settings={"classes": CLASSES})
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page("pages/score.py")
    at.query_params["model"] = "boxes:1"
    at.run()
    at.toggle(key="score_explain").set_value(True).run()
    at.number_input(key="score_masks").set_value(64).run()
    assert not at.exception and "About 64 predictions per image" in at.caption[-1].value
    picture = io.BytesIO()
    Image.new("RGB", (32, 32), "white").save(picture, format="PNG")
    at = _upload(at, [("one.png", picture.getvalue())])
    with session_scope(engine) as session:
        (job,) = jobs.list_jobs(session=session)
        assert job.spec["xai"] == {"xai_algorithm": "d_rise", "number_of_masks": 64, "visualizations": True}


def _png_b64(colour: str) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_clicking_a_box_of_an_explained_detection_shows_its_heat_map(endpoint, spies) -> None:  # type: ignore[no-untyped-def]
    boxes = [{"box": {"topX": 0.1, "topY": 0.1, "bottomX": 0.4, "bottomY": 0.5}, "label": "circle", "score": 0.9,
              "visualizations": _png_b64("red")},
             {"box": {"topX": 0.5, "topY": 0.5, "bottomX": 0.9, "bottomY": 0.9}, "label": "square", "score": 0.8,
              "visualizations": _png_b64("blue")}]
    at = _open()
    image = endpoint["images"][0].read_bytes()
    at.session_state["score_result"] = {"uri": "", "names": ["one.png"], "images": [image],
                                        "answers": [{"filename": "one.png", "boxes": boxes}],
                                        "served_by": ["blue"], "classes": [CLASSES]}
    at.run()
    assert not at.exception
    (figure,) = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    markers = figure["data"][1]
    assert markers["text"] == ["circle 0.90", "square 0.80"] and len(markers["x"]) == 2
    assert at.image[-1].captions[0].startswith("What made the model find circle (0.90)")
    at.selectbox(key="score_box_maps_0_box").select(1).run()  # what a click on the second marker sets
    assert at.image[-1].captions[0].startswith("What made the model find square (0.80)")


def test_uploaded_images_are_scored_in_one_request_drawn_and_charted(endpoint, spies) -> None:  # type: ignore[no-untyped-def]
    at = _open()
    assert not at.exception and at.selectbox(key="score_endpoint").value == "ep"
    files = [(p.name, p.read_bytes()) for p in endpoint["images"][:2]]
    at = _upload(at, files)
    assert not at.exception and not at.error
    assert len(spies["posts"]) == 1 and len(spies["posts"][0]["input_data"]["data"]) == 2
    assert [i.captions for i in at.image] == [[f"{files[0][0]} · blue"], [f"{files[1][0]} · blue"]]
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert len(charts) == 2 and all(c["layout"]["title"]["text"] == "Class probabilities" for c in charts)
    assert all(set(t["y"][0] for t in c["data"]) == set(CLASSES) for c in charts)
    answers = at.json[0].value
    assert isinstance(answers, str) and json.loads(answers)[0]["labels"] == CLASSES
    # Each picture names its classes above the threshold, in the dataset's class colours.
    assert [len(overlays) for classes, overlays in spies["drawn"]] and all(
        classes == tuple(CLASSES) and all(o.is_tag for o in overlays) for classes, overlays in spies["drawn"])
    # The threshold redraws (the top class always named, all three at 0) without asking the endpoint again.
    for threshold, tags in ((0.95, [1, 1]), (0.0, [3, 3])):
        st.cache_data.clear()
        drawn = len(spies["drawn"])
        at.slider(key="score_threshold").set_value(threshold).run()
        assert not at.exception and len(spies["posts"]) == 1
        assert [len(overlays) for _, overlays in spies["drawn"][drawn:]] == tags


def test_explain_sends_the_chosen_algorithm_and_shows_the_picture(endpoint, spies) -> None:  # type: ignore[no-untyped-def]
    at = _open()
    at.toggle(key="score_explain").set_value(True).run()
    at.selectbox(key="score_xai_algorithm").select("integrated_gradients").run()
    at.number_input(key="score_n_steps").set_value(4).run()
    at = _upload(at, [("one.png", endpoint["images"][0].read_bytes())])
    assert not at.exception and not at.error
    entry = json.loads(spies["posts"][0]["input_data"]["data"][0])
    assert entry["model_explainability"] is True
    assert entry["xai_parameters"] == {"xai_algorithm": "integrated_gradients", "n_steps": 4, "visualizations": True}
    assert len(at.image) == 2 and at.image[1].captions[0].startswith("Explanation")


def _noise_png(side: int) -> bytes:
    rng = random.Random(0)
    image = Image.new("RGB", (side, side))
    image.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(side * side)])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_refusals_say_what_was_wrong_and_what_to_do(endpoint, spies) -> None:  # type: ignore[no-untyped-def]
    at = _upload(_open(), [("notes.png", b"these are not pixels")])
    assert "could not read the request" in at.error[0].value and "HTTP 400" in at.error[0].value
    at = _upload(_open(), [("huge.png", _noise_png(300))])
    assert "larger than the endpoint accepts" in at.error[0].value and "HTTP 413" in at.error[0].value
    engine = make_engine(Settings().db_url)
    with session_scope(engine) as session:
        manage.set_traffic(session=session, name="ep", split={"blue": 0})
    try:
        at = _upload(_open(), [("one.png", endpoint["images"][0].read_bytes())])
        assert "cannot score yet" in at.error[0].value and "no deployment takes traffic" in at.error[0].value
        # Naming the deployment bypasses the split.
        at.selectbox(key="score_deployment").select("blue").run()
        at.button(key="score_run").click().run()
        assert not at.error and len(at.image) == 1
    finally:
        with session_scope(engine) as session:
            manage.set_traffic(session=session, name="ep", split={"blue": 100})
        engine.dispose()



def _worker_runs_the_queue() -> None:
    settings = Settings()
    engine = make_engine(settings.db_url)
    try:
        Worker(settings, engine).run(once=True)
    finally:
        engine.dispose()


def _score_jobs() -> list[Any]:
    engine = make_engine(Settings().db_url)
    try:
        with session_scope(engine) as session:
            return jobs.list_jobs(session=session, kind="score")
    finally:
        engine.dispose()


def test_a_registered_model_is_scored_by_the_worker_and_drawn_as_an_endpoint_answer(endpoint, spies) -> None:  # type: ignore[no-untyped-def]
    at = _open()
    at.radio(key="score_source").set_value(MODEL).run()
    assert at.selectbox(key="score_model").value == "shapes:1"
    at.toggle(key="score_explain").set_value(True).run()
    at.selectbox(key="score_xai_algorithm").select("integrated_gradients").run()
    at.number_input(key="score_n_steps").set_value(4).run()
    files = [(p.name, p.read_bytes()) for p in endpoint["images"][:2]]
    at = _upload(at, files)
    assert not at.exception and not at.error and not spies["posts"]  # no endpoint asked
    (job,) = _score_jobs()
    assert at.query_params["score_job"] == str(job.id) and job.status == "queued"
    assert job.spec["model"] == "shapes:1" and [i["name"] for i in job.spec["images"]] == [n for n, _ in files]
    assert [Path(i["path"]).read_bytes() for i in job.spec["images"]] == [d for _, d in files]
    assert all(Path(i["path"]).parent == Path(job.spec["staging"]) for i in job.spec["images"])
    assert Path(job.spec["staging"]).parent == Settings().staging_dir
    assert job.spec["xai"] == {"xai_algorithm": "integrated_gradients", "n_steps": 4, "visualizations": True}
    assert "waiting for the worker" in at.get("progress")[0].proto.text
    _worker_runs_the_queue()
    at.run()
    assert not at.exception and not at.error and not at.get("progress")
    captions = [i.captions[0] for i in at.image]  # each picture, then its explanation
    assert captions[::2] == [f"{n} · shapes:1" for n, _ in files] and len(captions) == 4
    assert all(c.startswith("Explanation") for c in captions[1::2])
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert len(charts) == 2 and all(set(t["y"][0] for t in c["data"]) == set(CLASSES) for c in charts)
    assert [a["filename"] for a in json.loads(at.json[0].value)] == [n for n, _ in files]
    assert not Path(job.spec["staging"]).exists()  # the worker removed the staged copies
    # The threshold redraws from the kept answers; nothing is scored again.
    st.cache_data.clear()
    drawn = len(spies["drawn"])
    at.slider(key="score_threshold").set_value(0.0).run()
    assert [len(overlays) for _, overlays in spies["drawn"][drawn:]] == [3, 3] and len(_score_jobs()) == 1
    # A reload of the URL comes back to the answers.
    again = AppTest.from_file(APP, default_timeout=60)
    again.switch_page("pages/score.py")
    again.query_params["score_job"] = str(job.id)
    again.run()
    assert not again.exception and again.radio(key="score_source").value == MODEL
    assert [i.captions[0] for i in again.image][::2] == [f"{n} · shapes:1" for n, _ in files]


def test_a_failed_model_scoring_says_why_without_a_traceback(endpoint, spies) -> None:  # type: ignore[no-untyped-def]
    at = _open()
    at.radio(key="score_source").set_value(MODEL).run()
    at = _upload(at, [("notes.png", b"these are not pixels")])
    _worker_runs_the_queue()
    at.run()
    assert not at.exception and not at.image
    assert "Scoring with **shapes:1** failed" in at.error[0].value and "notes.png: not an image" in at.error[0].value
    # One unreadable image among good ones is named, and the others are answered.
    at = _upload(at, [("notes.png", b"these are not pixels"), ("one.png", endpoint["images"][0].read_bytes())])
    _worker_runs_the_queue()
    at.run()
    assert not at.error and len(at.image) == 1 and at.image[0].captions[0] == "one.png · shapes:1"
    assert "**notes.png** was not scored: not an image" in at.warning[0].value
