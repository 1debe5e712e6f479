"""Trials (child runs): create, heartbeat, per-epoch metric points, finish, read back."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from sqlmodel import Session, col, select

from storage.tables import MetricPoint, Trial, utcnow

# A trial in one of these ended with a model: it can be registered, continued from or extended.
WITH_MODEL = ("completed", "early_terminated", "canceled")


def create(*, session: Session, model_name: str, params: dict[str, Any], primary_metric: str,
           job_id: int | None = None, number: int = 0) -> Trial:
    trial = Trial(job_id=job_id, number=number, model_name=model_name, params=params,
                  primary_metric=primary_metric)
    session.add(trial)
    session.flush()
    return trial


def start(*, session: Session, trial_id: int, device: str, pid: int, artifact_dir: str,
          software: dict[str, str], model_name: str | None = None, train_images: int = 0,
          epochs: int = 0) -> None:
    trial = _get(session, trial_id)
    trial.status, trial.device, trial.pid, trial.artifact_dir = "running", device, pid, artifact_dir
    if model_name is not None:
        trial.model_name = model_name
    trial.started_at = trial.heartbeat_at = utcnow()
    # The training set's size makes the trial's duration a speed that later estimates can scale; the
    # planned epochs say how far a running trial is.
    trial.metrics = {**trial.metrics, "software": software, "train_images": train_images, "epochs": epochs}
    session.add(trial)


def set_metrics(*, session: Session, trial_id: int, key: str, values: Mapping[str, Any]) -> None:
    """Keep ``values`` under ``metrics[key]`` (e.g. the test set's evaluation of a finished trial)."""
    trial = _get(session, trial_id)
    trial.metrics = {**trial.metrics, key: dict(values)}
    session.add(trial)


def gpu_peak_mb(*, session: Session, models: Sequence[str]) -> float | None:
    """The largest GPU memory a finished trial of ``models`` took (``metrics["memory"]``); None when none
    was measured (no such trial ran on a GPU here)."""
    if not models:
        return None
    rows = session.exec(select(Trial).where(col(Trial.model_name).in_(list(models)),
                                            col(Trial.status).in_(WITH_MODEL))).all()
    peaks = [float(t.metrics["memory"]["gpu_peak_mb"]) for t in rows
             if isinstance(t.metrics.get("memory"), dict) and t.metrics["memory"].get("gpu_peak_mb")]
    return max(peaks, default=None)


def append_metrics(*, session: Session, trial_id: int, step: int, metrics: Mapping[str, float]) -> None:
    """Record one evaluation's metrics; also the trial's epoch and heartbeat. An undefined value (NaN,
    e.g. an average precision with one class in a tiny validation set) is left out, as the metrics do."""
    session.add_all(MetricPoint(trial_id=trial_id, step=step, name=k, value=float(v))
                    for k, v in metrics.items() if math.isfinite(float(v)))
    trial = _get(session, trial_id)
    trial.epoch, trial.heartbeat_at = step, utcnow()
    session.add(trial)


def progress(*, session: Session, trial_id: int, epochs: float) -> None:
    """Where a running trial is, in epochs (fractional within the running one); also its heartbeat."""
    trial = _get(session, trial_id)
    trial.epoch_progress, trial.heartbeat_at = epochs, utcnow()
    session.add(trial)


def has_step(*, session: Session, trial_id: int, step: int) -> bool:
    """Whether the trial recorded an evaluation at ``step`` already."""
    query = select(MetricPoint.id).where(MetricPoint.trial_id == trial_id, MetricPoint.step == step).limit(1)
    return session.exec(query).first() is not None


def finish(*, session: Session, trial_id: int, status: str, metrics: dict[str, Any],
           primary_metric_value: float | None, stop_reason: str = "", error: str = "") -> Trial:
    trial = _get(session, trial_id)
    trial.status, trial.stop_reason, trial.error = status, stop_reason, error
    trial.metrics = {**trial.metrics, **metrics}
    finite = primary_metric_value is not None and math.isfinite(primary_metric_value)
    trial.primary_metric_value = primary_metric_value if finite else None
    trial.finished_at = trial.heartbeat_at = utcnow()
    session.add(trial)
    return trial


def trained(*, session: Session, limit: int = 200) -> list[Trial]:
    """The most recently finished trials that trained to the end or were stopped early, newest first."""
    query = (select(Trial).where(col(Trial.status).in_(("completed", "early_terminated")),
                                 col(Trial.finished_at).is_not(None), Trial.epoch > 0)
             .order_by(col(Trial.finished_at).desc()).limit(limit))
    return list(session.exec(query))


def get(*, session: Session, trial_id: int) -> Trial | None:
    return session.get(Trial, trial_id)


def for_job(*, session: Session, job_id: int) -> list[Trial]:
    return list(session.exec(select(Trial).where(Trial.job_id == job_id).order_by(col(Trial.number))))


def for_jobs(*, session: Session, job_ids: Collection[int]) -> dict[int, list[Trial]]:
    """The trials of each of ``job_ids`` (as :func:`for_job` orders them), in one query."""
    out: dict[int, list[Trial]] = {job_id: [] for job_id in job_ids}
    query = select(Trial).where(col(Trial.job_id).in_(list(job_ids))).order_by(col(Trial.job_id),
                                                                              col(Trial.number), col(Trial.id))
    for trial in session.exec(query):
        if trial.job_id is not None:
            out[trial.job_id].append(trial)
    return out


def history(*, session: Session, job_id: int, metric: str) -> dict[int, list[tuple[int, float]]]:
    """Every trial of a job with its reported ``(step, value)`` points of ``metric``, in step order."""
    query = (select(MetricPoint.trial_id, MetricPoint.step, MetricPoint.value)
             .join(Trial, col(Trial.id) == col(MetricPoint.trial_id))
             .where(Trial.job_id == job_id, MetricPoint.name == metric)
             .order_by(col(MetricPoint.step), col(MetricPoint.id)))
    out: dict[int, list[tuple[int, float]]] = {}
    for trial_id, step, value in session.exec(query):
        out.setdefault(trial_id, []).append((step, value))
    return out


def latest(*, session: Session, trial_ids: Collection[int]) -> dict[int, dict[str, float]]:
    """Each trial's most recent value of every metric it reported (what a running trial has shown so far)."""
    out: dict[int, dict[str, float]] = {trial_id: {} for trial_id in trial_ids}
    query = (select(MetricPoint.trial_id, MetricPoint.name, MetricPoint.value)
             .where(col(MetricPoint.trial_id).in_(list(trial_ids)))
             .order_by(col(MetricPoint.step), col(MetricPoint.id)))
    for trial_id, name, value in session.exec(query):
        out[trial_id][name] = value
    return out


def best(trials: list[Trial]) -> Trial | None:
    """The best scored trial by its primary metric (higher is better); ties go to the earlier finished."""
    scored = [t for t in trials if t.primary_metric_value is not None and t.finished_at is not None]
    if not scored:
        return None
    return min(scored, key=lambda t: (-(t.primary_metric_value or 0.0), t.finished_at, t.id))


def continue_curves(*, session: Session, source: int, target: int, up_to: int) -> None:
    """Give trial ``target`` the metric points of trial ``source`` up to step ``up_to`` (those it lacks), so
    that an extension's curves start where the trial it extends stopped."""
    have = set(session.exec(select(MetricPoint.step).where(MetricPoint.trial_id == target)))
    query = select(MetricPoint).where(MetricPoint.trial_id == source, MetricPoint.step <= up_to)
    session.add_all(MetricPoint(trial_id=target, step=p.step, name=p.name, value=p.value, created_at=p.created_at)
                    for p in session.exec(query).all() if p.step not in have)


def curves(*, session: Session, trial_id: int) -> dict[str, list[tuple[int, float]]]:
    """Each metric's (step, value) points in step order."""
    out: dict[str, list[tuple[int, float]]] = {}
    query = select(MetricPoint).where(MetricPoint.trial_id == trial_id).order_by(
        col(MetricPoint.step), col(MetricPoint.id))
    for point in session.exec(query):
        out.setdefault(point.name, []).append((point.step, point.value))
    return out


def _get(session: Session, trial_id: int) -> Trial:
    trial = session.get(Trial, trial_id)
    if trial is None:
        raise LookupError(f"trial {trial_id} does not exist")
    return trial
