"""daemon_state.next_due_campaign: the campaign of the daemon's next due instant, so
`mailer status` can name it ("next due: black-friday at 2026-11-27 08:00 UTC").

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("daemon_state") as batch:
        batch.add_column(sa.Column("next_due_campaign", sa.String(255)))


def downgrade() -> None:
    with op.batch_alter_table("daemon_state") as batch:
        batch.drop_column("next_due_campaign")
