"""AutoML jobs end to end through `kestrel job …`: trials in their own processes, sweeps, early
termination, cancel, a killed worker, and the seed job files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from factories import bright_dark_set

from core.base.tasks import Task
from core.data.samples import write_sample
from storage.db import session_scope
from storage.repos import jobs, trials

JOBS = Path(__file__).parent / "jobs"
# Tiny and fast: 32 px crops, one thread's worth of work per epoch.
TINY = {"number_of_epochs": 1, "training_crop_size": 32, "validation_crop_size": 32,
        "validation_resize_size": 32, "training_batch_size": 8, "early_stopping": False}
GOOD = {"model_name": "resnet18", "optimizer": "adamw", "learning_rate": 0.001}  # 1.0 accuracy at epoch 1
BAD = {"model_name": "resnet18", "optimizer": "adam", "learning_rate": 1.0}  # diverges: chance (0.5) throughout


@pytest.fixture(scope="module")
def bright_dark(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bright_dark_set(tmp_path_factory.mktemp("bright_dark"))


def job_file(folder: Path, data: Path, **fields: Any) -> Path:
    doc = {"type": "automl", "task": "image_classification", "primary_metric": "accuracy",
           "training_data": {"path": str(data), "type": "uri_file"}, **fields}
    path = folder / "job.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


def sweep(*subspaces: dict[str, Any]) -> list[dict[str, Any]]:
    """Sub-spaces with every parameter as a one-value choice (a grid of exactly these points)."""
    return [{k: {"type": "choice", "values": [v]} for k, v in sub.items()} for sub in subspaces]


def test_random_sweep_over_two_model_families_runs_two_at_a_time_and_names_the_best(cli, engine, tmp_path):
    data = write_sample(Task.DETECTION, tmp_path / "shapes", count=16, size=64)
    file = job_file(tmp_path, data, task="image_object_detection", primary_metric="mean_average_precision",
                    limits={"max_trials": 4, "max_concurrent_trials": 2},
                    training_parameters={"number_of_epochs": 1, "training_batch_size": 4, "min_size": 64,
                                         "max_size": 64, "img_size": 64, "box_score_threshold": 0.001},
                    sweep={"sampling_algorithm": "random"},
                    search_space=[{"model_name": {"type": "choice", "values": ["yolo11n"]},
                                   "learning_rate": {"type": "uniform", "min_value": 0.001, "max_value": 0.01}},
                                  {"model_name": {"type": "choice", "values": ["fasterrcnn_mobilenet_v3_large_fpn"]},
                                   "learning_rate": {"type": "loguniform", "min_value": -7, "max_value": -4}}])
    summary = cli.json("job", "submit", str(file), "--wait")
    assert summary["status"] == "completed", summary
    children = summary["trials"]
    assert len(children) == 4 and all(t["status"] == "completed" for t in children), children
    assert {t["params"]["model_name"] for t in children} <= {"yolo11n", "fasterrcnn_mobilenet_v3_large_fpn"}
    best = max(children, key=lambda t: t["primary_metric_value"])
    assert summary["best_trial_id"] in {t["trial_id"] for t in children
                                        if t["primary_metric_value"] == best["primary_metric_value"]}
    with session_scope(engine) as session:
        rows = trials.for_job(session=session, job_id=summary["job_id"])
    # Two at a time: some trial started before another one had finished.
    spans = sorted((t.started_at, t.finished_at) for t in rows)
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:], strict=False))
    assert all(t.device == "cpu (1 threads)" for t in rows)  # two trials share the two cores


def test_grid_runs_exactly_its_grid_and_ties_go_to_the_earlier_finished(cli, bright_dark, tmp_path):
    space = [{"model_name": {"type": "choice", "values": ["resnet18"]},
              "learning_rate": {"type": "choice", "values": [0.001, 0.002]},
              "optimizer": {"type": "choice", "values": ["adamw"]}}]
    file = job_file(tmp_path, bright_dark, limits={"max_trials": 10}, training_parameters=TINY,
                    sweep={"sampling_algorithm": "grid"}, search_space=space)
    summary = cli.json("job", "submit", str(file), "--wait")
    assert summary["status"] == "completed"
    assert sorted(t["params"]["learning_rate"] for t in summary["trials"]) == [0.001, 0.002]
    values = [t["primary_metric_value"] for t in summary["trials"]]
    if values[0] == values[1]:
        assert summary["best_trial_id"] == summary["trials"][0]["trial_id"]


def test_bayesian_sweep_runs_scores_its_test_data_and_can_be_shown_listed_and_logged(cli, bright_dark, tmp_path):
    space = [{"model_name": "resnet18", "optimizer": "adamw",
              "learning_rate": {"type": "loguniform", "min_value": -8, "max_value": -5}}]
    test = bright_dark_set(tmp_path / "test", count=10)
    file = job_file(tmp_path, bright_dark, limits={"max_trials": 3}, training_parameters=TINY,
                    sweep={"sampling_algorithm": "bayesian"}, search_space=space,
                    test_data={"path": str(test), "type": "uri_file"})
    summary = cli.json("job", "submit", str(file), "--wait")
    assert summary["status"] == "completed" and len(summary["trials"]) == 3
    # The best model scored on the test set, its metrics beside the validation ones.
    assert summary["test_data"] == "job-test:1" and "; test accuracy " in summary["message"]
    best = next(t for t in summary["trials"] if t["trial_id"] == summary["best_trial_id"])
    assert "accuracy" in summary["test_metrics"] and set(summary["test_metrics"]) <= set(best["metrics"])
    assert best["test_metrics"] == summary["test_metrics"] and 0 <= summary["test_metrics"]["accuracy"] <= 1
    assert cli.json("data", "show", "job-test:1")["images"] == 10
    rates = [t["params"]["learning_rate"] for t in summary["trials"]]
    assert len(set(rates)) == 3 and all(0.00033 < r < 0.0068 for r in rates)
    job_id = summary["job_id"]
    assert cli.json("job", "show", str(job_id))["best_trial_id"] == summary["best_trial_id"]
    assert [j["job_id"] for j in cli.json("job", "list")["jobs"]] == [job_id]
    logs = cli.json("job", "logs", str(job_id))["trials"]
    assert all("epoch 1: " in text for text in logs.values()), logs


def test_bandit_stops_a_diverging_trial_before_its_last_epoch(cli, bright_dark, tmp_path):
    file = job_file(tmp_path, bright_dark, limits={"max_trials": 2},
                    training_parameters={**TINY, "number_of_epochs": 4},
                    sweep={"sampling_algorithm": "grid", "early_termination": {
                        "type": "bandit", "slack_amount": 0.2, "evaluation_interval": 1, "delay_evaluation": 1}},
                    search_space=sweep(GOOD, BAD))
    summary = cli.json("job", "submit", str(file), "--wait")
    good, bad = summary["trials"]
    assert good["status"] == "completed" and good["epoch"] == 4 and good["primary_metric_value"] == 1.0
    assert bad["status"] == "early_terminated" and bad["epoch"] < 4, bad
    assert bad["stop_reason"].startswith("bandit: 0.5 is below the best 1 - 0.2"), bad
    assert (Path(bad["artifact_dir"]) / "model.safetensors").is_file()  # it keeps its model and metrics
    assert bad["primary_metric_value"] == 0.5
    assert summary["best_trial_id"] == good["trial_id"]


def _start_worker(settings) -> subprocess.Popen:  # type: ignore[no-untyped-def]
    return subprocess.Popen([sys.executable, "-m", "core.cli", "worker"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "KESTREL_HOME": str(settings.home)})


def _wait_for(check, timeout: float = 180.0):  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if value := check():
            return value
        time.sleep(0.3)
    raise AssertionError("timed out")


def _running_trial(engine, job_id: int):  # type: ignore[no-untyped-def]
    with session_scope(engine) as session:
        return next((t for t in trials.for_job(session=session, job_id=job_id)
                     if t.status == "running" and t.epoch >= 1), None)


def test_cancel_stops_running_trials_within_seconds_and_keeps_their_results(cli, settings, engine, bright_dark,
                                                                            tmp_path):
    file = job_file(tmp_path, bright_dark, limits={"max_trials": 3}, sweep={"sampling_algorithm": "grid"},
                    training_parameters={**TINY, "number_of_epochs": 200}, search_space=sweep(GOOD))
    job_id = cli.json("job", "submit", str(file))["job_id"]
    worker = _start_worker(settings)
    try:
        running = _wait_for(lambda: _running_trial(engine, job_id))
        asked = time.monotonic()
        assert cli.json("job", "cancel", str(job_id))["cancel_requested"]
        _wait_for(lambda: cli.json("job", "show", str(job_id))["status"] in jobs.FINAL, timeout=60)
        took = time.monotonic() - asked
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    summary = cli.json("job", "show", str(job_id))
    assert summary["status"] == "canceled", summary
    assert len(summary["trials"]) == 1  # no trial started after the cancel
    trial = summary["trials"][0]
    assert trial["trial_id"] == running.id and trial["status"] == "canceled" and trial["stop_reason"] == "canceled"
    assert trial["epoch"] < 200 and trial["primary_metric_value"] is not None
    assert (Path(trial["artifact_dir"]) / "model.safetensors").is_file()
    print(f"cancel took {took:.1f} s")


def test_a_job_survives_kill_9_of_its_worker_mid_trial(cli, settings, engine, bright_dark, tmp_path):
    file = job_file(tmp_path, bright_dark, limits={"max_trials": 2}, sweep={"sampling_algorithm": "grid"},
                    training_parameters={**TINY, "number_of_epochs": 3},
                    search_space=sweep(GOOD, {**GOOD, "learning_rate": 0.002}))
    job_id = cli.json("job", "submit", str(file))["job_id"]
    first = _start_worker(settings)
    lost = _wait_for(lambda: _running_trial(engine, job_id))
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    _wait_for(lambda: not _pid_alive(lost.pid), timeout=30)  # the kernel ended its trial with it
    second = subprocess.run([sys.executable, "-m", "core.cli", "worker", "--once"], capture_output=True, text=True,
                            timeout=600, env={**os.environ, "KESTREL_HOME": str(settings.home)})
    assert f"job {job_id} lost its worker; queued again" in second.stderr
    summary = cli.json("job", "show", str(job_id))
    assert summary["status"] == "completed", summary
    assert [t["status"] for t in summary["trials"]] == ["completed", "completed"]
    assert summary["trials"][0]["trial_id"] == lost.id  # the lost trial ran again, from its checkpoint
    with session_scope(engine) as session:
        assert trials.get(session=session, trial_id=lost.id).metrics["relaunches"] == 1
        assert [s for s, _ in trials.curves(session=session, trial_id=lost.id)["accuracy"]][-1] == 3


def _pid_alive(pid: int) -> bool:
    from core.base.processes import process_alive

    return process_alive(pid)


@pytest.mark.parametrize("name", sorted(p.name for p in JOBS.glob("*.yml")))
def test_seed_job_files_validate_on_sample_data(name, cli, settings, tmp_path):
    doc = yaml.safe_load((JOBS / name).read_text())
    task = Task(doc["task"])
    data = write_sample(task, tmp_path / "data", count=12, size=48)
    doc["training_data"] = {"path": str(data), "type": "uri_file"}
    doc.pop("validation_data", None)
    file = tmp_path / name
    file.write_text(yaml.safe_dump(doc))
    if "checkpoint_run_id" in doc.get("training_parameters", {}):
        code, _, err = cli("job", "submit", str(file), ok=False)
        assert code == 2 and "checkpoint_run_id: 'target_checkpoint_run_id' is not a trial id" in err
        return
    summary = cli.json("job", "submit", str(file))
    assert summary["status"] == "queued" and summary["dataset"].endswith(":1")


def test_the_seed_automode_job_runs_end_to_end_shrunk(cli, bright_dark, tmp_path):
    doc = yaml.safe_load((JOBS / "intel_automode.yml").read_text())
    doc["training_data"] = {"path": str(bright_dark), "type": "uri_file"}
    doc.pop("validation_data")
    doc["limits"]["max_trials"] = 2
    doc["training_parameters"] = TINY
    file = tmp_path / "automode.yml"
    file.write_text(yaml.safe_dump(doc))
    summary = cli.json("job", "submit", str(file), "--wait")
    assert summary["status"] == "completed", summary
    # AutoMode on a CPU with little data: its candidates at their defaults, lightest first.
    assert [t["model_name"] for t in summary["trials"]] == ["resnet18", "mobilenetv3_large_100"]
    assert summary["best_trial_id"] is not None
