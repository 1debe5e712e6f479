"""Worker processes: who is alive (by heartbeat) and what each is doing."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import Session, select

from storage.tables import WorkerState, utcnow

# The kinds of job each lane takes. The studio runs a training lane and a quick lane, so an import or a
# scoring never waits behind a training trial; `kestrel worker` alone serves all.
LANES: dict[str, tuple[str, ...]] = {"training": ("automl",), "quick": ("import", "score", "export"),
                                     "all": ("automl", "import", "score", "export")}
LANE_TITLES = {"training": "Training", "quick": "Imports & scoring", "all": "Worker"}


def register(*, session: Session, worker_id: str, pid: int, device: str, lane: str = "all") -> None:
    state = session.exec(select(WorkerState).where(WorkerState.worker_id == worker_id)).first()
    state = state or WorkerState(worker_id=worker_id, pid=pid)
    state.pid, state.device, state.current_job_id, state.heartbeat_at = pid, device, None, utcnow()
    state.lane = lane
    session.add(state)


def heartbeat(*, session: Session, worker_id: str, current_job_id: int | None) -> None:
    state = session.exec(select(WorkerState).where(WorkerState.worker_id == worker_id)).first()
    if state is not None:
        state.heartbeat_at, state.current_job_id = utcnow(), current_job_id
        session.add(state)


def retire(*, session: Session, worker_id: str) -> None:
    """A worker that stops cleanly leaves the list at once (a killed one drops out when its heartbeat stops)."""
    state = session.exec(select(WorkerState).where(WorkerState.worker_id == worker_id)).first()
    if state is not None:
        session.delete(state)


def live(*, session: Session, grace_s: float) -> list[WorkerState]:
    """Workers whose last heartbeat is younger than ``grace_s`` seconds."""
    since = utcnow() - timedelta(seconds=grace_s)
    return [w for w in session.exec(select(WorkerState)) if _aware(w.heartbeat_at) >= since]


def serving(workers: list[WorkerState], kind: str) -> list[WorkerState]:
    """Those of ``workers`` whose lane takes jobs of ``kind``."""
    return [w for w in workers if kind in LANES.get(w.lane, LANES["all"])]


def _aware(moment):  # type: ignore[no-untyped-def]
    # SQLite hands datetimes back without a zone; they were written in UTC.
    from datetime import UTC

    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
