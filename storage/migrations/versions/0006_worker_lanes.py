"""worker lanes (a worker serves training, quick work or all) and a trial's position within an epoch

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('workerstate', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lane', sqlmodel.sql.sqltypes.AutoString(), nullable=False,
                                      server_default='all'))
    with op.batch_alter_table('trial', schema=None) as batch_op:
        batch_op.add_column(sa.Column('epoch_progress', sa.Float(), nullable=False, server_default='0'))


def downgrade() -> None:
    with op.batch_alter_table('trial', schema=None) as batch_op:
        batch_op.drop_column('epoch_progress')
    with op.batch_alter_table('workerstate', schema=None) as batch_op:
        batch_op.drop_column('lane')
