"""a run's preprocessing transform, fitted from the nodes' statistics before round 1

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("preprocessing", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("runs", "preprocessing")
