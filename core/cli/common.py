"""What every `kestrel` command shares: the app, the two consoles (stdout for answers, stderr for people),
error reporting, storage and dataset references. Command groups live in the sibling modules."""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console

from core.base.errors import ConfigError, KestrelError

if TYPE_CHECKING:  # storage pulls in SQLAlchemy and Alembic: loaded by the commands, so `--help` stays quick
    from sqlalchemy import Engine
    from sqlmodel import Session

    from storage.settings import Settings

app = typer.Typer(help="Kestrel: local AutoML for images.", no_args_is_help=True)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
APP_FILE = Path(__file__).resolve().parents[2] / "app.py"


def reports_errors(command: F) -> F:
    """Turn Kestrel's errors into one clear line on stderr and exit status 2, no traceback."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except KestrelError as exc:
            err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None

    return run  # type: ignore[return-value]


def open_storage() -> tuple[Settings, Engine]:
    from storage.db import make_engine, upgrade
    from storage.secrets import SecretError
    from storage.settings import Settings

    settings = Settings()
    engine = make_engine(settings.db_url)
    try:
        upgrade(engine, settings)
    except SecretError as exc:  # sealing the keys of an older database needs the secret
        raise KestrelError(f"the database cannot be upgraded: {exc}") from None
    return settings, engine


def session_scope(engine: Engine) -> AbstractContextManager[Session]:
    from storage import db

    return db.session_scope(engine)


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``NAME`` or ``NAME:VERSION`` (``azureml:`` prefix allowed, as in the reference's YAML)."""
    name, _, version = ref.removeprefix("azureml:").partition(":")
    if not version or version == "latest":
        return name, None
    if not version.isdigit():
        raise ConfigError("NAME:VERSION", f"version {version!r} in {ref!r} is not a number")
    return name, int(version)

