"""Whether a process still runs: the worker, the orchestrator and the endpoint runner ask it of the
processes they started or found recorded."""

from __future__ import annotations

from datetime import UTC, datetime

import psutil

# The clock that stamps a row and the kernel's process start time can differ by a tick or two.
CLOCK_SLACK_S = 2.0


def process_alive(pid: int | None, started_by: datetime | None = None) -> bool:
    """Whether process ``pid`` runs on this machine; a zombie (dead, not yet reaped) counts as gone.

    ``started_by`` is a time by which the recorded process had surely started (a row its process wrote,
    or written just after starting it). A process with that pid that started later is another one that
    reuses the number (after a reboot, or once pids wrap), so it does not count.
    """
    if not pid:
        return False
    try:
        process = psutil.Process(pid)
        if process.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            return False
        created = process.create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True
    if started_by is None:
        return True
    stamp = started_by if started_by.tzinfo else started_by.replace(tzinfo=UTC)
    return created <= stamp.timestamp() + CLOCK_SLACK_S
