"""The error tree: every error says where, what is wrong, and how to fix it."""

from __future__ import annotations

from collections.abc import Sequence


class KestrelError(Exception):
    """Base of every error Kestrel reports to a person."""


class InputError(KestrelError):
    """Bad user data: names the file (and line or field) and says what to do."""

    def __init__(self, file: str, problem: str, fix: str = "", line: int | None = None) -> None:
        self.file, self.problem, self.fix, self.line = file, problem, fix, line
        where = f"{file}:{line}" if line is not None else file
        super().__init__(f"{where}: {problem}" + (f" — {fix}" if fix else ""))


class ConfigError(KestrelError):
    """A bad setting or name: the field path, the reason, and what is allowed."""

    def __init__(
        self, path: str, reason: str, allowed: Sequence[str] = (), hints: Sequence[str] = ()
    ) -> None:
        self.path, self.reason, self.allowed, self.hints = path, reason, list(allowed), list(hints)
        message = f"{path}: {reason}"
        if hints:
            message += f"; did you mean {', '.join(repr(h) for h in hints)}?"
        if allowed:
            message += f" (allowed: {', '.join(allowed)})"
        super().__init__(message)


class NotFound(KestrelError):
    """A named thing (dataset, version, job, model) does not exist."""
