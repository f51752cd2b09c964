"""rights and releases: data-source grants, model versions and releases, user deactivation, org key history

Revision ID: 0007
Revises: 0006

- ``datasets.process_grant`` / ``download_grant``: a :meth:`consortium.governance.permissions.Grant.dump`
  value; NULL means the default (process: every member, download: nobody).
- ``models``: ``version`` (the n-th model of its project's line), ``status`` (``trained`` until a
  ``release_model`` proposal passes, then ``released``), the release's proposal, time, visibility and grants.
- ``users.active``: a deactivated user's tokens stop working at once.
- ``org_keys``: every key an org has held, so that signatures made before a rotation still verify; the
  current key stays in ``orgs.public_key`` / ``orgs.key_id``.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(sa.Column("process_grant", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("download_grant", sa.JSON(), nullable=True))
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("version", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("status", sa.String(length=20), nullable=False, server_default="trained"))
        batch.add_column(sa.Column("release_proposal_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("released_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("visibility", sa.String(length=20), nullable=True))
        batch.add_column(sa.Column("process_grant", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("download_grant", sa.JSON(), nullable=True))
    models = sa.table("models", sa.column("id", sa.Integer), sa.column("project_id", sa.Integer),
                      sa.column("version", sa.Integer))
    connection = op.get_bind()
    counts: dict[int, int] = {}
    for model_id, project_id in connection.execute(
            sa.select(models.c.id, models.c.project_id).order_by(models.c.id)).all():
        counts[project_id] = counts.get(project_id, 0) + 1
        connection.execute(models.update().where(models.c.id == model_id).values(version=counts[project_id]))
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("active", sa.Boolean(), nullable=False, server_default=sa.true()))
    op.create_table(
        "org_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("public_key", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rotation_signature", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key_id"),
    )
    op.execute("INSERT INTO org_keys (org_id, key_id, public_key, created_at) "
               "SELECT id, key_id, public_key, created_at FROM orgs WHERE key_id IS NOT NULL")


def downgrade() -> None:
    op.drop_table("org_keys")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("active")
    with op.batch_alter_table("models") as batch:
        for column in ("download_grant", "process_grant", "visibility", "released_at", "release_proposal_id",
                       "status", "version"):
            batch.drop_column(column)
    with op.batch_alter_table("datasets") as batch:
        batch.drop_column("download_grant")
        batch.drop_column("process_grant")
