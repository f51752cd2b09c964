"""redactable ledger: ledger_entries.salt, payload_commitment and the entry's scope (project_id, dataset_id)

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("ledger_entries", sa.Column("salt", sa.String(length=32), nullable=True))
    op.add_column("ledger_entries", sa.Column("payload_commitment", sa.String(length=64), nullable=True))
    op.add_column("ledger_entries", sa.Column("project_id", sa.Integer(), nullable=True))
    op.add_column("ledger_entries", sa.Column("dataset_id", sa.Integer(), nullable=True))


def downgrade() -> None:
    sealed = op.get_bind().execute(
        sa.text("SELECT COUNT(*) FROM ledger_entries WHERE salt IS NOT NULL")
    ).scalar()
    if sealed:
        raise RuntimeError(f"{sealed} ledger entries are sealed (hashed over a payload commitment); without "
                           "their salt and commitment they would no longer verify, so 0004 cannot be undone")
    with op.batch_alter_table("ledger_entries") as batch:
        batch.drop_column("dataset_id")
        batch.drop_column("project_id")
        batch.drop_column("payload_commitment")
        batch.drop_column("salt")
