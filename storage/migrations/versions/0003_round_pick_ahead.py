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
    # Plain ALTER TABLE ... ADD COLUMN with constant defaults: a batch operation (or a sa.false() default) makes
    # SQLite rebuild the table, and dropping the old `rounds` table cascades to its queue entries and jobs.
    op.add_column('projects', sa.Column('pick_ahead', sa.Integer(), server_default='5', nullable=False))
    op.add_column('rounds', sa.Column('ranked_ahead', sa.JSON(), nullable=True))
    op.add_column('rounds', sa.Column('picked_ahead', sa.Integer(), server_default='0', nullable=False))
    op.add_column('rounds', sa.Column('picked_ahead_by', sa.Integer(), nullable=True))
    op.add_column('rounds', sa.Column('awaiting_selection', sa.Boolean(), server_default=sa.text('false'),
                                      nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('rounds', schema=None) as batch_op:
        batch_op.drop_column('awaiting_selection')
        batch_op.drop_column('picked_ahead_by')
        batch_op.drop_column('picked_ahead')
        batch_op.drop_column('ranked_ahead')
    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.drop_column('pick_ahead')
