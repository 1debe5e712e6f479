"""the active-learning loop: an endpoint's review queue and settings, and the confidence of scored images

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('scorerecord',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('endpoint_id', sa.Integer(), nullable=False),
    sa.Column('deployment', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('confidence', sa.Float(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['endpoint_id'], ['endpoint.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('scorerecord', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_scorerecord_endpoint_id'), ['endpoint_id'], unique=False)

    op.create_table('reviewitem',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('endpoint_id', sa.Integer(), nullable=False),
    sa.Column('deployment', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('model_version_id', sa.Integer(), nullable=True),
    sa.Column('sha256', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('width', sa.Integer(), nullable=False),
    sa.Column('height', sa.Integer(), nullable=False),
    sa.Column('confidence', sa.Float(), nullable=False),
    sa.Column('prelabels', sa.JSON(), nullable=True),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('dataset_version_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['dataset_version_id'], ['datasetversion.id'], ),
    sa.ForeignKeyConstraint(['endpoint_id'], ['endpoint.id'], ),
    sa.ForeignKeyConstraint(['model_version_id'], ['modelversion.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('reviewitem', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_reviewitem_endpoint_id'), ['endpoint_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_reviewitem_sha256'), ['sha256'], unique=False)
        batch_op.create_index(batch_op.f('ix_reviewitem_status'), ['status'], unique=False)

    with op.batch_alter_table('endpoint', schema=None) as batch_op:
        batch_op.add_column(sa.Column('review', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('endpoint', schema=None) as batch_op:
        batch_op.drop_column('review')
    with op.batch_alter_table('reviewitem', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_reviewitem_status'))
        batch_op.drop_index(batch_op.f('ix_reviewitem_sha256'))
        batch_op.drop_index(batch_op.f('ix_reviewitem_endpoint_id'))
    op.drop_table('reviewitem')
    with op.batch_alter_table('scorerecord', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_scorerecord_endpoint_id'))
    op.drop_table('scorerecord')
