"""Why a trial stopped, in words a person reads, and how a trial process takes the worker's SIGTERM.

The worker knows which limit ends a trial (the job's timeout, the trial timeout, a cancel) and hands its
words to the trial process it starts. SIGTERM asks that process to stop at its next batch boundary, as its
own timeout does; the worker kills it only after a grace period. A trial stopped before its first epoch
finished has nothing to keep, and its error says what to change. Torch-free.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Collection, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Protocol

CANCELED = "canceled"
SMALLER = "pick a smaller model/img size"
HINTS = {  # what to change when a time limit ended a trial before its first epoch, by the limit's words
    "job timeout": f"raise limits.timeout_minutes or {SMALLER}",
    "trial timeout": f"raise limits.trial_timeout_minutes or {SMALLER}",
    "timeout": f"raise --timeout-minutes or {SMALLER}",
}


def job_timeout(minutes: float) -> str:
    return f"job timeout after {duration(minutes * 60)}"


def trial_timeout(minutes: float) -> str:
    return f"trial timeout after {duration(minutes * 60)}"


def timeout(seconds: float) -> str:
    """A timeout given on the command line (`kestrel train --timeout-minutes`)."""
    return f"timeout after {duration(seconds)}"


def nothing_kept(reason: str) -> str:
    """The error of a trial that ``reason`` stopped before its first epoch finished."""
    hint = next((h for words, h in HINTS.items() if reason.startswith(words)), "")
    return f"{reason}, before its first epoch finished: nothing to keep" + (f"; {hint}" if hint else "")


def duration(seconds: float) -> str:
    """``"45 s"``, ``"10 min"``, ``"1.5 min"``: a limit as it was set."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    return f"{minutes:.0f} min" if abs(minutes - round(minutes)) < 0.05 else f"{minutes:.1f} min"


@dataclass
class _Process:
    """What the worker told this trial process: its time limit's words, and whether SIGTERM came."""

    timeout_reason: str = ""
    terminated: threading.Event = field(default_factory=threading.Event)


PROCESS = _Process()


@contextlib.contextmanager
def worker_trial(timeout_reason: str | None) -> Iterator[None]:
    """While a job's trial runs in this process: ``timeout_reason`` names its time limit, and SIGTERM
    asks it to stop at the next batch boundary instead of ending the process."""
    PROCESS.timeout_reason = timeout_reason or ""
    PROCESS.terminated.clear()
    main = threading.current_thread() is threading.main_thread()  # only the main thread may set handlers
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if main else None
    try:
        yield
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
        PROCESS.timeout_reason = ""
        PROCESS.terminated.clear()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    PROCESS.terminated.set()  # read at the next batch boundary; nothing else is safe inside a handler


def terminated() -> bool:
    """Whether the worker sent SIGTERM: its deadline for this trial, or a cancel, came."""
    return PROCESS.terminated.is_set()


def worker_timeout_reason() -> str:
    """The worker's words for this trial's time limit; "" outside a job's trial process."""
    return PROCESS.timeout_reason


# An early-termination policy as a trial sees it (`core.sweep.termination` has the reference's three):
# ``history`` maps every trial of the sweep to its reported [(interval, value), ...].
History = Mapping[Hashable, Sequence[tuple[int, float]]]


class Policy(Protocol):
    def should_stop(self, trial_id: Hashable, history: History, finished: Collection[Hashable] = ()) -> str | None:
        ...
