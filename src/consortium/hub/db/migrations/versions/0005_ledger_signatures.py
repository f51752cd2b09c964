"""signed ledger: entry signatures (hub, actor), the Merkle tree's stored subtrees, checkpoints, cosignatures

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("ledger_entries", sa.Column("signature", sa.String(length=100), nullable=True))
    op.add_column("ledger_entries", sa.Column("signer_key_id", sa.String(length=32), nullable=True))
    op.add_column("ledger_entries", sa.Column("actor_key_id", sa.String(length=32), nullable=True))
    op.add_column("ledger_entries", sa.Column("actor_signature", sa.String(length=100), nullable=True))
    op.create_table(
        "ledger_tree",
        sa.Column("level", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx"),
    )
    op.create_table(
        "ledger_tree_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.execute("INSERT INTO ledger_tree_head (id, size) VALUES (1, 0)")
    op.create_table(
        "ledger_checkpoints",
        sa.Column("size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("origin", sa.String(length=64), nullable=False),
        sa.Column("root", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.String(length=40), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("signature", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("size"),
    )
    op.create_table(
        "ledger_cosignatures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("checkpoint_size", sa.BigInteger(), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("signature", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["checkpoint_size"], ["ledger_checkpoints.size"]),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("checkpoint_size", "org_id"),
    )


def downgrade() -> None:
    signed = op.get_bind().execute(
        sa.text("SELECT COUNT(*) FROM ledger_entries WHERE signature IS NOT NULL")
    ).scalar()
    if signed:
        raise RuntimeError(f"{signed} ledger entries are signed; dropping their signatures would make every "
                           "verifier report the ledger as broken, so 0005 cannot be undone")
    op.drop_table("ledger_cosignatures")
    op.drop_table("ledger_checkpoints")
    op.drop_table("ledger_tree_head")
    op.drop_table("ledger_tree")
    with op.batch_alter_table("ledger_entries") as batch:
        batch.drop_column("actor_signature")
        batch.drop_column("actor_key_id")
        batch.drop_column("signer_key_id")
        batch.drop_column("signature")
