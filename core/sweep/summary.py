"""A job as people, pages and ``--json`` see it: its state, its trials and its best child. Torch-free,
so the studio's pages can use it."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from core.errors import NotFound
from storage.repos import jobs, trials

AUTOML = "automl"


def job_summary(*, session: Session, job_id: int) -> dict[str, Any]:
    """The job, its trials (leaderboard order: as started) and its best child."""
    job = jobs.get(session=session, job_id=job_id)
    if job is None:
        raise NotFound(f"job {job_id} does not exist; `kestrel job list` shows the jobs")
    children = trials.for_job(session=session, job_id=job_id)
    return {
        "job_id": job.id, "name": job.name, "kind": job.kind, "status": job.status,
        "progress": job.progress, "message": job.message, "error": job.error,
        "dataset": f"{job.spec.get('dataset')}:{job.spec.get('version')}" if job.kind == AUTOML else None,
        "best_trial_id": job.best_trial_id,
        "created_at": job.created_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "trials": [{"trial_id": t.id, "number": t.number, "status": t.status, "model_name": t.model_name,
                    "params": t.params, "primary_metric": t.primary_metric,
                    "primary_metric_value": t.primary_metric_value, "epoch": t.epoch,
                    "stop_reason": t.stop_reason, "error": t.error, "device": t.device,
                    "artifact_dir": t.artifact_dir} for t in children],
    }
