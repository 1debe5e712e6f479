"""The queue of long work: enqueue, claim (compare-and-set, safe across processes), cancel, finish."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, update
from sqlmodel import Session, col, select

from storage.tables import Job, Trial, utcnow

ACTIVE = ("queued", "running")
FINAL = ("completed", "failed", "canceled")


def enqueue(*, session: Session, kind: str, name: str, spec: dict[str, Any]) -> Job:
    job = Job(kind=kind, name=name, spec=spec, status="queued")
    session.add(job)
    session.flush()
    return job


def claim_next(*, session: Session, worker_id: str, kinds: tuple[str, ...] | None = None) -> Job | None:
    """The oldest queued job, now running under ``worker_id``; None when there is none.

    The claim is an UPDATE … WHERE status = 'queued': of two workers racing for one job, the
    database lets exactly one change the row (on SQLite and on Postgres alike).
    """
    query = select(Job.id).where(Job.status == "queued").order_by(col(Job.id))
    if kinds:
        query = query.where(col(Job.kind).in_(kinds))
    for job_id in session.exec(query.limit(10)).all():
        claimed = session.execute(
            update(Job).where(col(Job.id) == job_id, col(Job.status) == "queued")
            .values(status="running", worker_id=worker_id, started_at=utcnow()))
        if claimed.rowcount == 1:  # type: ignore[attr-defined]
            session.flush()
            job = session.get(Job, job_id)
            if job is not None:
                session.refresh(job)
            return job
    return None


def request_cancel(*, session: Session, job_id: int) -> Job:
    """Ask for a job to stop; a queued job is canceled at once, a running one by its worker."""
    job = _get(session, job_id)
    if job.status == "queued":
        job.status, job.finished_at = "canceled", utcnow()
    elif job.status == "running":
        job.cancel_requested = True
    session.add(job)
    return job


def is_cancel_requested(*, session: Session, job_id: int) -> bool:
    return bool(session.exec(select(Job.cancel_requested).where(Job.id == job_id)).first())


def progress(*, session: Session, job_id: int, fraction: float, message: str = "",
             best_trial_id: int | None = None) -> None:
    job = _get(session, job_id)
    job.progress, job.message = max(0.0, min(1.0, fraction)), message
    if best_trial_id is not None:
        job.best_trial_id = best_trial_id
    session.add(job)


def finish(*, session: Session, job_id: int, status: str, error: str = "",
           best_trial_id: int | None = None) -> Job:
    if status not in FINAL:
        raise ValueError(f"a job finishes as one of {FINAL}, not {status!r}")
    job = _get(session, job_id)
    job.status, job.error, job.finished_at = status, error, utcnow()
    if best_trial_id is not None:
        job.best_trial_id = best_trial_id
    session.add(job)
    return job


def requeue_orphans(*, session: Session, live_workers: set[str], max_crashes: int,
                    kinds: tuple[str, ...] | None = None) -> tuple[list[int], list[int]]:
    """Jobs left running by a worker that is gone go back to the queue, unless the worker died
    ``max_crashes`` times while running one with no progress in between: such a job (a sweep too big
    for memory, an input that kills the process) would take every worker down again, so it fails.
    ``kinds`` limits it to those kinds of job. Returns the ids (queued again, failed)."""
    queued, failed = [], []
    query = select(Job).where(Job.status == "running")
    if kinds:
        query = query.where(col(Job.kind).in_(kinds))
    for job in session.exec(query).all():
        if job.worker_id in live_workers or job.id is None:
            continue
        reached = _reached(session, job)
        job.crashes = job.crashes + 1 if reached <= job.crash_progress else 1
        job.crash_progress = reached
        if job.crashes >= max_crashes:
            job.status, job.finished_at = "failed", utcnow()
            job.error = (f"the worker ended {job.crashes} times while running this job, with no progress in "
                         "between (killed, or out of memory); it is not queued again. Check the worker's log "
                         "and the job's settings, then submit it again")
            failed.append(job.id)
        else:
            job.status, job.worker_id = "queued", None
            queued.append(job.id)
        session.add(job)
    return queued, failed


def _reached(session: Session, job: Job) -> float:
    """How far a job has got: its progress, plus the epochs its trials finished (a sweep's progress
    moves only when a trial ends, yet each epoch is kept)."""
    epochs = session.exec(select(func.coalesce(func.sum(Trial.epoch), 0)).where(Trial.job_id == job.id)).one()
    return job.progress + float(epochs)


def get(*, session: Session, job_id: int) -> Job | None:
    return session.get(Job, job_id)


def list_jobs(*, session: Session, kind: str | None = None, statuses: tuple[str, ...] = (),
              limit: int = 200, offset: int = 0) -> list[Job]:
    """Jobs newest first, ``limit`` of them from ``offset`` on."""
    query = select(Job).order_by(col(Job.id).desc()).offset(offset).limit(limit)
    if kind:
        query = query.where(Job.kind == kind)
    if statuses:
        query = query.where(col(Job.status).in_(statuses))
    return list(session.exec(query))


def count(*, session: Session) -> int:
    return session.exec(select(func.count()).select_from(Job)).one()


def names(*, session: Session, limit: int, offset: int = 0, also: int | None = None) -> list[tuple[int, str]]:
    """``(id, name)`` of a page of jobs (newest first), and of job ``also`` wherever it is: what a job
    picker offers, without the jobs' specs."""
    shown = select(Job.id).order_by(col(Job.id).desc()).offset(offset).limit(limit)
    query = select(Job.id, Job.name).where(or_(col(Job.id).in_(shown.scalar_subquery()), Job.id == also))
    return [(job_id, name) for job_id, name in session.exec(query.order_by(col(Job.id).desc()))]


@dataclass(frozen=True)
class ListState:
    """A fingerprint of a page of the jobs list: the jobs' count and newest id, and per shown job what the
    list tells of it, its trials' count and their latest write (a trial beats its heartbeat on each)."""

    total: int
    newest: int | None
    rows: tuple[tuple[Any, ...], ...]

    @property
    def is_running(self) -> bool:
        """Whether a shown job runs (its duration moves even when nothing is written)."""
        return any(row[2] == "running" for row in self.rows)


def list_state(*, session: Session, limit: int, offset: int = 0) -> ListState:
    """The :class:`ListState` of the jobs list's page at ``offset``, in two small queries; a page whose
    state has not changed need not be read again."""
    total, newest = session.exec(select(func.count(), func.max(Job.id)).select_from(Job)).one()
    shown = (select(Job.id, Job.name, Job.status, Job.progress, Job.message, Job.best_trial_id, Job.started_at,
                    Job.finished_at).order_by(col(Job.id).desc()).offset(offset).limit(limit).subquery())
    query = (select(*shown.c, func.count(col(Trial.id)), func.max(Trial.heartbeat_at), func.max(Trial.finished_at))
             .select_from(shown).outerjoin(Trial, col(Trial.job_id) == shown.c.id)
             .group_by(*shown.c).order_by(shown.c.id.desc()))
    return ListState(total, newest, tuple(tuple(row) for row in session.exec(query)))


def _get(session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise LookupError(f"job {job_id} does not exist")
    return job
