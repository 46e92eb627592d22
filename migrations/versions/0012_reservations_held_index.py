"""Reservations: one index that holds what a key's held sums read.

Every request of a key with a daily quota sums the reservations the key
holds (`chatproxy.access.reservations`): at 1,000 answers in flight, 1,000
rows. An index on (key_name, expires_at, tokens, cost) answers the sums from
the index alone and finds the expired rows without reading the others; it
takes the place of the index on key_name.

Revision ID: 0012
Revises: 0011
"""

from alembic import op

# revision identifiers, used by Alembic.
revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("reservations", schema=None) as batch_op:
        batch_op.create_index(
            "ix_reservations_held", ["key_name", "expires_at", "tokens", "cost"], unique=False
        )
        batch_op.drop_index("ix_reservations_key_name")


def downgrade():
    with op.batch_alter_table("reservations", schema=None) as batch_op:
        batch_op.create_index("ix_reservations_key_name", ["key_name"], unique=False)
        batch_op.drop_index("ix_reservations_held")
