"""Database engine, sessions and schema migrations (Alembic)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, event, text
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, create_engine

from storage.settings import Settings

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and foreign keys.

    WAL lets the UI process read while the worker and trial processes write.
    """
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One transaction: committed when the block ends, rolled back on any error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def alembic_config(engine: Engine, settings: Settings | None = None) -> Config:
    """Alembic's configuration for ``engine``; ``settings`` give data migrations what lies outside the
    database (0003 seals endpoint keys with the secret in ``settings.home`` or the environment)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    config.attributes["settings"] = settings
    return config


def head_revision() -> str:
    """The newest migration's revision, read from the file names: each is named after its revision
    (``0005_datastores.py`` is revision 0005), so this needs no Alembic (a test holds it to Alembic's answer)."""
    return max(p.name.split("_", 1)[0] for p in (MIGRATIONS_DIR / "versions").glob("[0-9]*_*.py"))


def is_current(engine: Engine) -> bool:
    """Whether the database is at the newest migration already."""
    try:
        with engine.connect() as connection:
            stamped = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    except DBAPIError:  # no version table: an empty database
        return False
    return stamped == [head_revision()]


def upgrade(engine: Engine, settings: Settings | None = None) -> None:
    """Bring the schema to the newest migration; existing rows are kept. Without ``settings`` a database
    holding endpoint keys not yet sealed cannot be upgraded (the migration needs the secret).

    A database at the newest migration is left alone without loading Alembic and the migration scripts:
    every `kestrel` command opens the database, and that was a quarter of a short command's time."""
    if is_current(engine):
        return
    from alembic import command

    command.upgrade(alembic_config(engine, settings), "head")
