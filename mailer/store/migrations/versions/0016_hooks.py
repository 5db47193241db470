"""The store in real time (issue 20): webhook deliveries (idempotency by the platform's
delivery id), checkouts, products and stock alerts, and the platform's own `updated_at`
on customers and orders, so an older update never overwrites a newer one.

Revision ID: 0016
Revises: 0015
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "hook_deliveries",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("delivery_id", sa.String(255), nullable=False),
        sa.Column("topic", sa.String(64), nullable=False),
        sa.Column("received_at", sa.DateTime, nullable=False),
        sa.Column("event_at", sa.DateTime),
        sa.Column("outcome", sa.String(64), nullable=False),
        sa.UniqueConstraint("source", "delivery_id", name="uq_hook_deliveries_source_id"),
    )
    op.create_index("ix_hook_deliveries_source_received", "hook_deliveries",
                    ["source", "received_at"])
    op.create_table(
        "checkouts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("store_id", sa.String(255), nullable=False, unique=True),
        sa.Column("customer_id", sa.Integer,
                  sa.ForeignKey("customers.id", ondelete="CASCADE"), index=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("completed_at", sa.DateTime),
        sa.Column("url", sa.Text),
        sa.Column("items", Json),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("total_minor", sa.BigInteger, nullable=False),
        sa.Column("source_updated_at", sa.DateTime),
    )
    op.create_index("ix_checkouts_open", "checkouts", ["completed_at", "created_at"])
    op.create_table(
        "products",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("sku", sa.String(255), nullable=False, unique=True),
        sa.Column("stock_key", sa.String(255), index=True),
        sa.Column("name", sa.Text),
        sa.Column("category", sa.Text),
        sa.Column("currency", sa.String(3)),
        sa.Column("price_minor", sa.BigInteger),
        sa.Column("in_stock", sa.Boolean, nullable=False),
        sa.Column("restocked_at", sa.DateTime),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("source_updated_at", sa.DateTime),
    )
    op.create_table(
        "stock_alerts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("customer_id", sa.Integer,
                  sa.ForeignKey("customers.id", ondelete="CASCADE"), nullable=False),
        sa.Column("sku", sa.String(255), nullable=False, index=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("notified_at", sa.DateTime),
        sa.UniqueConstraint("customer_id", "sku", name="uq_stock_alerts_customer_sku"),
    )
    for table in ("customers", "orders"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("source_updated_at", sa.DateTime))


def downgrade() -> None:
    for table in ("orders", "customers"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("source_updated_at")
    op.drop_table("stock_alerts")
    op.drop_table("products")
    op.drop_index("ix_checkouts_open", "checkouts")
    op.drop_table("checkouts")
    op.drop_index("ix_hook_deliveries_source_received", "hook_deliveries")
    op.drop_table("hook_deliveries")
