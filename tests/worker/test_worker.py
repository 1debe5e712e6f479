"""The worker runs queued jobs in its own process, records outcomes, and takes over the jobs of a
worker that died."""

from __future__ import annotations

import os
import subprocess
import sys

from core.data.samples import write_sample
from core.tasks import Task
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
        assert [w.worker_id for w in workers.live(session=session, grace_s=600)]


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
