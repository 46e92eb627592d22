"""Token limits and the ledger's daily token sums as 64-bit integers.

A busy key passes 2,147,483,647 tokens in a day sooner than one would think,
and PostgreSQL's INTEGER refuses the next answer's sum (SQLite's are 64-bit already).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

COLUMNS = {
    "access_keys": ("rpm", "tpm", "tokens_per_day"),
    "usage_days": ("prompt_tokens", "completion_tokens"),
}


def upgrade():
    for table, columns in COLUMNS.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column in columns:
                batch_op.alter_column(column, type_=sa.BigInteger(), existing_type=sa.Integer())


def downgrade():
    for table, columns in COLUMNS.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column in columns:
                batch_op.alter_column(column, type_=sa.Integer(), existing_type=sa.BigInteger())
