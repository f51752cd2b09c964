"""open data: each published version keeps its anonymisation report and, for DP synthetic data, its release
(epsilon, delta, noise multiplier, measurements: charged to the dataset's privacy budget)

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("open_data_versions") as batch:
        batch.add_column(sa.Column("anonymity", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("synthetic", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("open_data_versions") as batch:
        batch.drop_column("synthetic")
        batch.drop_column("anonymity")
