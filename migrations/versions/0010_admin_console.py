"""The console: admin keys and the request log.

`access_keys.admin` says which keys may open the console (`/admin`) and call
its API (`/api/admin/...`): false for every key made before; `flask keys
create --admin` and the console make admin keys. `request_log` holds a row per
request that reached the upstream or was refused by a limit (never a
question, an answer or a key), kept CHATPROXY_REQUEST_LOG_DAYS. `personas` holds
the personas made in the console (the JSON a persona file would hold).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("access_keys", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("admin", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    op.create_table(
        "request_log",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("key_name", sa.String(length=100), nullable=True),
        sa.Column("route", sa.String(length=100), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=True),
        sa.Column("upstream", sa.String(length=100), nullable=True),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=64), nullable=True),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=True),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=True),
        sa.Column("reasoning_tokens", sa.BigInteger(), nullable=True),
        sa.Column("cost", sa.Float(), nullable=True),
        sa.Column("ttft_ms", sa.Float(), nullable=True),
        sa.Column("total_ms", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_request_log_at", "request_log", ["at"])
    op.create_index("ix_request_log_key_at", "request_log", ["key_name", "at"])
    op.create_table(
        "personas",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade():
    op.drop_table("personas")
    op.drop_index("ix_request_log_key_at", table_name="request_log")
    op.drop_index("ix_request_log_at", table_name="request_log")
    op.drop_table("request_log")
    with op.batch_alter_table("access_keys", schema=None) as batch_op:
        batch_op.drop_column("admin")
