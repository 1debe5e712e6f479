"""deployments keep the reference's request settings (timeout, concurrent requests)

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('deployment', schema=None) as batch_op:
        batch_op.add_column(sa.Column('request_timeout_ms', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('max_concurrent_requests', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('deployment', schema=None) as batch_op:
        batch_op.drop_column('max_concurrent_requests')
        batch_op.drop_column('request_timeout_ms')
