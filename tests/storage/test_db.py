"""The schema comes from migrations, matches the tables, and SQLite runs in WAL mode."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlmodel import SQLModel

import storage.tables  # noqa: F401
from storage.db import alembic_config, head_revision, is_current, make_engine, session_scope, upgrade
from storage.tables import Dataset


def test_migrations_from_empty_build_exactly_the_tables(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'k.db'}")
    upgrade(engine)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    assert diff == []


def test_upgrade_keeps_existing_rows(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'k.db'}")
    upgrade(engine)
    with session_scope(engine) as session:
        session.add(Dataset(name="kept"))
    upgrade(engine)
    with session_scope(engine) as session:
        assert session.get(Dataset, 1).name == "kept"


def test_a_database_at_the_newest_migration_is_known_without_alembic(tmp_path):
    from alembic import command
    from alembic.script import ScriptDirectory

    engine = make_engine(f"sqlite:///{tmp_path / 'k.db'}")
    assert head_revision() == ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
    assert not is_current(engine)  # empty
    command.upgrade(alembic_config(engine), "0004")
    assert not is_current(engine)
    upgrade(engine)
    assert is_current(engine)


@pytest.mark.sqlite_only
def test_sqlite_uses_wal_and_foreign_keys(engine):
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_database_url_setting_overrides_the_default(monkeypatch, tmp_path):
    from storage.settings import Settings

    monkeypatch.setenv("KESTREL_HOME", str(tmp_path / "h"))
    assert Settings().db_url == f"sqlite:///{tmp_path / 'h' / 'kestrel.db'}"
    monkeypatch.setenv("KESTREL_DATABASE_URL", "postgresql://u@localhost/k")
    assert Settings().db_url == "postgresql://u@localhost/k"
