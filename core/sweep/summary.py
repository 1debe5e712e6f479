"""A job as people, pages and ``--json`` see it: its state, its trials and its best child. Torch-free,
so the studio's pages can use it."""

from __future__ import annotations

import functools
import math
from datetime import UTC, datetime
from typing import Any

import yaml
from sqlmodel import Session

from core.base.errors import NotFound
from storage.repos import jobs, trials
from storage.tables import Job, Trial

AUTOML = "automl"


PAGE_SIZE = 50
# What the jobs list shows of an AutoML job's file; stored with the job when it is submitted.
FACTS = ("task", "primary_metric", "max_trials", "timeout_minutes", "predicted_s", "predicted_range_s")


def job_summary(*, session: Session, job_id: int) -> dict[str, Any]:
    """The job, its trials (leaderboard order: as started) and its best child."""
    job = jobs.get(session=session, job_id=job_id)
    if job is None:
        raise NotFound(f"job {job_id} does not exist; `kestrel job list` shows the jobs")
    children = trials.for_job(session=session, job_id=job_id)
    running = [t.id for t in children if t.status == "running" and t.id is not None]
    return _summary(job, children, trials.latest(session=session, trial_ids=running) if running else {})


def job_summaries(*, session: Session, limit: int = PAGE_SIZE, offset: int = 0) -> list[dict[str, Any]]:
    """A page of jobs (newest first) as :func:`job_summary` gives each, for the jobs list: two queries
    (the jobs, then all their trials), however many jobs the page holds."""
    page = jobs.list_jobs(session=session, limit=limit, offset=offset)
    children = trials.for_jobs(session=session, job_ids=[j.id for j in page if j.id is not None])
    return [_summary(j, children.get(j.id or 0, [])) for j in page]


def _summary(job: Job, children: list[Trial], latest: dict[int, dict[str, float]] | None = None) -> dict[str, Any]:
    facts = job_facts(job)
    return {
        "job_id": job.id, "name": job.name, "kind": job.kind, "status": job.status,
        "progress": _progress(job, children, facts["max_trials"]), "message": job.message, "error": job.error,
        "dataset": f"{job.spec.get('dataset')}:{job.spec.get('version')}" if job.kind == AUTOML else None,
        **facts,
        "best_trial_id": job.best_trial_id,
        "test_data": job.spec.get("test_data"),
        "test_metrics": next((_scalar_metrics(t.metrics.get("test")) for t in children
                              if t.id == job.best_trial_id and t.metrics.get("test")), None),
        "created_at": job.created_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "duration_s": duration_s(job.started_at, job.finished_at),
        "trials": _with_pareto([_trial(t, (latest or {}).get(t.id or 0, {})) for t in children]),
    }


def pareto(points: dict[int, tuple[float, float]]) -> set[int]:
    """The keys of ``points`` (``key: (metric, latency)``; a higher metric and a lower latency are better)
    that no other point beats on both."""
    return {key for key, (metric, latency) in points.items()
            if not any(m >= metric and t <= latency and (m, t) != (metric, latency) for m, t in points.values())}


def _with_pareto(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each trial's ``pareto`` flag: on the frontier of primary metric against batch-1 latency (None for a
    trial without both)."""
    points = {r["trial_id"]: (r["primary_metric_value"], r["latency"]["batch1_ms"]) for r in rows
              if r["primary_metric_value"] is not None and r["latency"]}
    front = pareto(points)
    return [{**r, "pareto": (r["trial_id"] in front) if r["trial_id"] in points else None} for r in rows]


def _progress(job: Job, children: list[Trial], max_trials: int | None) -> float:
    """How far the job is: what its worker said, or more while trials are part-way through their epochs
    (the worker moves a sweep's fraction only when a trial ends)."""
    if job.status != "running" or not max_trials:
        return job.progress
    done = sum(t.status not in ("queued", "running") for t in children)
    partial = sum(min(1.0, t.epoch_progress / planned) for t in children
                  if t.status == "running" and (planned := int(t.metrics.get("epochs") or 0)))
    return max(job.progress, min(1.0, (done + partial) / max_trials))


def job_facts(job: Job) -> dict[str, Any]:
    """An AutoML job's task, primary metric and limits (None for other kinds): as stored at submission,
    else (a job queued before they were stored) read from its YAML."""
    if job.kind != AUTOML:
        return dict.fromkeys(FACTS)
    stored = job.spec.get("facts")
    if isinstance(stored, dict):
        return {key: stored.get(key) for key in FACTS}
    text = job.spec.get("yaml")
    return dict.fromkeys(FACTS) | (dict(_yaml_facts(text)) if isinstance(text, str) else {})


def duration_s(started: datetime | None, finished: datetime | None) -> float | None:
    """Seconds from start to finish (to now while it runs); None before it starts."""
    if started is None:
        return None
    end = _aware(finished) if finished is not None else datetime.now(UTC)
    return max(0.0, (end - _aware(started)).total_seconds())


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; storage writes them in UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@functools.lru_cache(maxsize=1024)
def _yaml_facts(text: str) -> tuple[tuple[str, Any], ...]:
    # Parsed once per process: a job's YAML never changes, and parsing it was most of a refresh's time.
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        doc = None
    if not isinstance(doc, dict):
        return tuple((key, None) for key in FACTS)
    limits = doc.get("limits") if isinstance(doc.get("limits"), dict) else {}
    return (("task", doc.get("task")), ("primary_metric", doc.get("primary_metric")),
            ("max_trials", limits.get("max_trials", 1)), ("timeout_minutes", limits.get("timeout_minutes")))


def _trial(t: Trial, latest: dict[str, float]) -> dict[str, Any]:
    """A trial as the leaderboard and ``--json`` show it; a running one with its epoch so far (fractional),
    its planned epochs and the metrics it last reported (``latest_metrics``); an extension with the trial and
    epoch it goes on from (``extends``), a finished trial with the epoch it can be extended from
    (``resume_epoch``)."""
    return {"trial_id": t.id, "number": t.number, "status": t.status, "model_name": t.model_name,
            "params": t.params, "primary_metric": t.primary_metric,
            "primary_metric_value": t.primary_metric_value, "metrics": _scalar_metrics(t.metrics.get("final")),
            "test_metrics": _scalar_metrics(t.metrics.get("test")),
            "epoch": t.epoch, "epoch_progress": t.epoch_progress, "planned_epochs": t.metrics.get("epochs"),
            "latest_metrics": latest, "latency": t.metrics.get("latency"),
            "extends": (t.metrics.get("manifest") or {}).get("extends"),
            "resume_epoch": (t.metrics.get("resume") or {}).get("epoch"),
            "stop_reason": t.stop_reason, "error": t.error, "device": t.device,
            # Where its process ran (the node and its share of it) and how many times it was started again.
            "executor": (t.metrics.get("process") or {}).get("executor"),
            "ran_on": (t.metrics.get("process") or {}).get("where"), "relaunches": t.metrics.get("relaunches", 0),
            "artifact_dir": t.artifact_dir,
            "started_at": t.started_at.isoformat() if t.started_at else None,
            "finished_at": t.finished_at.isoformat() if t.finished_at else None,
            "duration_s": duration_s(t.started_at, t.finished_at)}


def _scalar_metrics(evaluation: dict[str, Any] | None) -> dict[str, float]:
    """An evaluation's single-number metrics (per-class tables and curves left out)."""
    return {k: float(v) for k, v in (evaluation or {}).items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))}
