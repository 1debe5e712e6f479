"""The job wizard, clicked through headless with AppTest: it builds the job file step by step, refuses a
bad choice on the step that made it, and submits what `kestrel job submit` takes."""

from __future__ import annotations

from pathlib import Path

import yaml
from factories import finished_trial
from streamlit.testing.v1 import AppTest

from core.base.tasks import Task
from core.data.importer import ImportOptions, import_dataset
from core.data.samples import write_sample
from storage.db import session_scope
from storage.repos import jobs

APP = str(Path(__file__).resolve().parents[2] / "app.py")


def _wizard() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page("pages/wizard.py")
    return at.run()


def _shapes(settings, engine, tmp_path, versions: int = 1) -> None:
    jsonl = write_sample(Task.CLASSIFICATION, tmp_path / "shapes", count=20, size=48)
    for _ in range(versions):
        import_dataset(jsonl, ImportOptions("shapes"), settings=settings, engine=engine)


def _button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


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
    summary = at.markdown[-1].value
    assert "shapes:1" in summary and "AUC_weighted" in summary and "AutoMode" in summary
    next(b for b in at.button if b.label == "Submit job").click()
    at.run()
    with session_scope(engine) as session:
        queued = jobs.list_jobs(session=session)
    assert len(queued) == 1 and queued[0].spec["dataset"] == "shapes" and queued[0].status == "queued"
    assert at.query_params["job"] == str(queued[0].id)  # the job's own page, not the job list
    assert at.title[0].value != "New job"


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


def test_the_steps_are_named_across_the_top_with_the_current_one_marked(settings, engine, tmp_path):
    _shapes(settings, engine, tmp_path)
    at = _next(_wizard())
    steps = next(m.value for m in at.markdown if "→" in m.value)
    assert "Data" in steps and "Limits & early termination" in steps and "Review" in steps
    assert "**2. Task & metric**" in steps


def test_the_chosen_version_is_kept_after_going_back(settings, engine, tmp_path):
    _shapes(settings, engine, tmp_path, versions=2)
    at = _wizard()
    assert at.number_input(key="wizard_version").value == 2  # a new job starts at the latest
    at.number_input(key="wizard_version").set_value(1)
    at = _next(at.run())
    _button(at, "Back").click()
    at = at.run()
    assert at.number_input(key="wizard_version").value == 1
    assert at.session_state["wizard_job"]["training_data"]["path"] == "azureml:shapes:1"


def test_single_model_mode_shows_the_models_for_the_task(settings, engine, tmp_path):
    _shapes(settings, engine, tmp_path)
    at = _next(_next(_wizard()))
    at.radio[0].set_value("One model")
    at = at.run()
    table = at.dataframe[0].value.set_index("model")
    assert {"resnet18", "resnet50", "vitb16r224"} <= set(table.index)
    assert table.loc["resnet18", "size (parameters)"] == "11.7 M"
    assert table.loc["resnet18", "speed on a CPU"] == "fast" and table.loc["resnet18", "good for"]


def test_automode_says_what_it_tries_and_shares_the_trial_count_with_limits(settings, engine, tmp_path):
    _shapes(settings, engine, tmp_path)
    at = _next(_next(_wizard()))
    at.radio[0].set_value("AutoMode")
    at = at.run()
    at.number_input(key="wizard_auto_trials").set_value(7)
    at = at.run()
    sentence = next(i.value for i in at.info if "AutoMode tries" in i.value)
    # 16 training images: the lightest CPU candidate goes first.
    assert "7 trials" in sentence and "resnet18 and mobilenetv3_large_100" in sentence
    assert "no estimate yet for resnet18, mobilenetv3_large_100" in sentence
    at = _next(at)
    assert at.number_input(key="wizard_trials").value == 7


def test_unreadable_bounds_are_an_error_on_the_mode_step(settings, engine, tmp_path):
    _shapes(settings, engine, tmp_path)
    at = _next(_next(_wizard()))
    # The editor's row as a user left it: an unclosed bracket in the bounds (AppTest cannot type in a table).
    at.session_state["wizard_job"]["search_space"] = [{"model_name": {"type": "choice", "values": ["resnet18"]},
                                                       "learning_rate": "0.1, ["}]
    at = at.run()
    assert not at.exception
    assert any("learning_rate" in e.value and "'['" in e.value for e in at.error)
    at = _next(at)
    assert at.session_state["wizard_step"] == 2


def test_an_uploaded_job_without_max_trials_is_an_error_on_the_limits_step(settings, engine, tmp_path):
    _shapes(settings, engine, tmp_path)
    at = _wizard()
    at.session_state["wizard_job"] = {"type": "automl", "task": "image_classification",
                                      "training_data": {"path": "azureml:shapes:1"},
                                      "limits": {"max_concurrent_trials": 1}}
    at.session_state["wizard_step"] = 3
    at = at.run()
    assert not at.exception
    assert any("limits.max_trials" in e.value for e in at.error)


def test_time_per_trial_is_estimated_from_the_trials_that_ran_here(settings, engine, tmp_path):
    _shapes(settings, engine, tmp_path)  # 20 images, 16 for training
    finished_trial(engine, "resnet18", train_images=32, epochs=2, seconds=120)  # 1.875 s per image-epoch
    at = _next(_next(_wizard()))
    at.radio[0].set_value("One model")
    at = at.run()
    at.number_input[0].set_value(10)  # epochs
    at = at.run()
    caption = next(c.value for c in at.caption if "Time per trial" in c.value)
    assert "resnet18 about 5 min (from 1 earlier trial here)" in caption  # 1.875 × 16 × 10 = 300 s
    table = at.dataframe[0].value.set_index("model")["time per trial here"]
    assert table["resnet18"] == "about 5 min" and table["resnet50"] == "not run here yet"
    next(s for s in at.selectbox if s.label == "Model").set_value("resnet50")
    at = at.run()
    assert any("no estimate yet for resnet50" in c.value for c in at.caption)
    at = _next(_next(at))
    assert "**Time per trial on this machine:** no estimate yet for resnet50" in at.markdown[-1].value


def test_the_review_warns_before_submit_when_an_epoch_will_not_fit_the_timeout(settings, engine, tmp_path):
    _shapes(settings, engine, tmp_path)  # 16 training images
    finished_trial(engine, "resnet18", train_images=16, epochs=1, seconds=7200)  # two hours per epoch here
    at = _wizard()
    at.session_state["wizard_job"] = {"type": "automl", "task": "image_classification",
                                      "training_data": {"path": "azureml:shapes:1"},
                                      "limits": {"max_trials": 1, "timeout_minutes": 60},
                                      "training_parameters": {"model_name": "resnet18"}}
    at.session_state["wizard_step"] = 4
    at = at.run()
    assert not at.exception
    (warning,) = [w.value for w in at.warning if "one epoch takes" in w.value]
    assert warning.startswith("resnet18: one epoch takes about 2.0 h on this machine (from 1 earlier trial here), "
                              "longer than the job timeout of 60 min")
    assert "Raise limits.timeout_minutes" in warning
    at.session_state["wizard_job"]["limits"]["timeout_minutes"] = 600  # room for 5 epochs: no warning
    at = at.run()
    assert not [w for w in at.warning if "one epoch takes" in w.value]


def test_the_model_step_shows_sizes_chosen_from_the_images_and_the_starting_weights(settings, engine, tmp_path):
    _shapes(settings, engine, tmp_path)  # 48-pixel images
    at = _next(_next(_wizard()))
    at.radio[0].set_value("One model")
    at = at.run()
    crop = next(n for n in at.number_input if n.label == "Training crop (px)")
    assert crop.value == 32  # the images' size rounded down to what the networks need, not 224
    assert any("typically 48 by 48 pixels" in c.value for c in at.caption)
    assert any("pretrained: none — will train from scratch" in c.value for c in at.caption)  # nothing cached here
    learning_rate = next(n for n in at.number_input if n.label == "Learning rate")
    assert learning_rate.value is None  # left to the recipe unless the person sets it
    crop.set_value(64)
    at = at.run()
    params = at.session_state["wizard_job"]["training_parameters"]
    assert params["training_crop_size"] == 64 and "validation_crop_size" not in params
    assert "learning_rate" not in params
