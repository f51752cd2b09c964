"""challenges: a host's signed challenges and their submissions (metadata and signed scores, no test rows)

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "challenges",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("host_org_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("statement", sa.JSON(), nullable=False),
        sa.Column("signature", sa.String(length=200), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("opened_seq", sa.BigInteger(), nullable=False),
        sa.Column("finalised_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["host_org_id"], ["orgs.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("host_org_id", "name"),
    )
    op.create_index("ix_challenges_host_org_id", "challenges", ["host_org_id"])
    op.create_table(
        "challenge_submissions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("challenge_id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("team", sa.JSON(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=True),
        sa.Column("weights_sha256", sa.String(length=64), nullable=False),
        sa.Column("algorithm", sa.JSON(), nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("public_score", sa.Float(), nullable=True),
        sa.Column("public_error", sa.String(length=500), nullable=True),
        sa.Column("public_seq", sa.BigInteger(), nullable=True),
        sa.Column("private_score", sa.Float(), nullable=True),
        sa.Column("private_error", sa.String(length=500), nullable=True),
        sa.Column("private_seq", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["challenge_id"], ["challenges.id"]),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_challenge_submissions_challenge_id", "challenge_submissions", ["challenge_id"])
    op.create_index("ix_challenge_submissions_submitted_at", "challenge_submissions", ["submitted_at"])


def downgrade() -> None:
    op.drop_index("ix_challenge_submissions_submitted_at", table_name="challenge_submissions")
    op.drop_index("ix_challenge_submissions_challenge_id", table_name="challenge_submissions")
    op.drop_table("challenge_submissions")
    op.drop_index("ix_challenges_host_org_id", table_name="challenges")
    op.drop_table("challenges")
