"""endpoint keys are sealed with the secret outside the database (storage.secrets)

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import context, op

from storage.secrets import is_sealed, seal, unseal
from storage.settings import Settings

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

ROWS = sa.text("SELECT id, primary_key, secondary_key FROM endpoint")
WRITE = sa.text("UPDATE endpoint SET primary_key = :primary, secondary_key = :secondary WHERE id = :id")


def _settings(rows: list) -> Settings:
    settings = context.config.attributes.get("settings")
    if settings is None:
        raise RuntimeError(f"{len(rows)} endpoint(s) hold keys to seal and the migration was not given the "
                           "settings that locate the secret: call storage.db.upgrade(engine, settings)")
    return settings


def upgrade() -> None:
    bind = op.get_bind()
    rows = [r for r in bind.execute(ROWS) if not (_done(r.primary_key) and _done(r.secondary_key))]
    if not rows:
        return
    settings = _settings(rows)
    for r in rows:
        bind.execute(WRITE, {"id": r.id, "primary": _sealed(r.primary_key, settings),
                             "secondary": _sealed(r.secondary_key, settings)})


def downgrade() -> None:
    bind = op.get_bind()
    rows = [r for r in bind.execute(ROWS) if is_sealed(r.primary_key) or is_sealed(r.secondary_key)]
    if not rows:
        return
    settings = _settings(rows)
    for r in rows:
        bind.execute(WRITE, {"id": r.id, "primary": unseal(r.primary_key, settings),
                             "secondary": unseal(r.secondary_key, settings)})


def _done(value: str) -> bool:
    return not value or is_sealed(value)  # an empty key admits nobody and stays empty


def _sealed(value: str, settings: Settings) -> str:
    return value if _done(value) else seal(value, settings)
