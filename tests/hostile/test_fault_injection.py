"""Fault injection (issue 14): a small sweep whose worker and trials are killed with SIGKILL at seeded
random points, then its best model served by an endpoint whose server is killed while clients score.
Whatever is killed, no finished epoch is lost, no trial runs twice at once or redoes a recorded epoch,
the job ends, the endpoint says it is down and comes back, and the database opens with counts that add
up. Loopback only; bounded by the job's size and the test's waits."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import yaml
from factories import bright_dark_set
from sqlalchemy import text
from sqlmodel import select

from storage.db import session_scope
from storage.repos import jobs, trials
from storage.tables import Job, MetricPoint, Trial

SEED = 14
TRIALS, EPOCHS = 2, 3
TINY = {"number_of_epochs": EPOCHS, "training_crop_size": 32, "validation_crop_size": 32,
        "validation_resize_size": 32, "training_batch_size": 8, "early_stopping": False}


def _job_file(folder: Path) -> Path:
    data = bright_dark_set(folder / "data", count=24)
    doc = {"type": "automl", "task": "image_classification", "primary_metric": "accuracy",
           "training_data": {"path": str(data), "type": "uri_file"},
           "limits": {"max_trials": TRIALS, "max_concurrent_trials": 1},
           "sweep": {"sampling_algorithm": "grid"}, "training_parameters": TINY,
           "search_space": [{"model_name": {"type": "choice", "values": ["resnet18"]},
                             "learning_rate": {"type": "choice", "values": [0.001, 0.002]}}]}
    path = folder / "job.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _worker(settings) -> subprocess.Popen:  # type: ignore[no-untyped-def]
    return subprocess.Popen([sys.executable, "-m", "core.cli", "worker"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "KESTREL_HOME": str(settings.home)})


def _points(engine) -> dict[tuple[int, int, str], float]:  # type: ignore[no-untyped-def]
    with session_scope(engine) as session:
        return {(p.trial_id, p.step, p.name): p.value for p in session.exec(select(MetricPoint))}


def _epochs(engine, job_id: int) -> int:  # type: ignore[no-untyped-def]
    with session_scope(engine) as session:
        return sum(t.epoch for t in trials.for_job(session=session, job_id=job_id))


def _training_trial(engine, job_id: int) -> Trial | None:  # type: ignore[no-untyped-def]
    """A running trial with an epoch still to train: one past its last epoch may record its result
    before a kill lands, and then it has rightly completed."""
    with session_scope(engine) as session:
        return next((t for t in trials.for_job(session=session, job_id=job_id)
                     if t.status == "running" and t.epoch < EPOCHS), None)


def _status(engine, job_id: int) -> str:  # type: ignore[no-untyped-def]
    with session_scope(engine) as session:
        return session.get(Job, job_id).status


def _wait(check, timeout: float = 300.0):  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if value := check():
            return value
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_a_sweep_killed_at_random_points_keeps_every_epoch_and_ends(cli, settings, engine, tmp_path):
    rng = random.Random(SEED)
    job_id = cli.json("job", "submit", str(_job_file(tmp_path)))["job_id"]
    worker, kept, target, killed = _worker(settings), {}, 0, []
    try:
        for victim in rng.sample(["worker", "trial", "worker"], 3):
            target += 1  # each fault after one more epoch is done: progress between them
            _wait(lambda t=target: _epochs(engine, job_id) >= t)
            time.sleep(rng.uniform(0.0, 1.5))  # anywhere in the next epoch: training, evaluating, saving
            kept |= _points(engine)
            if victim == "worker":
                worker.send_signal(signal.SIGKILL)
                worker.wait(timeout=30)
                worker = _worker(settings)
            else:  # between two trials there is none to kill: the next one
                trial = _wait(lambda: _training_trial(engine, job_id))
                os.kill(trial.pid, signal.SIGKILL)
                killed.append(trial.id)
        _wait(lambda: _status(engine, job_id) in jobs.FINAL, timeout=600)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)

    with session_scope(engine) as session:
        job = session.get(Job, job_id)
        rows = session.exec(select(Trial).where(Trial.job_id == job_id)).all()
        assert session.execute(text("PRAGMA integrity_check")).scalar() == "ok"
    assert job.status == "completed", job.error
    assert len(rows) == TRIALS and job.progress == 1.0  # the grid's points, each once
    assert len(killed) == 1
    assert len({t.params["learning_rate"] for t in rows}) == TRIALS
    now = _points(engine)
    assert {key: now.get(key) for key in kept} == kept  # no finished epoch lost or rewritten
    for t in rows:
        with session_scope(engine) as session:
            curve = trials.curves(session=session, trial_id=t.id).get("accuracy", [])
        steps = [step for step, _ in curve]
        assert steps == list(range(1, len(steps) + 1)), (t.id, steps)  # each epoch recorded once, in order
        if t.id in killed:
            assert t.status == "failed" and "was killed (SIGKILL" in t.error
        else:
            assert t.status == "completed" and steps[-1] == EPOCHS and t.primary_metric_value is not None
        assert t.metrics.get("relaunches", 0) <= 2  # once per worker killed while it ran

    _kill_the_endpoint_while_it_scores(cli, engine, job_id, rng, tmp_path / "data" / "images" / "1.png")


def _kill_the_endpoint_while_it_scores(cli, engine, job_id: int, rng: random.Random,  # type: ignore[no-untyped-def]
                                       image: Path) -> None:
    cli.json("model", "register", "--job", str(job_id), "--name", "m")
    cli.json("endpoint", "create", "ep")
    cli.json("deployment", "create", "--endpoint", "ep", "--name", "blue", "--model", "m:1")
    key = cli.json("endpoint", "keys", "ep")["primary_key"]
    before = cli.json("endpoint", "show", "ep")
    answers: list[object] = []

    def score() -> object:
        try:
            answer = httpx.post(before["scoring_uri"], content=image.read_bytes(), timeout=30,
                                headers={"Authorization": f"Bearer {key}", "Content-Type": "application/octet-stream"})
            return answer.status_code, answer.json()
        except httpx.TransportError as exc:  # the server is gone: the client sees it, not a wrong answer
            return type(exc).__name__

    clients = threading.Thread(target=lambda: answers.extend(score() for _ in range(40)))
    clients.start()
    time.sleep(rng.uniform(0.2, 1.0))
    os.kill(before["pid"], signal.SIGKILL)
    clients.join(timeout=120)
    answered = [a for a in answers if isinstance(a, tuple)]
    assert answered and all(code == 200 and body["labels"] == ["bright", "dark"] for code, body in answered), answers
    down = cli.json("endpoint", "show", "ep")
    assert down["state"] == "down" and "kestrel endpoint start ep" in down["hint"]
    again = cli.json("endpoint", "start", "ep")
    assert again["state"] == "ready" and again["pid"] != before["pid"]
    assert score()[0] == 200
    with session_scope(engine) as session:
        assert session.execute(text("PRAGMA integrity_check")).scalar() == "ok"
        counts = [session.execute(text(f"SELECT count(*) FROM {table}")).scalar()
                  for table in ("endpoint", "deployment", "registeredmodel", "modelversion")]
    assert counts == [1, 1, 1, 1]
    cli.json("endpoint", "delete", "ep")
