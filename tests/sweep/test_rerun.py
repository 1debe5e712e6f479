"""A trial's manifest, and re-running a trial from it: the same data, parameters and seed give the same
result on the same machine, and the comparison says so."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from factories import bright_dark_set

from core.runs.manifest import MANIFEST_FILE
from core.train.loop import RESUME_FILE
from storage.db import session_scope
from storage.repos import trials

TINY = {"model_name": "resnet18", "optimizer": "adamw", "learning_rate": 0.001, "number_of_epochs": 2,
        "training_crop_size": 32, "validation_crop_size": 32, "validation_resize_size": 32,
        "training_batch_size": 8, "early_stopping": False, "seed": 7}


def _trained(cli, tmp_path: Path) -> dict:  # type: ignore[no-untyped-def]
    """The one trial of a two-epoch job on a tiny set."""
    data = bright_dark_set(tmp_path / "data", count=24)
    file = tmp_path / "job.yml"
    file.write_text(yaml.safe_dump({"type": "automl", "task": "image_classification",
                                    "training_data": {"path": str(data), "type": "uri_file"},
                                    "training_parameters": TINY, "limits": {"max_trials": 1}}))
    return cli.json("job", "submit", str(file), "--wait")["trials"][0]


def test_a_rerun_trains_the_same_trial_again_and_reproduces_its_metric(cli, engine, tmp_path: Path):
    original = _trained(cli, tmp_path)
    manifest = json.loads((Path(original["artifact_dir"]) / MANIFEST_FILE).read_text())
    assert manifest["seed"] == 7 and manifest["params"]["training_crop_size"] == 32
    assert manifest["dataset"]["train_images"] + manifest["dataset"]["validation_images"] == 24
    assert len(manifest["dataset"]["content_sha256"]) == 64 and manifest["software"]["torch"]
    assert manifest["weights"]["state"] in ("cached", "unavailable", "downloadable")

    compared = cli.json("trial", "rerun", str(original["trial_id"]), "--wait")
    assert compared["original_trial"] == original["trial_id"] and compared["trial"] != original["trial_id"]
    assert compared["metric"] == "accuracy" and compared["original"] == original["primary_metric_value"]
    assert compared["reproduced"] is True and abs(compared["delta"]) <= compared["tolerance"]
    assert compared["differences"] == []  # same data content, split, parameters, seed, software, weights
    with session_scope(engine) as session:
        again = trials.get(session=session, trial_id=compared["trial"])
        assert again.metrics["manifest"]["dataset"] == manifest["dataset"]
    shown = cli.json("job", "show", str(compared["job_id"]))
    assert shown["name"] == f"re-run of trial {original['trial_id']}"


def test_a_trial_without_a_manifest_says_it_cannot_be_rerun(cli, engine):
    with session_scope(engine) as session:
        trial = trials.create(session=session, model_name="resnet18", params={}, primary_metric="accuracy")
    code, _, err = cli("trial", "rerun", str(trial.id), ok=False)
    assert code == 2 and "has no manifest" in err
    code, _, err = cli("trial", "rerun", "999", ok=False)
    assert code == 2 and "trial 999 does not exist" in err


def test_extending_a_trial_trains_on_from_its_last_epoch_as_a_new_linked_trial(cli, engine, tmp_path: Path):
    original = _trained(cli, tmp_path)
    assert (Path(original["artifact_dir"]) / RESUME_FILE).is_file()

    extended = cli.json("trial", "extend", str(original["trial_id"]), "--epochs", "2", "--wait")
    assert extended["status"] == "completed" and extended["trial"] != original["trial_id"]
    with session_scope(engine) as session:
        before = trials.curves(session=session, trial_id=original["trial_id"])
        row = trials.get(session=session, trial_id=extended["trial"])
    # The curves go on where the first trial's stopped: its two epochs, then two new ones.
    assert [step for step, _ in extended["curves"]["accuracy"]] == [1, 2, 3, 4]
    assert [tuple(point) for point in extended["curves"]["train_loss"][:2]] == before["train_loss"]
    manifest = row.metrics["manifest"]
    assert manifest["extends"]["trial"] == original["trial_id"]
    assert manifest["extends"]["epoch"] == 2 and manifest["params"]["number_of_epochs"] == 4
    assert row.metrics["epochs_run"] == 4 and row.metrics["resume"] == {"epoch": 4}  # it can be extended again
    shown = cli.json("job", "show", str(extended["job_id"]))
    assert shown["name"] == f"trial {original['trial_id']} + 2 epochs"
    assert shown["trials"][0]["extends"]["trial"] == original["trial_id"] and shown["trials"][0]["resume_epoch"] == 4
    assert "resuming" not in (Path(row.artifact_dir) / "trial.log").read_text()
    assert "going on from trial" in (Path(row.artifact_dir) / "trial.log").read_text()


def test_a_trial_that_cannot_be_extended_says_why_and_what_to_do_instead(cli, engine):
    with session_scope(engine) as session:
        bare = trials.create(session=session, model_name="resnet18", params={}, primary_metric="accuracy")
        yolo = trials.create(session=session, model_name="yolov8n", params={}, primary_metric="mean_average_precision")
        trials.set_metrics(session=session, trial_id=yolo.id, key="manifest",
                           values={"model": {"family": "ultralytics"}, "dataset": {}, "params": {}})
        trials.finish(session=session, trial_id=yolo.id, status="completed", metrics={}, primary_metric_value=0.5)
        running = trials.create(session=session, model_name="resnet18", params={}, primary_metric="accuracy")
        trials.set_metrics(session=session, trial_id=running.id, key="manifest",
                           values={"model": {"family": "timm"}, "dataset": {}, "params": {}})
    code, _, err = cli("trial", "extend", str(bare.id), "--epochs", "2", ok=False)
    assert code == 2 and "has no manifest" in err
    code, _, err = cli("trial", "extend", str(yolo.id), "--epochs", "2", ok=False)
    assert code == 2 and "kept no resume state" in err and f"checkpoint_run_id: {yolo.id}" in err
    code, _, err = cli("trial", "extend", str(running.id), "--epochs", "2", ok=False)
    assert code == 2 and f"trial {running.id} (resnet18) cannot be extended: it is queued; extend it once" in err
    code, _, err = cli("trial", "extend", str(running.id), "--epochs", "0", ok=False)
    assert code == 2 and "--epochs 0" in err
