"""Faults the worker meets (issue 14): a job that kills every worker that claims it, a process id
reused by another program, a trial that prints without end. Each is survived with a message, and
the jobs and data from before are left as they were."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import timedelta

from sqlmodel import select

from core.base.logfile import copy_output
from core.base.processes import process_alive
from core.base.tasks import Task
from core.data.samples import write_sample
from core.worker.queue import Worker
from storage.db import session_scope
from storage.repos import jobs
from storage.tables import Job, Trial, WorkerState, utcnow


def _crash_while_running(engine, job_id: int, worker_id: str) -> None:  # type: ignore[no-untyped-def]
    """``job_id`` claimed by a worker that then died (its row remains, its heartbeat stopped)."""
    with session_scope(engine) as session:
        job = session.get(Job, job_id)
        job.status, job.worker_id = "running", worker_id
        session.add(job)


def test_a_job_that_kills_its_worker_twice_without_progress_fails_and_the_queue_moves_on(settings, engine,
                                                                                          tmp_path):
    data = write_sample(Task.CLASSIFICATION, tmp_path / "shapes", count=6, size=32)
    with session_scope(engine) as session:
        # A kind no handler takes, so that between the simulated crashes no worker runs it.
        poison = jobs.enqueue(session=session, kind="later", name="poison", spec={}).id
        moving = jobs.enqueue(session=session, kind="later", name="moving", spec={}).id
        later = jobs.enqueue(session=session, kind="import", name="later",
                             spec={"path": str(data), "name": "later"}).id
    _crash_while_running(engine, poison, "worker-gone-1")
    _crash_while_running(engine, moving, "worker-gone-1")
    Worker(settings, engine).run(once=True)  # first crash: both are queued again
    with session_scope(engine) as session:
        assert [session.get(Job, i).status for i in (poison, moving)] == ["queued", "queued"]
        session.get(Job, moving).progress = 0.4  # this one got further before the next crash
    _crash_while_running(engine, poison, "worker-gone-2")
    _crash_while_running(engine, moving, "worker-gone-2")
    assert Worker(settings, engine).run(once=True) == 0  # the import ran at the first start already
    with session_scope(engine) as session:
        failed, requeued = session.get(Job, poison), session.get(Job, moving)
        assert failed.status == "failed" and failed.finished_at is not None
        assert failed.error.startswith("the worker ended 2 times while running this job, with no progress in "
                                       "between (killed, or out of memory); it is not queued again")
        assert requeued.status == "queued" and requeued.crashes == 1  # progress in between: a fresh count
        assert session.get(Job, later).status == "completed"


def test_a_sweep_whose_trials_finish_epochs_between_crashes_is_not_taken_for_poison(settings, engine):
    with session_scope(engine) as session:
        job_id = jobs.enqueue(session=session, kind="later", name="sweep", spec={}).id
    for crash, epochs in enumerate((1, 2, 3)):  # a trial finishes an epoch, then the machine goes down
        _crash_while_running(engine, job_id, f"worker-gone-{crash}")
        with session_scope(engine) as session:
            session.merge(Trial(id=1, job_id=job_id, status="running", epoch=epochs))
        Worker(settings, engine).run(once=True)
        with session_scope(engine) as session:
            assert session.get(Job, job_id).status == "queued"


def test_a_worker_whose_pid_now_belongs_to_another_program_is_taken_for_dead(settings, engine):
    with session_scope(engine) as session:
        job_id = jobs.enqueue(session=session, kind="later", name="orphan", spec={}).id
    stamp = utcnow() - timedelta(seconds=10)  # its last heartbeat, within the grace period
    time.sleep(0.1)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # started after that stamp
    try:
        with session_scope(engine) as session:
            session.add(WorkerState(worker_id="worker-old", pid=other.pid, heartbeat_at=stamp))
        _crash_while_running(engine, job_id, "worker-old")
        assert process_alive(other.pid)  # the number is in use ...
        assert not process_alive(other.pid, stamp)  # ... by a program that started after the worker's stamp
        assert process_alive(other.pid, utcnow())
        Worker(settings, engine).run(once=True)
        with session_scope(engine) as session:
            assert session.get(Job, job_id).status == "queued"
            assert session.exec(select(WorkerState).where(WorkerState.worker_id == "worker-old")).one()
    finally:
        other.kill()
        other.wait()
    assert not process_alive(other.pid)


def test_a_trial_that_prints_without_end_keeps_at_most_twice_the_log_limit_without_terminal_codes(tmp_path):
    limit = 64 * 1024
    printer = subprocess.Popen(
        [sys.executable, "-c", "for i in range(20000): print(f'\\x1b[32mepoch {i}\\x1b[0m loss 0.1234567890')"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert printer.stdout is not None
    copying = copy_output(printer.stdout, tmp_path / "console.log", limit)
    assert printer.wait(timeout=60) == 0
    copying.join(timeout=60)
    current, before = tmp_path / "console.log", tmp_path / "console.log.1"
    assert 0 < current.stat().st_size <= limit and 0 < before.stat().st_size <= limit
    text = before.read_text() + current.read_text()
    assert "\x1b" not in text
    assert text.splitlines()[-1] == "epoch 19999 loss 0.1234567890"  # the newest lines are kept, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["console.log", "console.log.1"]
