"""A trial's manifest, and re-running a trial from it: the same data, parameters and seed give the same
result on the same machine, and the comparison says so."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from factories import bright_dark_set

from core.runs.manifest import MANIFEST_FILE
from storage.db import session_scope
from storage.repos import trials

TINY = {"model_name": "resnet18", "optimizer": "adamw", "learning_rate": 0.001, "number_of_epochs": 2,
        "training_crop_size": 32, "validation_crop_size": 32, "validation_resize_size": 32,
        "training_batch_size": 8, "early_stopping": False, "seed": 7}


def test_a_rerun_trains_the_same_trial_again_and_reproduces_its_metric(cli, engine, tmp_path: Path):
    data = bright_dark_set(tmp_path / "data", count=24)
    file = tmp_path / "job.yml"
    file.write_text(yaml.safe_dump({"type": "automl", "task": "image_classification",
                                    "training_data": {"path": str(data), "type": "uri_file"},
                                    "training_parameters": TINY, "limits": {"max_trials": 1}}))
    original = cli.json("job", "submit", str(file), "--wait")["trials"][0]
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
