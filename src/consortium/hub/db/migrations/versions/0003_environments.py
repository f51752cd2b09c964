"""RL environments as a kind of data source: datasets.kind and datasets.environment

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "datasets", sa.Column("kind", sa.String(length=20), nullable=False, server_default="table")
    )
    op.add_column("datasets", sa.Column("environment", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.drop_column("environment")
        batch.drop_column("kind")
