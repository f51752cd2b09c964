"""privacy budgets: a dataset owner's (epsilon, delta) budget and the charges its node reports

Revision ID: 0008
Revises: 0007

- ``datasets.privacy_epsilon`` / ``privacy_delta``: the owner's total budget (NULL: none).
- ``privacy_charges``: one row per task a node charged to its dataset's budget (noise multiplier, sampling
  rate), what the hub composes into a dataset's spent epsilon.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(sa.Column("privacy_epsilon", sa.Float(), nullable=True))
        batch.add_column(sa.Column("privacy_delta", sa.Float(), nullable=True))
    op.create_table(
        "privacy_charges",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("noise_multiplier", sa.Float(), nullable=False),
        sa.Column("sampling_rate", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["dataset_id"], ["datasets.id"]),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"]),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("task_id"),
    )
    op.create_index("ix_privacy_charges_dataset_id", "privacy_charges", ["dataset_id"])


def downgrade() -> None:
    op.drop_index("ix_privacy_charges_dataset_id", table_name="privacy_charges")
    op.drop_table("privacy_charges")
    with op.batch_alter_table("datasets") as batch:
        batch.drop_column("privacy_delta")
        batch.drop_column("privacy_epsilon")
