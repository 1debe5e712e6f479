"""The error tree: every error says where, what is wrong, and how to fix it."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any


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


def config_error(exc: Any, path: str, fields: Sequence[str], what: str = "") -> ConfigError:
    """pydantic's first complaint in ``exc`` as a ConfigError at ``path.field``: unknown keys get close
    matches, literal choices list what is allowed, and model checks written "field: reason" name that
    field. ``what`` ends the message (e.g. " for a uniform distribution")."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return ConfigError(f"{path}.{loc}", f"unknown key{what}", fields,
                           difflib.get_close_matches(loc, list(fields), n=3))
    if err["type"] == "missing":
        return ConfigError(f"{path}.{loc}", f"required{what}", fields)
    allowed: list[str] = []
    if err["type"] == "literal_error":  # ctx.expected reads "'random', 'grid' or 'bayesian'"
        expected = str(err.get("ctx", {}).get("expected", "")).replace(" or ", ", ")
        allowed = [a.strip("' ") for a in expected.split(", ") if a.strip()]
    message = str(err["msg"]).removeprefix("Value error, ")
    field, sep, rest = message.partition(": ")
    if not loc and sep and field in fields:
        loc, message = field, rest
    elif loc:
        message = f"{err.get('input')!r}: {message}"
    return ConfigError(f"{path}.{loc}" if loc else path, message, allowed)
