"""jobs count the worker crashes they caused; endpoints record when their server started

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('crashes', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('crash_progress', sa.Float(), nullable=False, server_default='0'))
    with op.batch_alter_table('endpoint', schema=None) as batch_op:
        batch_op.add_column(sa.Column('started_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('endpoint', schema=None) as batch_op:
        batch_op.drop_column('started_at')
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_column('crash_progress')
        batch_op.drop_column('crashes')
