"""consent_history and recommendations (the customer card), and indexes for
stage_change campaigns and the card's events.

consent_history starts here: each customer's consent of this moment is its first row.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "consent_history",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("customer_id", sa.Integer,
                  sa.ForeignKey("customers.id", ondelete="CASCADE"), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("since", sa.DateTime),
        sa.Column("source", sa.String(64)),
        sa.Column("reason", sa.Text),
    )
    op.create_index("ix_consent_history_customer", "consent_history", ["customer_id", "since"])
    op.execute("INSERT INTO consent_history (customer_id, state, since, source, reason) "
               "SELECT id, consent, consent_at, consent_source, consent_reason FROM customers")
    op.create_table(
        "recommendations",
        sa.Column("customer_id", sa.Integer,
                  sa.ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True,
                  autoincrement=False),
        sa.Column("rank", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("sku", sa.String(255), nullable=False),
        sa.Column("product", sa.Text),
        sa.Column("category", sa.Text),
        sa.Column("computed_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_stage_history_to_detected", "stage_history", ["to_stage", "detected_at"])
    op.create_index("ix_events_customer_at", "events", ["customer_id", "at"])


def downgrade() -> None:
    op.drop_index("ix_events_customer_at", "events")
    op.drop_index("ix_stage_history_to_detected", "stage_history")
    op.drop_table("recommendations")
    op.drop_table("consent_history")
