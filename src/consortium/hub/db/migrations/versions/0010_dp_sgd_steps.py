"""DP-SGD charges: the sampled Gaussian steps of a round

Revision ID: 0010
Revises: 0009

- ``privacy_charges.steps``: how many sampled Gaussian steps the round composed (a DP-SGD round's local steps
  on its rows; 1, the default for every earlier row, for a DP-FedAvg round).
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("privacy_charges") as batch:
        batch.add_column(sa.Column("steps", sa.Integer(), nullable=False, server_default="1"))


def downgrade() -> None:
    with op.batch_alter_table("privacy_charges") as batch:
        batch.drop_column("steps")
