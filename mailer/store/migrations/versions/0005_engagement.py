"""Engagement: events (opens, clicks, unsubscribes, ratings, bounces, complaints) and the
preference centre's columns.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    json = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
    with op.batch_alter_table("customers") as batch:
        batch.add_column(sa.Column("paused_until", sa.DateTime))
        batch.add_column(sa.Column("weekly_cap", sa.Integer))
        batch.add_column(sa.Column("topics", json))
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id")),
        sa.Column("campaign", sa.String(255)),
        sa.Column("delivery_id", sa.Integer),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("url", sa.Text),
        sa.Column("score", sa.Integer),
        sa.Column("comment", sa.Text),
    )
    op.create_index("ix_events_campaign_kind", "events", ["campaign", "kind"])
    op.create_index("ix_events_delivery_id", "events", ["delivery_id"])


def downgrade() -> None:
    op.drop_table("events")
    with op.batch_alter_table("customers") as batch:
        batch.drop_column("topics")
        batch.drop_column("weekly_cap")
        batch.drop_column("paused_until")
