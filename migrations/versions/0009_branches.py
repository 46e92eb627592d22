"""Conversations branch: each message names the one it follows, each conversation its branch.

`messages.parent_id` is the message a message follows (null for a
conversation's first); an edited question or a regenerated answer is a sibling
of the versions before it. `conversations.current_message_id` is the message
the current branch goes through. Existing conversations become single
branches: each message follows the one before it (by id), and the current
message is the last one. The downgrade keeps only the current branch of each
conversation (what the schema before could hold) and drops the rest.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table(
        "messages", schema=None, table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        batch_op.add_column(sa.Column("parent_id", sa.Integer(), nullable=True))
        batch_op.create_index("ix_messages_parent_id", ["parent_id"], unique=False)
        batch_op.create_foreign_key(
            "fk_messages_parent_id", "messages", ["parent_id"], ["id"], ondelete="CASCADE"
        )
    op.add_column("conversations", sa.Column("current_message_id", sa.Integer(), nullable=True))
    # One statement each, the same on SQLite and PostgreSQL: a message follows the one
    # before it in its conversation, and the last is the current one.
    op.execute(
        "UPDATE messages SET parent_id = (SELECT max(earlier.id) FROM messages AS earlier "
        "WHERE earlier.conversation_id = messages.conversation_id AND earlier.id < messages.id)"
    )
    op.execute(
        "UPDATE conversations SET current_message_id = (SELECT max(messages.id) FROM messages "
        "WHERE messages.conversation_id = conversations.id)"
    )


def downgrade():
    # The schema before holds one line of messages per conversation: the current branch.
    connection = op.get_bind()
    keep: set[int] = set()
    parents = dict(connection.execute(sa.text("SELECT id, parent_id FROM messages")).all())
    children: dict[int | None, list[int]] = {}
    conversation_of = dict(
        connection.execute(sa.text("SELECT id, conversation_id FROM messages")).all()
    )
    for message_id in sorted(parents):
        children.setdefault(parents[message_id], []).append(message_id)
    for conversation_id, current in connection.execute(
        sa.text("SELECT id, current_message_id FROM conversations")
    ).all():
        roots = [m for m in children.get(None, []) if conversation_of[m] == conversation_id]
        node = current if current in parents else (roots[-1] if roots else None)
        at = node
        while at is not None:  # up to the first message
            keep.add(at)
            at = parents[at]
        while node is not None and children.get(node):  # down by the newest replies
            node = children[node][-1]
            keep.add(node)
    dropped = [m for m in parents if m not in keep]
    for start in range(0, len(dropped), 500):
        connection.execute(
            sa.text("DELETE FROM messages WHERE id IN :ids").bindparams(
                sa.bindparam("ids", expanding=True)
            ),
            {"ids": dropped[start : start + 500]},
        )
    # Not a batch: SQLite would copy the table and drop the old one, and dropping it
    # deletes every message through their foreign key (SQLite 3.35 drops a column itself).
    op.drop_column("conversations", "current_message_id")
    with op.batch_alter_table(
        "messages", schema=None, table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        batch_op.drop_constraint("fk_messages_parent_id", type_="foreignkey")
        batch_op.drop_index("ix_messages_parent_id")
        batch_op.drop_column("parent_id")
