"""pick ahead at round boundaries: projects.pick_ahead; rounds.ranked_ahead, picked_ahead, picked_ahead_by,
awaiting_selection (app.rounds)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 10:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.add_column(sa.Column('pick_ahead', sa.Integer(), server_default='5', nullable=False))
    with op.batch_alter_table('rounds', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ranked_ahead', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('picked_ahead', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('picked_ahead_by', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('awaiting_selection', sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('rounds', schema=None) as batch_op:
        batch_op.drop_column('awaiting_selection')
        batch_op.drop_column('picked_ahead_by')
        batch_op.drop_column('picked_ahead')
        batch_op.drop_column('ranked_ahead')
    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.drop_column('pick_ahead')
