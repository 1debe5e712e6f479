"""The worker runs queued jobs in its own process, records outcomes, and takes over the jobs of a
worker that died."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time

from core.base.tasks import Task
from core.data.samples import write_sample
from core.worker.queue import Worker
from storage.db import session_scope
from storage.repos import jobs, workers
from storage.repos.datasets import get_version


def _worker_once(settings) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    return subprocess.run([sys.executable, "-m", "core.cli", "worker", "--once"], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "KESTREL_HOME": str(settings.home)})


def test_worker_process_runs_import_jobs_and_survives_a_failing_one(settings, engine, tmp_path):
    good = write_sample(Task.DETECTION, tmp_path / "shapes", count=12, size=48)
    with session_scope(engine) as session:
        bad_id = jobs.enqueue(session=session, kind="import", name="bad",
                              spec={"path": str(tmp_path / "missing"), "name": "bad"}).id
        good_id = jobs.enqueue(session=session, kind="import", name="shapes",
                               spec={"path": str(good), "name": "shapes"}).id
    result = _worker_once(settings)
    assert result.returncode == 0, result.stderr
    assert "ran 2 job(s)" in result.stderr
    with session_scope(engine) as session:
        bad, ok = jobs.get(session=session, job_id=bad_id), jobs.get(session=session, job_id=good_id)
        assert bad.status == "failed" and "does not exist" in bad.error
        assert ok.status == "completed" and ok.progress == 1.0
        assert ok.message.startswith("imported shapes:1 (12 images")
        assert get_version(session=session, name="shapes").task == "image_object_detection"
        assert workers.live(session=session, grace_s=600) == []  # it stopped cleanly: not listed as alive


def test_a_job_left_running_by_a_dead_worker_is_run_again(settings, engine, tmp_path):
    data = write_sample(Task.CLASSIFICATION, tmp_path / "shapes", count=12, size=48)
    with session_scope(engine) as session:
        job_id = jobs.enqueue(session=session, kind="import", name="s", spec={"path": str(data), "name": "s"}).id
        jobs.claim_next(session=session, worker_id="worker-killed")  # claimed, then the worker died
    result = _worker_once(settings)
    assert result.returncode == 0, result.stderr
    assert f"job {job_id} lost its worker; queued again" in result.stderr
    with session_scope(engine) as session:
        assert jobs.get(session=session, job_id=job_id).status == "completed"


def test_an_import_removes_its_staged_upload_but_never_a_folder_of_the_user(settings, engine, tmp_path):
    own = write_sample(Task.CLASSIFICATION, tmp_path / "mine", count=3, size=32)
    staged_ok, staged_bad = settings.staging_dir / "upload-ok", settings.staging_dir / "upload-bad"
    shutil.copytree(own.parent, staged_ok / "data")
    (staged_bad / "data").mkdir(parents=True)
    (staged_bad / "data" / "notes.txt").write_text("not a dataset")
    with session_scope(engine) as session:
        for name, path in [("ok", staged_ok / "data"), ("bad", staged_bad / "data"), ("mine", own.parent)]:
            jobs.enqueue(session=session, kind="import", name=name, spec={"path": str(path), "name": name})
    assert Worker(settings, engine).run(once=True) == 3
    with session_scope(engine) as session:
        assert [j.status for j in sorted(jobs.list_jobs(session=session, kind="import"), key=lambda j: j.id)] \
            == ["completed", "failed", "completed"]
    assert list(settings.staging_dir.iterdir()) == []  # after success and after failure alike
    assert sorted(p.name for p in own.parent.rglob("*") if p.is_file())[0] == "annotations.jsonl"
    assert len(list(own.parent.rglob("*.png"))) == 3  # a folder on this machine is the user's: it stays


def test_a_starting_worker_sweeps_day_old_uploads_that_no_pending_job_reads(settings, engine, tmp_path):
    abandoned, pending, recent = (settings.staging_dir / name for name in ("abandoned", "pending", "recent"))
    for folder in (abandoned, pending, recent):
        (folder / "data").mkdir(parents=True)
        (folder / "data" / "a.png").write_bytes(b"staged")
    two_days_ago = time.time() - 2 * 24 * 3600
    for folder in (abandoned, pending):
        os.utime(folder, (two_days_ago, two_days_ago))
    with session_scope(engine) as session:  # a kind no handler takes, so it stays queued
        jobs.enqueue(session=session, kind="later", name="waits", spec={"path": str(pending / "data")})
    Worker(settings, engine).run(once=True)
    assert not abandoned.exists() and pending.exists() and recent.exists()


def test_the_quick_lane_imports_while_training_waits_for_its_own_lane(settings, engine, tmp_path):
    data = write_sample(Task.CLASSIFICATION, tmp_path / "shapes", count=12, size=48)
    with session_scope(engine) as session:
        orphan = jobs.enqueue(session=session, kind="automl", name="lost", spec={"dataset": "x", "version": 1}).id
        jobs.claim_next(session=session, worker_id="worker-killed", kinds=("automl",))
        training = jobs.enqueue(session=session, kind="automl", name="sweep", spec={"dataset": "x", "version": 1}).id
        importing = jobs.enqueue(session=session, kind="import", name="s", spec={"path": str(data), "name": "s"}).id
    assert Worker(settings, engine, lane="quick").run(once=True) == 1
    with session_scope(engine) as session:
        assert jobs.get(session=session, job_id=importing).status == "completed"
        assert jobs.get(session=session, job_id=training).status == "queued"
        assert jobs.get(session=session, job_id=orphan).status == "running"  # the training lane's to take back



def test_a_running_worker_is_listed_with_its_lane_and_device_until_it_stops(settings, engine):
    import threading

    runner = Worker(settings, engine, lane="quick")
    thread = threading.Thread(target=runner.run, kwargs={"poll_s": 0.1})
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with session_scope(engine) as session:
                listed = workers.live(session=session, grace_s=600)
            if listed:
                break
            time.sleep(0.1)
        [state] = listed
        assert state.lane == "quick" and re.fullmatch(r"CPU, \d+ cores|GPU: .+", state.device)  # the sidebar's
        assert workers.serving(listed, "automl") == [] and workers.serving(listed, "import") == [state]
    finally:
        runner.stopping.set()
        thread.join(timeout=30)
    with session_scope(engine) as session:
        assert workers.live(session=session, grace_s=600) == []
