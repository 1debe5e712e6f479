"""The Models and Endpoints pages, run headless with AppTest against model versions and endpoints stored as
`kestrel model register` and `kestrel endpoint create` store them (the deploy test starts a real server
process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.base.processes import process_alive
from core.serving import manage, runner
from storage.db import session_scope
from storage.repos import jobs, models, trials
from storage.settings import Settings

pytestmark = pytest.mark.both_databases  # the studio's pages work on PostgreSQL too

APP = str(Path(__file__).resolve().parents[2] / "app.py")
DETECTION = {"task": "image_object_detection", "classes": ["circle", "square"], "family": "torchvision",
             "architecture": "fasterrcnn", "size": "", "model_name": "fasterrcnn_resnet18_fpn",
             "min_size": 600, "max_size": 1333, "box_score_thresh": 0.3, "nms_iou_thresh": 0.5,
             "box_detections_per_img": 100}


def _version(settings: Settings, engine, name: str = "shapes", mean_ap: float = 0.42) -> str:  # type: ignore[no-untyped-def]
    """A registered detection model version (settings and files only: the page never loads weights)."""
    with session_scope(engine) as session:
        trial = trials.create(session=session, model_name="fasterrcnn_resnet18_fpn", params={},
                              primary_metric="mean_average_precision")
        trials.finish(session=session, trial_id=trial.id, status="completed", metrics={},
                      primary_metric_value=mean_ap)
        version = models.add_version(session=session, name=name, task=DETECTION["task"], trial_id=trial.id,
                                     metrics={"mean_average_precision": mean_ap, "map_50": 0.7, "per_class": {}},
                                     settings=dict(DETECTION))
        folder = settings.models_dir / name / str(version.version)
        folder.mkdir(parents=True)
        (folder / "settings.json").write_text(json.dumps(DETECTION))
        version.artifact_dir = str(folder)
        session.add(version)
        return f"{name}:{version.version}"


def _endpoint(engine, name: str = "ep", deployments: tuple[str, ...] = (), port: int | None = None) -> None:  # type: ignore[no-untyped-def]
    """An endpoint row with keys and deployments of model ``shapes`` (no server process)."""
    with session_scope(engine) as session:
        row = manage.create_endpoint(session=session, name=name, settings=Settings())
        row.port = port
        for dep in deployments:
            manage.add_deployment(session=session, endpoint=name, name=dep, model="shapes")


def _open(page: str = "models", **query: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page(f"pages/{page}.py")
    for key, value in query.items():
        at.query_params[key] = value
    return at.run()


def _texts(at: AppTest) -> str:
    return "\n".join([e.value for e in (*at.error, *at.success, *at.info, *at.warning)])


def test_no_models_says_how_to_register_one_and_no_endpoints_how_to_deploy(settings) -> None:  # type: ignore[no-untyped-def]
    at = _open()
    assert not at.exception
    assert "kestrel model register --trial N --name NAME" in _texts(at)
    at = _open("endpoints")
    assert not at.exception and "No endpoints yet" in _texts(at) and "press Deploy" in _texts(at)


def test_versions_are_listed_with_metrics_and_source_trial(settings, engine) -> None:  # type: ignore[no-untyped-def]
    _version(settings, engine, mean_ap=0.42)
    _version(settings, engine, mean_ap=0.55)
    at = _open(model="shapes:2")
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["Version"]) == [1, 2] and list(table["Value"]) == [0.42, 0.55]
    assert set(table["Primary metric"]) == {"mean_average_precision"} and list(table["map_50"]) == [0.7, 0.7]
    assert table["Source trial"].notna().all()
    assert at.selectbox(key="models_version").value == "shapes:2"
    assert at.metric[0].label == "mean_average_precision ★" and at.metric[0].value == "0.5500"
    assert "Object detection" in at.caption[0].value and "from trial 2" in at.caption[0].value


def test_a_changed_setting_is_saved_and_a_bad_value_refused(settings, engine) -> None:  # type: ignore[no-untyped-def]
    ref = _version(settings, engine)
    at = _open()
    field = next(n for n in at.number_input if n.key.endswith("_box_score_thresh"))
    field.set_value(0.55)
    at.button(key="models_settings_save").click().run()
    assert not at.exception and not at.error
    with session_scope(engine) as session:
        version = models.get_version(session=session, name="shapes")
        assert version is not None and version.settings["box_score_thresh"] == 0.55
        assert json.loads((Path(version.artifact_dir) / "settings.json").read_text())["box_score_thresh"] == 0.55
    field = next(n for n in at.number_input if n.key.endswith("_box_score_thresh"))
    field.set_value(7.0)
    at.button(key="models_settings_save").click().run()
    assert "box_score_thresh" in at.error[0].value and "out of range (0..1)" in at.error[0].value
    with session_scope(engine) as session:
        assert models.get_version(session=session, name=ref.split(":")[0]).settings["box_score_thresh"] == 0.55


def test_keys_are_masked_until_shown_and_a_regenerated_key_replaces_the_old(settings, engine) -> None:  # type: ignore[no-untyped-def]
    _version(settings, engine)
    _endpoint(engine, deployments=("blue",), port=59999)
    with session_scope(engine) as session:
        old = manage.keys(session, "ep", settings)
    at = _open("endpoints", endpoint="ep")
    assert not at.exception
    shown = "\n".join(t.value for t in at.text)
    assert old["primary_key"] not in shown and old["primary_key"][:4] + "•" in shown
    at.toggle(key="endpoints_show_keys").set_value(True).run()
    codes = [c.value for c in at.code]
    assert old["primary_key"] in codes and old["secondary_key"] in codes
    # The snippets call the real URL with the real key.
    assert any("http://127.0.0.1:59999/score" in c and f"Bearer {old['primary_key']}" in c and "curl" in c
               for c in codes)
    assert any("requests.post(" in c and old["primary_key"] in c for c in codes)
    at.button(key="endpoints_regenerate_primary").click().run()
    with session_scope(engine) as session:
        new = manage.keys(session, "ep", settings)
    assert new["primary_key"] != old["primary_key"] and new["secondary_key"] == old["secondary_key"]
    codes = [c.value for c in at.code]
    assert new["primary_key"] in codes and old["primary_key"] not in codes


def test_traffic_is_saved_and_a_split_over_100_refused(settings, engine) -> None:  # type: ignore[no-untyped-def]
    _version(settings, engine)
    _endpoint(engine, deployments=("blue", "green"))
    at = _open("endpoints", endpoint="ep")
    at.number_input(key="endpoints_traffic_ep_blue").set_value(70)
    at.number_input(key="endpoints_traffic_ep_green").set_value(50)
    at.button(key="endpoints_traffic_save").click().run()
    assert "add up to 120; at most 100" in at.error[0].value
    at.number_input(key="endpoints_traffic_ep_green").set_value(30)
    at.button(key="endpoints_traffic_save").click().run()
    assert not at.error
    with session_scope(engine) as session:
        assert models.get_endpoint(session=session, name="ep").traffic == {"blue": 70, "green": 30}


@pytest.fixture
def shop(engine):  # type: ignore[no-untyped-def]
    """The name of the endpoint the deploy test creates; its server is stopped even when the test fails."""
    yield "shop"
    runner.stop(engine, "shop")


def test_deploy_creates_an_endpoint_with_keys_and_delete_stops_it(settings, engine, shop) -> None:  # type: ignore[no-untyped-def]
    _version(settings, engine)
    at = _open()
    at.text_input(key="models_deploy_new").set_value("shop")
    at.text_input(key="models_deploy_name").set_value("blue")
    at.button(key="models_deploy").click().run()
    assert not at.exception and not at.error
    with session_scope(engine) as session:
        row = models.get_endpoint(session=session, name="shop")
        assert row is not None and row.traffic == {"blue": 100} and row.pid and row.port
        assert len(row.primary_key) >= 40 and row.primary_key != row.secondary_key
        assert [d.name for d in models.deployments(session=session, endpoint_id=row.id)] == ["blue"]
        pid = row.pid
    # A name that is taken is refused where it was typed, and nothing is written.
    at.run().selectbox(key="models_deploy_endpoint").select("shop").run()
    at.button(key="models_deploy").click().run()
    assert "Deployment name: endpoint shop has a deployment blue already" in at.error[0].value
    # Another version beside it as a canary taking a quarter of the traffic.
    at.text_input(key="models_deploy_name").set_value("green")
    at.slider(key="models_deploy_share").set_value(25)
    at.button(key="models_deploy").click().run()
    assert not at.exception and not at.error
    with session_scope(engine) as session:
        assert models.get_endpoint(session=session, name="shop").traffic == {"blue": 75, "green": 25}
    at = _open("endpoints", endpoint="shop")
    endpoints = at.dataframe[0].value
    assert list(endpoints["Endpoint"]) == ["shop"] and "blue (shapes:1)" in endpoints["Deployments"].iloc[0]
    assert endpoints["Traffic"].iloc[0] == "blue 75%, green 25%"
    at.checkbox(key="endpoints_delete_sure").check().run()
    at.button(key="endpoints_delete").click().run()
    assert not at.exception
    with session_scope(engine) as session:
        assert models.get_endpoint(session=session, name="shop") is None
    assert not process_alive(pid)


def _download_labels(at: AppTest) -> list[str]:
    return [b.proto.label for b in at.get("download_button")]


def test_export_queues_a_job_and_offers_the_files_once_the_worker_wrote_them(settings, engine) -> None:  # type: ignore[no-untyped-def]
    ref = _version(settings, engine)
    at = _open()
    at.selectbox(key="models_export_format").select("torchscript").run()
    at.button(key="models_export").click().run()
    assert not at.exception and not at.error
    with session_scope(engine) as session:
        (job,) = jobs.list_jobs(session=session, kind="export")
        assert job.spec == {"model": ref, "format": "torchscript"} and job.status == "queued"
        job_id = job.id
    assert "TorchScript export: waiting for the worker" in at.get("progress")[0].proto.text
    assert not _download_labels(at)
    # What the worker leaves: the model and its sidecar in the job's folder, and a finished job.
    folder = settings.job_dir(job_id)
    folder.mkdir(parents=True)
    (folder / "model.torchscript").write_bytes(b"\0" * 2048)
    (folder / "model.torchscript.json").write_text(json.dumps({"format": "torchscript"}))
    with session_scope(engine) as session:
        jobs.progress(session=session, job_id=job_id, fraction=1.0, message="exported shapes:1 to model.torchscript")
        jobs.finish(session=session, job_id=job_id, status="completed")
    at.run()
    assert not at.exception and not at.get("progress")
    assert [label.split(" (")[0] for label in _download_labels(at)] == ["Download model.torchscript",
                                                                         "Download model.torchscript.json"]
    assert any("exported shapes:1 to model.torchscript" in c.value for c in at.caption)


def test_a_failed_export_says_why_where_it_was_asked_for(settings, engine) -> None:  # type: ignore[no-untyped-def]
    ref = _version(settings, engine)
    with session_scope(engine) as session:
        job = jobs.enqueue(session=session, kind="export", name="export", spec={"model": ref, "format": "onnx"})
        jobs.finish(session=session, job_id=job.id, status="failed",
                    error="models of family 'other' cannot be exported to onnx or torchscript")
        # Another version's export is not shown on this one.
        jobs.enqueue(session=session, kind="export", name="export", spec={"model": "other:1", "format": "onnx"})
    at = _open(model=ref)
    assert not at.exception and not at.get("progress") and not _download_labels(at)
    assert "The ONNX export failed: models of family 'other' cannot be exported" in at.error[0].value


def test_the_endpoint_compares_its_deployments_confidence_and_keeps_review_settings(settings, engine) -> None:  # type: ignore[no-untyped-def]
    from storage.repos import reviews

    _version(settings, engine)
    _endpoint(engine, deployments=("blue", "green"))
    with session_scope(engine) as session:
        row = models.get_endpoint(session=session, name="ep")
        reviews.record_scores(session=session, endpoint_id=row.id, deployment="blue", confidences=[0.9, 0.8, 0.3])
        reviews.record_scores(session=session, endpoint_id=row.id, deployment="green", confidences=[0.95, 0.7])
    at = _open("endpoints", endpoint="ep")
    assert not at.exception
    (table,) = [t.value for t in at.dataframe if "Deployment" in t.value.columns]
    assert list(table["Deployment"]) == ["blue", "green"] and list(table["Images"]) == [3, 2]
    assert list(table["Mean"]) == [0.6667, 0.825] and list(table["Below 0.5"]) == ["33%", "0%"]
    assert at.get("plotly_chart")  # the two deployments' confidences side by side
    at.toggle(key="endpoints_review_on").set_value(True)
    at.slider(key="endpoints_review_threshold").set_value(0.4)
    at.number_input(key="endpoints_review_quota").set_value(7)
    at.button(key="endpoints_review_save").click().run()
    assert not at.exception and any("applies from the next request" in s.value for s in at.success)
    with session_scope(engine) as session:
        assert models.get_endpoint(session=session, name="ep").review == {"threshold": 0.4, "quota": 7}
    # This model's trial kept no manifest (it was stored by hand): Retrain says why instead of guessing.
    at.button(key="endpoints_retrain").click().run()
    assert "no trial with a recorded dataset" in at.error[0].value
