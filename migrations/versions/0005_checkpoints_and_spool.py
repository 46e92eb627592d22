"""Answers saved while they stream, and the spool's record of what it wrote.

`messages.status` may be `streaming` (an answer saved every few seconds while
it arrives) and `messages.updated_at` says when it was last saved;
`spooled_writes` holds the id of each transaction written back from the local
spool, so none is written twice.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

OLD = "status IN ('ok', 'error', 'interrupted')"
NEW = "status IN ('ok', 'error', 'interrupted', 'streaming')"


def upgrade():
    with op.batch_alter_table(
        "messages", schema=None, table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        batch_op.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.drop_constraint("ck_messages_status", type_="check")
        batch_op.create_check_constraint("ck_messages_status", NEW)
    op.create_table(
        "spooled_writes",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("written_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade():
    op.drop_table("spooled_writes")
    op.execute("UPDATE messages SET status = 'interrupted' WHERE status = 'streaming'")
    with op.batch_alter_table(
        "messages", schema=None, table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        batch_op.drop_constraint("ck_messages_status", type_="check")
        batch_op.create_check_constraint("ck_messages_status", OLD)
        batch_op.drop_column("updated_at")
