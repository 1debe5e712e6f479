"""The job wizard, clicked through headless with AppTest: it builds the job file step by step, refuses a
bad choice on the step that made it, and submits what `kestrel job submit` takes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from factories import finished_trial
from PIL import Image
from streamlit.testing.v1 import AppTest

from core.base.tasks import Task
from core.data.importer import ImportOptions, import_dataset
from core.data.samples import write_sample
from core.sweep.jobspec import parse_job
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
    assert "**2\\. Task & metric**" in steps


def test_the_step_bar_never_starts_a_numbered_list_and_no_step_cites_the_spec(settings, engine, tmp_path):
    _shapes(settings, engine, tmp_path)
    at = _wizard()
    for step in range(5):
        at.session_state["wizard_step"] = step
        at = at.run()
        steps = next(m.value for m in at.markdown if "→" in m.value)
        # Markdown draws a line starting "1." as an ordered list: the step bar would become bullets.
        assert not re.match(r"\s*\d+[.)]\s", steps), steps
        shown = [e.value for kind in ("markdown", "caption", "info", "warning") for e in getattr(at, kind)]
        shown += [w.help or "" for w in [*at.number_input, *at.selectbox, *at.text_input, *at.radio]]
        assert not [text for text in shown if "SPEC" in text or "§" in text]


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
    # Neither ran here: each has a rough figure, said to be one.
    assert sentence.count("(a rough guess: not run here yet)") == 2
    weights = next(m.value for m in at.markdown if m.value.startswith("**Starting weights:**"))
    assert "resnet18 — pretrained:" in weights and "mobilenetv3_large_100 — pretrained:" in weights
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
    assert any("resnet50 about" in c.value and "(a rough guess: not run here yet)" in c.value for c in at.caption)
    at = _next(_next(at))
    summary = at.markdown[-1].value
    assert "**Time per trial on this machine:** resnet50 about" in summary
    assert "(a rough guess: not run here yet)" in summary


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
    assert crop.value is None  # left to the recipe, which takes the images' size rounded down, not 224
    assert crop.proto.placeholder == "auto: 32"
    assert any("typically 48 by 48 pixels" in c.value for c in at.caption)
    assert any("pretrained: none — will train from scratch" in c.value for c in at.caption)  # nothing cached here
    learning_rate = next(n for n in at.number_input if n.label == "Learning rate")
    assert learning_rate.value is None  # left to the recipe unless the person sets it
    crop.set_value(64)
    at = at.run()
    params = at.session_state["wizard_job"]["training_parameters"]
    assert params["training_crop_size"] == 64 and "validation_crop_size" not in params
    assert "learning_rate" not in params


def _review(at: AppTest, doc: dict) -> AppTest:
    """The review of ``doc``, as "Load it" leaves it."""
    at.session_state["wizard_job"] = doc
    at.session_state["wizard_step"] = 4
    return at.run()


def _estimate(at: AppTest) -> str:
    return next(c.value for c in at.caption if "time estimate" in c.value.lower() or c.value.startswith("Estimated"))


def test_image_size_and_batch_size_set_in_the_wizard_land_in_the_reviewed_yaml(settings, engine, tmp_path):
    _shapes(settings, engine, tmp_path)
    at = _next(_next(_wizard()))
    at.radio[0].set_value("One model")
    at = at.run()
    for key in ("training_crop_size", "validation_crop_size", "training_batch_size", "validation_batch_size"):
        assert at.number_input(key=f"wizard_{key}").value is None  # empty: each trial's recipe decides
        assert "Left empty" in at.number_input(key=f"wizard_{key}").help
    at.number_input(key="wizard_training_crop_size").set_value(64)
    at.number_input(key="wizard_validation_crop_size").set_value(64)
    at.number_input(key="wizard_training_batch_size").set_value(8)
    at.number_input(key="wizard_validation_batch_size").set_value(4)
    at = _next(_next(at.run()))
    text = at.code[0].value
    params = yaml.safe_load(text)["training_parameters"]
    assert {k: params[k] for k in ("training_crop_size", "validation_crop_size", "training_batch_size",
                                   "validation_batch_size")} == {"training_crop_size": 64, "validation_crop_size": 64,
                                                                 "training_batch_size": 8, "validation_batch_size": 4}
    job = parse_job(text, tmp_path)
    assert job.params.training_batch_size == 8 and job.params.training_crop_size == 64
    assert "training_batch_size 8" in at.markdown[-1].value


def test_detection_offers_the_image_size_of_every_family_automode_would_train(settings, engine, tmp_path):
    jsonl = write_sample(Task.DETECTION, tmp_path / "boxes", count=20, size=48)
    import_dataset(jsonl, ImportOptions("boxes"), settings=settings, engine=engine)
    at = _next(_next(_wizard()))
    at.radio[0].set_value("AutoMode")
    at = at.run()
    # On a CPU AutoMode trains a torchvision detector and a YOLO: both families' sizes can be set.
    labels = {n.label for n in at.number_input}
    assert {"Shorter side (px)", "Longer side at most (px)", "YOLO image size (px)", "Training batch size"} <= labels
    at.number_input(key="wizard_img_size").set_value(320)
    at.number_input(key="wizard_training_batch_size").set_value(4)
    at = _next(_next(at.run()))
    text = at.code[0].value
    assert parse_job(text, tmp_path).params.img_size == 320
    assert yaml.safe_load(text)["training_parameters"]["training_batch_size"] == 4


def test_the_job_name_experiment_and_tags_land_in_the_yaml_and_name_the_job(settings, engine, tmp_path):
    _shapes(settings, engine, tmp_path)
    at = _review(_wizard(), {"type": "automl", "task": "image_classification",
                             "training_data": {"path": "azureml:shapes:1"}, "limits": {"max_trials": 1},
                             "training_parameters": {"model_name": "resnet18", "number_of_epochs": 1}})
    at.text_input(key="wizard_display_name").set_value("shapes baseline")
    at.text_input(key="wizard_experiment_name").set_value("shapes")
    at.text_input(key="wizard_tags").set_value("team=vision, purpose = baseline")
    at = at.run()
    text = at.code[0].value
    doc = yaml.safe_load(text)
    assert doc["display_name"] == "shapes baseline" and doc["experiment_name"] == "shapes"
    assert doc["tags"] == {"team": "vision", "purpose": "baseline"}
    assert parse_job(text, tmp_path).tags == {"team": "vision", "purpose": "baseline"}
    _button(at, "Submit job").click()
    at.run()
    with session_scope(engine) as session:
        (queued,) = jobs.list_jobs(session=session)
    assert queued.name == "shapes baseline"


def test_a_tag_without_a_value_is_refused_before_submit(settings, engine, tmp_path):
    _shapes(settings, engine, tmp_path)
    at = _review(_wizard(), {"type": "automl", "task": "image_classification",
                             "training_data": {"path": "azureml:shapes:1"}, "limits": {"max_trials": 1}})
    at.text_input(key="wizard_tags").set_value("team=vision, oops")
    at = at.run()
    assert any("'oops' is not a key=value pair" in e.value for e in at.error)
    assert _button(at, "Submit job").disabled


def test_the_estimate_shows_from_the_first_step_and_follows_the_choices(settings, engine, tmp_path):
    at = _wizard()
    assert _estimate(at) == "No time estimate yet: choose a dataset."
    _shapes(settings, engine, tmp_path)  # 16 training images
    finished_trial(engine, "resnet18", train_images=32, epochs=2, seconds=120)  # 1.875 s per image-epoch
    at = at.run()
    line = _estimate(at)
    # A new job is AutoMode: its CPU candidates, one of which never ran here.
    assert line.startswith("Estimated on this machine: ")
    assert "for the job (10 trials, one at a time; likely between " in line
    assert "A rough guess for mobilenetv3_large_100: not run here yet" in line
    at = _next(_next(at))
    at.radio[0].set_value("One model")
    at = at.run()
    at.number_input[0].set_value(10)  # epochs: 1.875 × 16 × 10 = 300 s a trial
    at = at.run()
    assert _estimate(at) == ("Estimated on this machine: ~5 min per trial, ~5 min for the job (one trial; likely "
                             "between ~4 min and ~7 min).")  # measured here: a quarter either way
    at = _next(at)
    assert _estimate(at) == ("Estimated on this machine: ~5 min per trial, ~5 min for the job (one trial; likely "
                             "between ~4 min and ~7 min).")  # measured here: a quarter either way
    _button(at, "Back").click()
    at = at.run()
    at.radio[0].set_value("AutoMode")
    at = at.run()
    at.number_input(key="wizard_auto_trials").set_value(4)
    at = _next(at.run())
    next(n for n in at.number_input if n.label == "Max concurrent trials").set_value(2)
    at = at.run()
    assert "for the job (4 trials, 2 at a time; likely between " in _estimate(at)


def test_automode_names_the_sampling_algorithm_its_job_file_says(settings, engine, tmp_path):
    _shapes(settings, engine, tmp_path)
    at = _next(_next(_wizard()))
    at.radio[0].set_value("AutoMode")
    at = _next(at.run())
    next(s for s in at.selectbox if s.label == "Early termination").set_value("bandit")
    at = _next(at.run())
    doc = yaml.safe_load(at.code[0].value)
    algorithm = doc["sweep"]["sampling_algorithm"]
    assert algorithm == parse_job(at.code[0].value, tmp_path).sampling_algorithm == "bayesian"
    mode = next(line for line in at.markdown[-1].value.splitlines() if "**Mode:**" in line)
    assert f"sampling_algorithm: {algorithm}" in mode and "random" not in mode
    _button(at, "Back").click()
    _button(at.run(), "Back").click()
    at = at.run()
    sentence = next(i.value for i in at.info if "AutoMode tries" in i.value)
    assert f"sampling_algorithm: {algorithm}" in sentence and "random" not in sentence
    # An uploaded AutoMode file that names another algorithm is told AutoMode searches its own way.
    at = _review(at, {**doc, "sweep": {"sampling_algorithm": "random"}})
    mode = next(line for line in at.markdown[-1].value.splitlines() if "**Mode:**" in line)
    assert "sampling_algorithm: bayesian" in mode and "sampling_algorithm: random does not change" in mode


def test_a_sweep_shows_the_starting_weights_of_each_chosen_model(settings, engine, tmp_path):
    _shapes(settings, engine, tmp_path)
    at = _next(_next(_wizard()))
    at.radio[0].set_value("Sweep")
    at = at.run()
    assert any(m.value.startswith("**Starting weights:** resnet18 — pretrained:") for m in at.markdown)
    review = _next(_next(at))
    mode = next(line for line in review.markdown[-1].value.splitlines() if "**Mode:**" in line)
    assert "random sampling (sampling_algorithm: random)" in mode


def test_imbalanced_classes_are_compensated_unless_the_person_turns_it_off(settings, engine, tmp_path):
    jsonl = write_sample(Task.CLASSIFICATION, tmp_path / "shapes", count=33, size=32)
    lines = jsonl.read_text().splitlines()
    squares = [line for line in lines if '"square"' in line]
    jsonl.write_text("\n".join([line for line in lines if '"circle"' in line] + squares[:1]) + "\n")  # 11 : 1
    import_dataset(jsonl, ImportOptions("lopsided"), settings=settings, engine=engine)
    at = _wizard()
    balance = at.toggle(key="wizard_balance")
    assert balance.label == "Compensate for imbalanced classes (11 : 1)" and balance.value is True
    assert "weighted_loss" not in at.session_state["wizard_job"].get("training_parameters", {})
    balance.set_value(False).run()
    assert at.session_state["wizard_job"]["training_parameters"]["weighted_loss"] == 0
    at.toggle(key="wizard_balance").set_value(True).run()
    assert "weighted_loss" not in at.session_state["wizard_job"]["training_parameters"]


def test_small_objects_are_pointed_out_and_the_advised_sizes_set_in_one_click(settings, engine, tmp_path):
    folder = tmp_path / "dots"
    (folder / "images").mkdir(parents=True)
    lines = []
    for n in range(12):  # 1600 x 1200 photos with one 16-pixel object each: 6 pixels at YOLO's 640
        Image.new("RGB", (1600, 1200), "white").save(folder / "images" / f"{n}.png")
        box = {"label": "dot" if n % 2 else "spot", "topX": 0.5, "topY": 0.5, "bottomX": 0.51, "bottomY": 0.5133}
        lines.append(json.dumps({"image_url": f"images/{n}.png", "label": [box]}))
    (folder / "annotations.jsonl").write_text("\n".join(lines) + "\n")
    import_dataset(folder / "annotations.jsonl", ImportOptions("dots", Task.DETECTION), settings=settings,
                   engine=engine)
    at = _wizard()
    (advice,) = [w.value for w in at.warning if "smaller than 32 px" in w.value]
    assert advice.startswith("100% of the objects are smaller than 32 px at the 640 px")
    use = at.button(key="wizard_small_objects")
    assert use.label == "Use tile_grid_size 4x4, img_size 992"  # 32 px would take 3200-px training images
    use.click().run()
    params = at.session_state["wizard_job"]["training_parameters"]
    assert (params["tile_grid_size"], params["img_size"]) == ("4x4", 992)
    assert at.button(key="wizard_small_objects").disabled
    assert "The job trains at tile_grid_size 4x4, img_size 992." in [c.value for c in at.caption]
