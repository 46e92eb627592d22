"""Budget reservations, and the ledger's count of requests whose usage chatproxy counted.

`reservations` holds each request's worst case against its key's daily
quotas while it is answered; `usage_days.counted_requests` says how many of a
day's requests had no usage from the upstream and were counted with tiktoken.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "reservations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("key_name", sa.String(length=100), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("reservations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_reservations_key_name"), ["key_name"], unique=False)
    with op.batch_alter_table("usage_days", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("counted_requests", sa.Integer(), server_default="0", nullable=False)
        )


def downgrade():
    with op.batch_alter_table("usage_days", schema=None) as batch_op:
        batch_op.drop_column("counted_requests")
    with op.batch_alter_table("reservations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reservations_key_name"))
    op.drop_table("reservations")
