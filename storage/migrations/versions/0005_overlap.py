"""several annotators on the same items: projects.overlap, overlap_eval, overlap_k; queue_entries.copy_index,
unique per (round, item, copy) (storage.queue.add_copies)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 10:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

NEW_UNIQUE = 'uq_queue_entries_round_item_copy'
OLD_UNIQUE = 'uq_queue_entries_round_id_item_id'  # the unnamed one of 0001, as the naming convention below names it
# Reflected unnamed unique constraints get a name from this, so batch mode can drop 0001's.
NAMING = {'uq': 'uq_%(table_name)s_%(column_0_N_name)s'}
REFS = '_overlap_annotation_entries'


def upgrade() -> None:
    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.add_column(sa.Column('overlap', sa.Float(), server_default='0', nullable=False))
        # A constant default ('0', not sa.false()): SQLite then adds the column in place; an expression default
        # would make batch mode rebuild `projects`, and dropping it would cascade to every row of every project.
        batch_op.add_column(sa.Column('overlap_eval', sa.Boolean(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('overlap_k', sa.Integer(), server_default='2', nullable=False))
    with _entries_batch() as batch_op:
        batch_op.add_column(sa.Column('copy_index', sa.Integer(), server_default='0', nullable=False))
        batch_op.drop_constraint(_old_unique_name(), type_='unique')
        batch_op.create_unique_constraint(NEW_UNIQUE, ['round_id', 'item_id', 'copy_index'])


def downgrade() -> None:
    op.execute("UPDATE annotations SET queue_entry_id = NULL WHERE queue_entry_id IN "
               "(SELECT id FROM queue_entries WHERE copy_index > 0)")
    op.execute("DELETE FROM queue_entries WHERE copy_index > 0")
    with _entries_batch() as batch_op:
        batch_op.drop_constraint(NEW_UNIQUE, type_='unique')
        batch_op.create_unique_constraint(OLD_UNIQUE, ['round_id', 'item_id'])
        batch_op.drop_column('copy_index')
    # ALTER TABLE ... DROP COLUMN in place (SQLite 3.35+): batch mode would rebuild `projects`, and dropping the
    # old table would cascade to every row of every project.
    for column in ('overlap_k', 'overlap_eval', 'overlap'):
        op.drop_column('projects', column)


class _entries_batch:
    """batch_alter_table('queue_entries'). On SQLite a constraint change rebuilds the table, and the migration runs
    in a transaction with foreign keys on (storage.db), where dropping the old table fails while annotations refer
    to its rows: their references are set aside in a table of their own and put back after the rebuild (same ids)."""

    def __enter__(self):
        self.sqlite = op.get_bind().dialect.name == 'sqlite'
        if self.sqlite:
            op.execute(f"CREATE TABLE {REFS} AS SELECT id, queue_entry_id FROM annotations "
                       "WHERE queue_entry_id IS NOT NULL")
            op.execute("UPDATE annotations SET queue_entry_id = NULL WHERE queue_entry_id IS NOT NULL")
        self.batch = op.batch_alter_table('queue_entries', schema=None, naming_convention=NAMING,
                                          recreate='always' if self.sqlite else 'auto')
        return self.batch.__enter__()

    def __exit__(self, *exc):
        done = self.batch.__exit__(*exc)
        if self.sqlite and exc[0] is None:
            op.execute(f"UPDATE annotations SET queue_entry_id = (SELECT r.queue_entry_id FROM {REFS} r "
                       f"WHERE r.id = annotations.id) WHERE id IN (SELECT id FROM {REFS})")
            op.execute(f"DROP TABLE {REFS}")
        return done


def _old_unique_name() -> str:
    """0001's unique (round_id, item_id): unnamed, so PostgreSQL named it itself; on SQLite the naming convention
    names it when batch mode reflects the table."""
    if op.get_bind().dialect.name == 'sqlite':
        return OLD_UNIQUE
    for constraint in sa.inspect(op.get_bind()).get_unique_constraints('queue_entries'):
        if constraint['column_names'] == ['round_id', 'item_id']:
            return constraint['name']
    return OLD_UNIQUE
