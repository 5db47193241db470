"""Operator actions (issue 23 part 4): campaigns an operator paused, and the audit
table of every operator action (who, what, when).

Revision ID: 0019
Revises: 0018
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0019"
# The chain is 0016 -> 0017 -> 0018 -> 0019; written against 0016 while 0017 and 0018
# live on other branches (the merge sets "0018").
down_revision = "0018"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "paused_campaigns",
        sa.Column("campaign", sa.String(255), primary_key=True),
        sa.Column("paused_at", sa.DateTime, nullable=False),
        sa.Column("paused_by", sa.String(255), nullable=False),
        sa.Column("reason", sa.Text),
    )
    op.create_table(
        "operator_audit",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("via", sa.String(16), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("target", sa.String(320), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("detail", Json),
    )
    op.create_index("ix_operator_audit_target_at", "operator_audit", ["target", "at"])
    op.create_index("ix_operator_audit_at", "operator_audit", ["at"])


def downgrade() -> None:
    op.drop_index("ix_operator_audit_at", "operator_audit")
    op.drop_index("ix_operator_audit_target_at", "operator_audit")
    op.drop_table("operator_audit")
    op.drop_table("paused_campaigns")
