"""server optimiser state checkpointed with each run's params

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("server_state_sha256", sa.String(length=64), nullable=True))


def downgrade() -> None:
    op.drop_column("runs", "server_state_sha256")
