"""catalogue search: an index row per dataset and an inverted index of its words and licence ids; the
Parquet rendering of an open data version

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

INDEXES = {"org_id": ["org_id"], "visibility": ["visibility"], "task": ["task"], "name": ["name", "dataset_id"],
           "rows": ["rows", "dataset_id"], "open_published": ["open", "published_at", "dataset_id"],
           "open_bytes": ["open", "bytes", "dataset_id"]}


def upgrade() -> None:
    op.add_column("open_data_versions", sa.Column("parquet_sha256", sa.String(length=64), nullable=True))
    op.add_column("open_data_versions", sa.Column("parquet_size", sa.BigInteger(), nullable=True))
    op.create_table(
        "catalogue_entries",
        sa.Column("dataset_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("visibility", sa.String(length=20), nullable=False),
        sa.Column("task", sa.String(length=20), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("license", sa.String(length=1000), nullable=False),
        sa.Column("open", sa.Boolean(), nullable=False),
        sa.Column("latest_version", sa.String(length=32), nullable=True),
        sa.Column("bytes", sa.BigInteger(), nullable=True),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["dataset_id"], ["datasets.id"]),
        sa.PrimaryKeyConstraint("dataset_id"),
    )
    for name, columns in INDEXES.items():
        op.create_index(f"ix_catalogue_entries_{name}", "catalogue_entries", columns)
    op.create_table(
        "catalogue_terms",
        sa.Column("term", sa.String(length=64), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["dataset_id"], ["datasets.id"]),
        sa.PrimaryKeyConstraint("term", "dataset_id"),
    )
    op.create_index("ix_catalogue_terms_dataset_term", "catalogue_terms", ["dataset_id", "term"])
    from consortium.hub.db.catalogue_models import refresh_all

    refresh_all(op.get_bind())


def downgrade() -> None:
    op.drop_index("ix_catalogue_terms_dataset_term", table_name="catalogue_terms")
    op.drop_table("catalogue_terms")
    for name in INDEXES:
        op.drop_index(f"ix_catalogue_entries_{name}", table_name="catalogue_entries")
    op.drop_table("catalogue_entries")
    with op.batch_alter_table("open_data_versions") as batch:
        batch.drop_column("parquet_size")
        batch.drop_column("parquet_sha256")
