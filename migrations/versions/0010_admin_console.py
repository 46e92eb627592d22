"""Admin keys: `access_keys.admin` says which keys may open the console (`/admin`) and call
its API (`/api/admin/...`).

False for every key made before; `flask keys create --admin` and the console make admin keys.

Revision ID: 0010
Revises: 0008
Create Date: 2026-12-06

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0010"
# 0009 is written beside this one on another branch: the merge chains this after it.
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("access_keys", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("admin", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade():
    with op.batch_alter_table("access_keys", schema=None) as batch_op:
        batch_op.drop_column("admin")
