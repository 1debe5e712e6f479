"""Time limits explain themselves: a trial stopped by the job timeout, the trial timeout or a cancel says
which, in words (never a signal number), keeps nothing when no epoch finished and says what to change;
SIGTERM asks a trial to stop at its next batch boundary; and `job submit` warns before the job starts when
an epoch will not fit the time limit."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from factories import finished_trial

from core.base.tasks import Task
from core.data.samples import write_sample
from core.runs import stopping
from core.runs.trial import StorageContext
from core.sweep import estimate, orchestrator
from core.worker.queue import Worker
from storage.db import session_scope
from storage.repos import jobs, trials, workers

TINY = {"model_name": "resnet18", "number_of_epochs": 3, "training_crop_size": 32, "validation_crop_size": 32,
        "validation_resize_size": 32, "training_batch_size": 8, "early_stopping": False}
SLEEPER = ("-c", "import time; time.sleep(600)")  # a trial process that never stops by itself
DEAF = ("-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)")


@pytest.fixture
def shapes(tmp_path: Path) -> Path:
    return write_sample(Task.CLASSIFICATION, tmp_path / "shapes", count=20, size=32)  # 16 for training


def job_file(folder: Path, data: Path, limits: dict[str, Any], **params: Any) -> Path:
    doc = {"type": "automl", "task": "image_classification", "primary_metric": "accuracy",
           "training_data": {"path": str(data), "type": "uri_file"}, "limits": {"max_trials": 1, **limits},
           "training_parameters": {**TINY, **params}}
    path = folder / "job.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _only_trial(engine, job_id: int) -> tuple[str, str, str]:  # type: ignore[no-untyped-def]
    """The job's one trial: status, stop reason, error."""
    with session_scope(engine) as session:
        (row,) = trials.for_job(session=session, job_id=job_id)
        return row.status, row.stop_reason, row.error


# --- the trial process stops itself -----------------------------------------------------------------

def test_a_job_timeout_before_the_first_epoch_ends_keeps_nothing_and_says_what_to_change(cli, engine, shapes,
                                                                                          tmp_path):
    job_id = cli.json("job", "submit", str(job_file(tmp_path, shapes, {"timeout_minutes": 1})))["job_id"]
    with session_scope(engine) as session:
        trial_id = trials.create(session=session, job_id=job_id, number=0, model_name="resnet18", params={},
                                 primary_metric="accuracy").id
    # As the worker starts it; the time is up before the first batch (the worker's words name the limit).
    cli("trial", "run", str(trial_id), "--timeout-s", "0.001", "--timeout-reason", stopping.job_timeout(1),
        "--threads", "1")
    trial = cli.json("job", "show", str(job_id))["trials"][0]
    assert trial["status"] == "failed" and trial["stop_reason"] == "job timeout after 1 min"
    assert trial["error"] == ("job timeout after 1 min, before its first epoch finished: nothing to keep; "
                              "raise limits.timeout_minutes or pick a smaller model/img size")
    assert trial["epoch"] == 0 and trial["primary_metric_value"] is None
    assert not (Path(trial["artifact_dir"]) / "model.safetensors").exists()  # no model to register
    assert "signal" not in cli("job", "show", str(job_id))[1]


def test_sigterm_asks_for_a_stop_with_the_limit_in_words_and_a_cancel_wins(engine, tmp_path):
    with session_scope(engine) as session:
        job_id = jobs.enqueue(session=session, kind="automl", name="j", spec={}).id
        trial_id = trials.create(session=session, job_id=job_id, number=0, model_name="m", params={},
                                 primary_metric="accuracy").id
    previous = signal.getsignal(signal.SIGTERM)
    with stopping.worker_trial(stopping.trial_timeout(10)):
        ctx = StorageContext(engine, trial_id, tmp_path, "cpu", 3600, job_id=job_id)
        assert ctx.should_stop() is None
        os.kill(os.getpid(), signal.SIGTERM)  # the worker's deadline for this trial came
        assert _wait_for(stopping.terminated)
        assert ctx.should_stop() == "trial timeout after 10 min"
        canceled = StorageContext(engine, trial_id, tmp_path, "cpu", 3600, job_id=job_id)
        with session_scope(engine) as session:
            jobs.claim_next(session=session, worker_id="w")
            jobs.request_cancel(session=session, job_id=job_id)
        assert canceled.should_stop() == "canceled"  # read at once, not at the next poll
    assert signal.getsignal(signal.SIGTERM) == previous and not stopping.terminated()


# --- the worker stops a trial that does not ---------------------------------------------------------

def test_a_trial_still_running_at_the_job_timeout_is_recorded_with_it(cli, engine, shapes, tmp_path,
                                                                      monkeypatch):
    monkeypatch.setattr(orchestrator, "TRIAL_COMMAND", SLEEPER)  # say, still caching its images
    monkeypatch.setattr(orchestrator, "MINUTE_S", 0.05)  # the job's minute passes in 3 s
    summary = cli.json("job", "submit", str(job_file(tmp_path, shapes, {"timeout_minutes": 1})), "--wait")
    (trial,) = summary["trials"]
    assert trial["status"] == "failed" and trial["stop_reason"] == "job timeout after 1 min"
    assert trial["error"].startswith("job timeout after 1 min, before its first epoch finished: nothing to keep")
    assert summary["status"] == "failed" and "job timeout after 1 min" in summary["error"]
    assert "signal" not in json.dumps(summary)


def test_a_trial_deaf_to_sigterm_is_killed_after_the_grace_and_named_by_its_trial_timeout(
        cli, engine, shapes, tmp_path, monkeypatch):
    monkeypatch.setattr(orchestrator, "TRIAL_COMMAND", DEAF)
    monkeypatch.setattr(orchestrator, "MINUTE_S", 0.05)
    monkeypatch.setattr(orchestrator, "SIGNAL_AFTER_S", 0.5)
    file = job_file(tmp_path, shapes, {"timeout_minutes": 10, "trial_timeout_minutes": 1})
    (trial,) = cli.json("job", "submit", str(file), "--wait")["trials"]
    assert trial["status"] == "failed" and trial["stop_reason"] == "trial timeout after 1 min"
    assert trial["error"] == ("trial timeout after 1 min, before its first epoch finished: nothing to keep; "
                              "raise limits.trial_timeout_minutes or pick a smaller model/img size")


def test_a_cancel_is_named_as_such(cli, settings, engine, shapes, tmp_path, monkeypatch):
    monkeypatch.setattr(orchestrator, "TRIAL_COMMAND", SLEEPER)
    job_id = cli.json("job", "submit", str(job_file(tmp_path, shapes, {"timeout_minutes": 60})))["job_id"]
    worker = threading.Thread(target=Worker(settings, engine).run, kwargs={"until_job": job_id})
    worker.start()
    try:
        assert _wait_for(lambda: _trial_count(engine, job_id))
        cli("job", "cancel", str(job_id))
    finally:
        worker.join(timeout=60)
    assert _only_trial(engine, job_id) == ("canceled", "canceled",
                                           "canceled, before its first epoch finished: nothing to keep")


def _trial_count(engine, job_id: int) -> int:  # type: ignore[no-untyped-def]
    with session_scope(engine) as session:
        return len(trials.for_job(session=session, job_id=job_id))


def _wait_for(check, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if value := check():
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


# --- the warning before the job starts --------------------------------------------------------------

def _cpu_worker(engine) -> None:  # type: ignore[no-untyped-def]
    """A live worker on two CPU cores: where the job would train, whatever this machine has."""
    with session_scope(engine) as session:
        workers.register(session=session, worker_id="w", pid=os.getpid(), device="CPU, 2 cores")


def test_submit_warns_when_an_epoch_will_not_fit_the_timeout_and_still_queues(cli, engine, shapes, tmp_path):
    _cpu_worker(engine)
    finished_trial(engine, "resnet50", train_images=16, epochs=1, seconds=3600)  # an hour per epoch here
    code, stdout, stderr = cli("job", "submit", str(job_file(tmp_path, shapes, {"timeout_minutes": 10},
                                                             model_name="resnet50")), "--json")
    answer = json.loads(stdout)
    assert answer["status"] == "queued"
    (warning,) = answer["warnings"]
    assert warning.startswith("resnet50: one epoch takes about 60 min on this machine (from 1 earlier trial "
                              "here), longer than the job timeout of 10 min")
    assert "Raise limits.timeout_minutes" in warning
    assert "warning:" in stderr and "resnet50: one epoch takes" in stderr


def test_submit_warns_from_a_rough_guess_for_a_model_that_never_ran_here(cli, engine, shapes, tmp_path):
    _cpu_worker(engine)
    # vitb16r224: ~1.6 images/s at 224 px on two cores; at 448 px 16 + 4/3 images take ~43 s of the minute.
    file = job_file(tmp_path, shapes, {"timeout_minutes": 1}, model_name="vitb16r224", training_crop_size=448,
                    number_of_epochs=15)
    (warning,) = cli.json("job", "submit", str(file))["warnings"]
    assert "(a rough guess: it has not run here yet)" in warning
    assert "the job timeout of 1 min leaves room for 1 of its 15 epochs" in warning
    small = job_file(tmp_path, shapes, {"timeout_minutes": 60}, model_name="resnet18")
    assert cli.json("job", "submit", str(small))["warnings"] == []


def test_a_rough_epoch_scales_with_pixels_cores_and_the_trials_sharing_them():
    def guess(device: str = "CPU, 2 cores", concurrent: int = 1, **params: Any) -> float:
        work = estimate.Workload(Task.CLASSIFICATION, 140, 0, device, params, concurrent)
        return estimate.guess_epoch_s("resnet18", work)

    assert guess() == pytest.approx(10.0)  # 140 images at 14 images/s
    assert guess(training_crop_size=448) == pytest.approx(40.0)
    assert guess("CPU, 4 cores") == pytest.approx(5.0)
    assert guess("CPU, 4 cores", concurrent=2) == pytest.approx(10.0)
    assert guess("GPU: NVIDIA H200") < 1.0
    detect = estimate.Workload(Task.DETECTION, 16, 0, "CPU, 2 cores", {"img_size": 128})
    assert estimate.guess_epoch_s("yolov8n", detect) == pytest.approx(0.5)  # ENVIRONMENT.md's figure
    assert estimate.guess_epoch_s("yolov8s", detect) > estimate.guess_epoch_s("yolov8n", detect)


def test_planned_models_follow_the_mode_of_the_job():
    base = {"task": "image_classification", "limits": {"max_trials": 1}}
    assert estimate.planned_models(base, gpu=False, train_images=10) == ["vitb16r224"]  # the task default
    sweep = {**base, "limits": {"max_trials": 4},
             "search_space": [{"model_name": {"type": "choice", "values": ["resnet18", "resnet50"]}},
                              {"model_name": "resnet18"}]}
    assert estimate.planned_models(sweep, gpu=False, train_images=10) == ["resnet18", "resnet50"]
    auto = {**base, "limits": {"max_trials": 4}}
    assert estimate.planned_models(auto, gpu=False, train_images=10) == ["resnet18", "mobilenetv3_large_100"]



def test_a_job_lasts_its_trials_shared_out_over_the_concurrent_ones_at_most_its_timeout():
    minute = estimate.Estimate(60, 1)
    job = {"task": "image_classification", "limits": {"max_trials": 10, "max_concurrent_trials": 2}}
    timing = estimate.job_time(job, {"resnet18": minute, "resnet50": estimate.Estimate(180, 0)})
    assert timing is not None and timing.trial_s == (60, 180)
    assert timing.job_s == pytest.approx(5 * 120) and not timing.is_capped  # 5 rounds of the mean trial
    capped = estimate.job_time({**job, "limits": {**job["limits"], "timeout_minutes": 4}}, {"resnet18": minute})
    assert capped is not None and capped.job_s == 240 and capped.is_capped  # 300 s of trials
    per_trial_cap = {**job, "limits": {**job["limits"], "trial_timeout_minutes": 1}}
    timing = estimate.job_time(per_trial_cap, {"resnet50": estimate.Estimate(180, 0)})
    assert timing is not None and timing.trial_s == (60, 60)
    assert estimate.job_time(job, {}) is None


def test_a_model_that_never_ran_here_gets_a_rough_trial_of_its_epochs(engine):
    from storage.db import session_scope

    job = {"task": "image_classification", "limits": {"max_trials": 1},
           "training_parameters": {"model_name": "resnet18", "number_of_epochs": 3, "training_crop_size": 224}}
    work = estimate.workload(job, device="CPU, 2 cores", train_images=140, validation_images=0)
    with session_scope(engine) as session:
        (guess,) = estimate.per_model(session=session, doc=job, work=work).values()
    assert guess.trials == 0 and guess.seconds == pytest.approx(3 * 10.0 + estimate.TRIAL_START_S)
    finished_trial(engine, "resnet18", train_images=140, epochs=1, seconds=14)  # measured: 0.1 s per image-epoch
    with session_scope(engine) as session:
        (guess,) = estimate.per_model(session=session, doc=job, work=work).values()
    assert guess.trials == 1 and guess.seconds == pytest.approx(42 + estimate.TRIAL_START_S)  # epochs + start
    with session_scope(engine) as session:  # the worker saw its process take 19 s: 5 s beside the 14 s trial
        [trial] = trials.trained(session=session)
        trials.set_metrics(session=session, trial_id=trial.id, key="process", values={"seconds": 19.0})
    with session_scope(engine) as session:
        (guess,) = estimate.per_model(session=session, doc=job, work=work).values()
    assert guess.seconds == pytest.approx(42 + 5)


def test_submit_says_per_model_where_its_weights_come_from_before_training(cli, engine, shapes, tmp_path,
                                                                           monkeypatch):
    from core.zoo import weights as hub

    monkeypatch.setattr(hub, "reachable", lambda host: False)  # an offline machine, whatever this one is
    _cpu_worker(engine)
    code, stdout, stderr = cli("job", "submit", str(job_file(tmp_path, shapes, {"timeout_minutes": 60},
                                                             model_name="resnet18")), "--json")
    (weights,) = json.loads(stdout)["pretrained"]
    assert weights["model"] == "resnet18" and weights["state"] == "unavailable"
    assert "will train from scratch, expect much lower accuracy" in weights["sentence"]
    assert "resnet18:" in stderr and "kestrel weights import" in stderr


def test_a_tiled_job_works_through_each_image_and_its_tiles():
    job = {"task": "image_object_detection", "training_parameters": {"model_name": "yolov8n", "tile_grid_size": "3x2"}}
    work = estimate.workload(job, device="CPU, 2 cores", train_images=10, validation_images=4)
    assert (work.train_images, work.validation_images) == (70, 28)  # the whole image and its six tiles
    whole = estimate.workload({**job, "training_parameters": {"model_name": "yolov8n"}}, device="CPU, 2 cores",
                              train_images=10, validation_images=4)
    assert estimate.guess_epoch_s("yolov8n", work) == pytest.approx(7 * estimate.guess_epoch_s("yolov8n", whole))
