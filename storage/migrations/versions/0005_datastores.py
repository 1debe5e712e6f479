"""datastores: local folders that azureml:// datastore URLs resolve to

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('datastore',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('path', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('datastore', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_datastore_name'), ['name'], unique=True)


def downgrade() -> None:
    with op.batch_alter_table('datastore', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_datastore_name'))
    op.drop_table('datastore')
