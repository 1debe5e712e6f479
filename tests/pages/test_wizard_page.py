"""The job wizard, clicked through headless with AppTest: it builds the job file step by step, refuses a
bad choice on the step that made it, and submits what `kestrel job submit` takes."""

from __future__ import annotations

from pathlib import Path

import yaml
from streamlit.testing.v1 import AppTest

from core.data.importer import ImportOptions, import_dataset
from core.data.samples import write_sample
from core.tasks import Task
from storage.db import session_scope
from storage.repos import jobs

APP = str(Path(__file__).resolve().parents[2] / "app.py")


def _wizard() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page("pages/wizard.py")
    return at.run()


def _next(at: AppTest) -> AppTest:
    next(b for b in at.button if b.label == "Next").click()
    return at.run()


def test_an_automode_job_is_built_step_by_step_and_submitted(settings, engine, tmp_path):
    jsonl = write_sample(Task.CLASSIFICATION, tmp_path / "shapes", count=20, size=48)
    import_dataset(jsonl, ImportOptions("shapes"), settings=settings, engine=engine)
    at = _wizard()
    assert not at.exception
    at = _next(at)  # data: shapes:1
    assert at.session_state["wizard_job"]["training_data"]["path"] == "azureml:shapes:1"
    at.selectbox[0].set_value("image_classification")
    at.selectbox[1].set_value("AUC_weighted")
    at = _next(at)
    at.radio[0].set_value("AutoMode")
    at.number_input[0].set_value(1)  # epochs
    at = _next(at.run())
    at.number_input[0].set_value(3)  # max trials
    at = _next(at)
    doc = yaml.safe_load(at.code[0].value)
    assert doc["primary_metric"] == "AUC_weighted" and doc["limits"]["max_trials"] == 3
    assert "search_space" not in doc and doc["training_parameters"] == {"number_of_epochs": 1}
    next(b for b in at.button if b.label == "Submit job").click()
    at.run()
    with session_scope(engine) as session:
        queued = jobs.list_jobs(session=session)
    assert len(queued) == 1 and queued[0].spec["dataset"] == "shapes" and queued[0].status == "queued"


def test_a_bad_sweep_is_refused_on_the_mode_step(settings, engine, tmp_path):
    jsonl = write_sample(Task.CLASSIFICATION, tmp_path / "shapes", count=20, size=48)
    import_dataset(jsonl, ImportOptions("shapes"), settings=settings, engine=engine)
    at = _next(_next(_wizard()))
    at.radio[0].set_value("Sweep")
    at = at.run()
    next(s for s in at.selectbox if s.label == "Sampling").set_value("grid")
    at = _next(at.run())
    # Grid sampling needs choice distributions; the default row is a uniform learning rate.
    assert any("grid sampling needs choice distributions" in e.value for e in at.error)
    assert at.session_state["wizard_step"] == 2


def test_an_uploaded_job_file_prefills_the_review(settings, engine, tmp_path):
    jsonl = write_sample(Task.CLASSIFICATION, tmp_path / "shapes", count=20, size=48)
    import_dataset(jsonl, ImportOptions("shapes"), settings=settings, engine=engine)
    doc = {"type": "automl", "task": "image_classification", "training_data": {"path": "azureml:shapes:1"},
           "limits": {"max_trials": 1}, "training_parameters": {"model_name": "resnet18"}}
    at = _wizard()
    at.session_state["wizard_job"] = doc  # what "Load it" stores after parsing the upload
    at.session_state["wizard_step"] = 4
    at = at.run()
    assert yaml.safe_load(at.code[0].value)["training_parameters"]["model_name"] == "resnet18"
