"""The daemon's own state, for `mailer status`.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "daemon_state",
        sa.Column("role", sa.String(20), primary_key=True),
        sa.Column("owner", sa.String(100), nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("heartbeat_at", sa.DateTime, nullable=False),
        sa.Column("last_sweep_at", sa.DateTime),
        sa.Column("last_planned", sa.Integer, nullable=False),
        sa.Column("next_due_at", sa.DateTime),
        sa.Column("workspace_problems", sa.Integer, nullable=False),
        sa.Column("stopped_at", sa.DateTime),
    )


def downgrade() -> None:
    op.drop_table("daemon_state")
