"""stage_history: each customer's relationship stage as `mailer stages update` found it
changed; a row without from_stage is the customer's first recording.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stage_history",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("customer_id", sa.Integer,
                  sa.ForeignKey("customers.id", ondelete="CASCADE"), nullable=False),
        sa.Column("from_stage", sa.String(16)),
        sa.Column("to_stage", sa.String(16), nullable=False),
        sa.Column("detected_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_stage_history_customer_detected", "stage_history",
                    ["customer_id", "detected_at"])


def downgrade() -> None:
    op.drop_table("stage_history")
