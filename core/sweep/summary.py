"""A job as people, pages and ``--json`` see it: its state, its trials and its best child. Torch-free,
so the studio's pages can use it."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import yaml
from sqlmodel import Session

from core.base.errors import NotFound
from storage.repos import jobs, trials
from storage.tables import Job, Trial

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
        **_spec_facts(job),
        "best_trial_id": job.best_trial_id,
        "test_data": job.spec.get("test_data"),
        "test_metrics": next((_scalar_metrics(t.metrics.get("test")) for t in children
                              if t.id == job.best_trial_id and t.metrics.get("test")), None),
        "created_at": job.created_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "duration_s": duration_s(job.started_at, job.finished_at),
        "trials": [_trial(t) for t in children],
    }


def job_summaries(*, session: Session, limit: int = 200) -> list[dict[str, Any]]:
    """Every job (newest first) as :func:`job_summary` gives it, for the jobs list."""
    return [job_summary(session=session, job_id=j.id) for j in jobs.list_jobs(session=session, limit=limit)
            if j.id is not None]


def duration_s(started: datetime | None, finished: datetime | None) -> float | None:
    """Seconds from start to finish (to now while it runs); None before it starts."""
    if started is None:
        return None
    end = _aware(finished) if finished is not None else datetime.now(UTC)
    return max(0.0, (end - _aware(started)).total_seconds())


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; storage writes them in UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _spec_facts(job: Job) -> dict[str, Any]:
    """Task, primary metric and limits from an AutoML job's stored YAML; None for other kinds."""
    facts: dict[str, Any] = {"task": None, "primary_metric": None, "max_trials": None, "timeout_minutes": None}
    if job.kind != AUTOML or not isinstance(job.spec.get("yaml"), str):
        return facts
    try:
        doc = yaml.safe_load(job.spec["yaml"]) or {}
    except yaml.YAMLError:
        return facts
    limits = doc.get("limits") or {}
    return {"task": doc.get("task"), "primary_metric": doc.get("primary_metric"),
            "max_trials": limits.get("max_trials", 1), "timeout_minutes": limits.get("timeout_minutes")}


def _trial(t: Trial) -> dict[str, Any]:
    return {"trial_id": t.id, "number": t.number, "status": t.status, "model_name": t.model_name,
            "params": t.params, "primary_metric": t.primary_metric,
            "primary_metric_value": t.primary_metric_value, "metrics": _scalar_metrics(t.metrics.get("final")),
            "test_metrics": _scalar_metrics(t.metrics.get("test")),
            "epoch": t.epoch, "stop_reason": t.stop_reason, "error": t.error, "device": t.device,
            "artifact_dir": t.artifact_dir,
            "started_at": t.started_at.isoformat() if t.started_at else None,
            "finished_at": t.finished_at.isoformat() if t.finished_at else None,
            "duration_s": duration_s(t.started_at, t.finished_at)}


def _scalar_metrics(evaluation: dict[str, Any] | None) -> dict[str, float]:
    """An evaluation's single-number metrics (per-class tables and curves left out)."""
    return {k: float(v) for k, v in (evaluation or {}).items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))}
