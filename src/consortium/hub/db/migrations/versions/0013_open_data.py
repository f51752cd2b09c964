"""open data: published dataset versions (immutable, a blob each), download counts, licence acceptances

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "open_data_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("table_sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("license", sa.String(length=1000), nullable=False),
        sa.Column("datasheet", sa.JSON(), nullable=False),
        sa.Column("predecessor_id", sa.Integer(), nullable=True),
        sa.Column("published_seq", sa.BigInteger(), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("withdrawn_reason", sa.String(length=1000), nullable=True),
        sa.Column("withdrawn_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["dataset_id"], ["datasets.id"]),
        sa.ForeignKeyConstraint(["predecessor_id"], ["open_data_versions.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dataset_id", "version"),
    )
    op.create_index("ix_open_data_versions_dataset_id", "open_data_versions", ["dataset_id"])
    op.create_table(
        "open_data_downloads",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["version_id"], ["open_data_versions.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("version_id", "org_id"),
    )
    op.create_index("ix_open_data_downloads_version_id", "open_data_downloads", ["version_id"])
    op.create_table(
        "licence_acceptances",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("license", sa.String(length=1000), nullable=False),
        sa.Column("ledger_seq", sa.BigInteger(), nullable=False),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("org_id", "license"),
    )
    op.create_index("ix_licence_acceptances_org_id", "licence_acceptances", ["org_id"])


def downgrade() -> None:
    op.drop_index("ix_licence_acceptances_org_id", table_name="licence_acceptances")
    op.drop_table("licence_acceptances")
    op.drop_index("ix_open_data_downloads_version_id", table_name="open_data_downloads")
    op.drop_table("open_data_downloads")
    op.drop_index("ix_open_data_versions_dataset_id", table_name="open_data_versions")
    op.drop_table("open_data_versions")
