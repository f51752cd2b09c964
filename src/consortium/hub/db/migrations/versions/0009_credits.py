"""credits: an index of each org's credit movements (the ledger entries are the record)

Revision ID: 0009
Revises: 0008

- ``credit_movements``: one row per ``credits.earned`` / ``credits.spent`` ledger entry (signed amount, reason,
  what it refers to, the entry's seq); at most one per org, reason and reference, so an award or a charge is
  never counted twice.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "credit_movements",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(length=20), nullable=False),
        sa.Column("reference", sa.String(length=100), nullable=False),
        sa.Column("ledger_seq", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("ledger_seq"),
        sa.UniqueConstraint("org_id", "reason", "reference"),
    )
    op.create_index("ix_credit_movements_org_id", "credit_movements", ["org_id"])


def downgrade() -> None:
    op.drop_index("ix_credit_movements_org_id", table_name="credit_movements")
    op.drop_table("credit_movements")
