"""Answers keep the model's reasoning apart from the answer.

`messages.reasoning` holds what the model thought before it answered (never
sent upstream again), `messages.reasoning_tokens` the upstream's
`completion_tokens_details.reasoning_tokens` (part of `completion_tokens`),
and `messages.reasoning_seconds` how long the reasoning streamed before the
answer started. All three are null for the answers stored before, and for
answers without reasoning.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table(
        "messages", schema=None, table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        batch_op.add_column(sa.Column("reasoning", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("reasoning_tokens", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("reasoning_seconds", sa.Float(), nullable=True))


def downgrade():
    with op.batch_alter_table(
        "messages", schema=None, table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        batch_op.drop_column("reasoning_seconds")
        batch_op.drop_column("reasoning_tokens")
        batch_op.drop_column("reasoning")
