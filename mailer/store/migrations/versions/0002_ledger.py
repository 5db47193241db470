"""The ledger: campaign versions, deliveries, coupons, plan runs.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "campaign_versions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("campaign", sa.String(255), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("definition", Json, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("campaign", sa.String(255), nullable=False),
        sa.Column("campaign_version_id", sa.Integer, sa.ForeignKey("campaign_versions.id"),
                  nullable=False),
        sa.Column("occurrence", sa.String(255), nullable=False),
        sa.Column("customer_id", sa.Integer,
                  sa.ForeignKey("customers.id", ondelete="CASCADE"), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("subject_variant", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime),
        sa.Column("last_reply", sa.Text),
        sa.Column("message_id", sa.String(255)),
        sa.Column("planned_at", sa.DateTime, nullable=False),
        sa.Column("send_after", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
        sa.Column("sent_at", sa.DateTime),
        sa.Column("lease_owner", sa.String(64)),
        sa.Column("lease_until", sa.DateTime),
        sa.UniqueConstraint("customer_id", "campaign", "occurrence", name="uq_deliveries_mail"),
    )
    op.create_index("ix_deliveries_customer_planned", "deliveries",
                    ["customer_id", "planned_at", "status"])
    op.create_index("ix_deliveries_status_send_after", "deliveries", ["status", "send_after"])
    op.create_table(
        "coupons",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("code", sa.String(64), nullable=False, unique=True),
        sa.Column("customer_id", sa.Integer,
                  sa.ForeignKey("customers.id", ondelete="CASCADE"), nullable=False),
        sa.Column("campaign", sa.String(255), nullable=False),
        sa.Column("delivery_id", sa.Integer,
                  sa.ForeignKey("deliveries.id", ondelete="SET NULL")),
        sa.Column("value", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
        sa.Column("redeemed_at", sa.DateTime),
    )
    op.create_table(
        "plan_runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("campaign", sa.String(255), nullable=False),
        sa.Column("occurrence", sa.String(255), nullable=False),
        sa.Column("now", sa.DateTime, nullable=False),
        sa.Column("planned", sa.Integer, nullable=False),
        sa.Column("excluded", Json, nullable=False),
    )
    op.create_index("ix_plan_runs_campaign", "plan_runs", ["campaign"])


def downgrade() -> None:
    for table in ("plan_runs", "coupons", "deliveries", "campaign_versions"):
        op.drop_table(table)
