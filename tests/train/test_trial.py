"""`kestrel train`: one trial end to end — stored status, metric points, artifacts, reload."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from factories import finished_trial
from PIL import Image

from core.base.tasks import Task
from core.data.importer import ImportOptions, import_dataset
from core.data.samples import write_sample
from core.sweep import estimate
from core.sweep.summary import duration_s
from storage.db import session_scope
from storage.repos import trials

SMALL = ["--set", "number_of_epochs=2", "--set", "training_batch_size=16",
         "--set", "training_crop_size=32", "--set", "validation_crop_size=32",
         "--set", "validation_resize_size=36", "--set", "learning_rate=0.01"]


@pytest.fixture
def shapes(settings, engine, tmp_path) -> str:
    jsonl = write_sample(Task.CLASSIFICATION, tmp_path / "shapes", count=30, size=48)
    import_dataset(jsonl, ImportOptions("shapes"), settings=settings, engine=engine)
    return "shapes"


def test_train_stores_status_metric_points_and_artifacts(cli, shapes, engine):
    result = cli.json("train", "--data", f"{shapes}:1", "--model", "resnet18", *SMALL)
    assert result["status"] == "completed"
    assert result["primary_metric"] == "accuracy"
    assert 0.0 <= result["metrics"]["accuracy"] <= 1.0
    assert result["device"].startswith("cpu") and result["epochs_run"] == 2
    artifacts = {k: Path(v) for k, v in result["artifacts"].items()}
    assert all(path.exists() for path in artifacts.values())
    settings_json = json.loads(artifacts["settings"].read_text())
    assert settings_json["classes"] == ["circle", "square", "triangle"]
    assert settings_json["valid_crop_size"] == 32
    assert "epoch 2" in artifacts["log"].read_text()
    with session_scope(engine) as session:
        row = trials.get(session=session, trial_id=result["trial_id"])
        assert row.status == "completed" and row.primary_metric_value == result["metrics"]["accuracy"]
        assert row.metrics["software"]["torch"] and row.metrics["train_images"] == 24  # 30 less a 20% split
        took = duration_s(row.started_at, row.finished_at)
        # The next trial of this model is estimated from this one: twice the epochs, twice the time, and a
        # process's start (no worker timed this one's process: the default).
        guess = estimate.per_trial(session=session, models=["resnet18"], device="CPU, 2 cores",
                                   train_images=24, epochs=4)["resnet18"]
        assert guess is not None and guess.trials == 1
        assert guess.seconds == pytest.approx(2 * took + estimate.TRIAL_START_S)
        on_a_gpu = estimate.per_trial(session=session, models=["resnet18"], device="GPU: NVIDIA H200",
                                      train_images=24, epochs=4)
        assert on_a_gpu == {"resnet18": None}  # a CPU's speed says nothing of a GPU
        curves = trials.curves(session=session, trial_id=result["trial_id"])
    assert [step for step, _ in curves["train_loss"]] == [1, 2]
    assert len(curves["accuracy"]) == 2

    from core.inference.predict import load_predictor, predict_json

    predictor = load_predictor(artifacts["weights"].parent, "cpu")
    answer = predict_json(predictor, [Image.new("RGB", (48, 48), "white")], ["white.png"])[0]
    assert answer["filename"] == "white.png"
    assert answer["labels"] == ["circle", "square", "triangle"]
    assert abs(sum(answer["probs"]) - 1) < 1e-5


def test_unknown_model_and_bad_parameters_are_refused_before_a_trial_exists(cli, shapes, engine):
    code, _, stderr = cli("train", "--data", shapes, "--model", "resnet19x", ok=False)
    assert code == 2 and "did you mean" in stderr and "resnet18" in stderr
    code, _, stderr = cli("train", "--data", shapes, "--set", "optimizer=rmsprop", ok=False)
    assert code == 2 and "training_parameters.optimizer" in stderr
    code, _, stderr = cli("train", "--data", "nope", ok=False)
    assert code == 2 and "kestrel data list" in stderr
    with session_scope(engine) as session:
        assert trials.get(session=session, trial_id=1) is None


def test_checkpoint_run_id_continues_from_a_finished_trial(cli, shapes, settings, engine, tmp_path):
    first = cli.json("train", "--data", shapes, "--model", "resnet18", *SMALL)
    again = cli.json("train", "--data", shapes, "--model", "resnet18", *SMALL,
                     "--set", f"checkpoint_run_id=trial-{first['trial_id']}")
    params = json.loads(Path(again["artifacts"]["params"]).read_text())
    assert params["checkpoint_path"] == first["artifacts"]["weights"]
    assert not any("from scratch" in n for n in again["notices"])
    code, _, stderr = cli("train", "--data", shapes, "--set", "checkpoint_run_id=999", ok=False)
    assert code == 2 and "not a finished trial" in stderr


def test_every_family_states_its_defaults_and_they_sit_below_the_job(settings):
    from core.base.params import resolve_params
    from core.zoo.base import families
    from core.zoo.families import resolve

    assert set(families.names()) == {"timm", "torchvision", "ultralytics"}
    params = resolve_params(Task.DETECTION, {"model_name": "yolov8n"})
    family, spec = resolve("yolov8n", Task.DETECTION, params)
    assert family.default_params(Task.DETECTION)["box_score_threshold"] == 0.1
    family, spec = resolve("fasterrcnn_resnet18_fpn", Task.DETECTION, params)
    assert spec.family == "torchvision"
    family, spec = resolve("resnet50", Task.CLASSIFICATION, params)
    assert (spec.family, spec.architecture) == ("timm", "resnet50")


def test_the_estimate_is_the_median_speed_of_the_models_finished_trials(engine):
    runs = [("resnet18", "completed", 100, 10, 2), ("resnet18", "early_terminated", 50, 10, 1),
            ("resnet18", "completed", 900, 10, 2), ("resnet18", "failed", 1, 10, 2),
            ("resnet50", "completed", 10, 10, 1)]  # (model, status, train images, epochs, seconds)
    for model, status, images, epochs, seconds in runs:
        finished_trial(engine, model, train_images=images, epochs=epochs, seconds=seconds, status=status)
    with session_scope(engine) as session:
        guesses = estimate.per_trial(session=session, models=["resnet18", "vitb16r224"], device="CPU, 2 cores",
                                     train_images=200, epochs=15)
    # Speeds 0.002, 0.002 and 0.00022 s per image-epoch (the failed trial does not count): median 0.002.
    guess = guesses["resnet18"]
    assert guess is not None and guess.trials == 3
    assert guess.seconds == pytest.approx(0.002 * 200 * 15 + estimate.TRIAL_START_S)
    assert guesses["vitb16r224"] is None  # never run here
    assert estimate.say(guess.seconds) == "about 26 s" and estimate.say(720) == "about 12 min"
