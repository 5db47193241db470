"""events.user_agent, events.ip_hash: what made an open or a click, so machine opens and
clicks (mailer.core.machines: kinds machine_open, machine_click) can be told apart from
a reader's (issue 21). The address itself is never stored, only its keyed hash.

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("user_agent", sa.String(512)))
        batch.add_column(sa.Column("ip_hash", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_column("ip_hash")
        batch.drop_column("user_agent")
