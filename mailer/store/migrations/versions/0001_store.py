"""The store: customers, orders, order lines, suppressions.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "customers",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("store_id", sa.String(255), nullable=False, unique=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("email_key", sa.String(320), nullable=False, unique=True),
        sa.Column("first_name", sa.Text),
        sa.Column("last_name", sa.Text),
        sa.Column("birth_date", sa.Date),
        sa.Column("birth_md", sa.String(5)),
        sa.Column("timezone", sa.String(64)),
        sa.Column("locale", sa.String(35)),
        sa.Column("country", sa.String(64)),
        sa.Column("city", sa.Text),
        sa.Column("signed_up_at", sa.DateTime),
        sa.Column("tags", Json),
        sa.Column("attributes", Json),
        sa.Column("referral_code", sa.String(64), unique=True),
        sa.Column("referred_by", sa.String(255)),
        sa.Column("consent", sa.String(16), nullable=False),
        sa.Column("consent_at", sa.DateTime),
        sa.Column("consent_source", sa.String(64)),
        sa.Column("consent_reason", sa.Text),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_customers_birth_md", "customers", ["birth_md"])
    op.create_index("ix_customers_referred_by", "customers", ["referred_by"])
    op.create_table(
        "orders",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("store_id", sa.String(255), nullable=False, unique=True),
        sa.Column("customer_id", sa.Integer,
                  sa.ForeignKey("customers.id", ondelete="CASCADE"), nullable=False),
        sa.Column("placed_at", sa.DateTime, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("total_minor", sa.BigInteger, nullable=False),
        sa.Column("coupon_code", sa.String(64)),
    )
    op.create_index("ix_orders_customer_placed", "orders",
                    ["customer_id", "placed_at", "status", "currency", "total_minor"])
    op.create_table(
        "order_lines",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("order_id", sa.Integer,
                  sa.ForeignKey("orders.id", ondelete="CASCADE"), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("sku", sa.String(255)),
        sa.Column("product", sa.Text),
        sa.Column("category", sa.Text),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("price_minor", sa.BigInteger),
    )
    op.create_index("ix_order_lines_order_id", "order_lines", ["order_id"])
    op.create_table(
        "suppressions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email_key", sa.String(320), nullable=False, unique=True),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    for table in ("suppressions", "order_lines", "orders", "customers"):
        op.drop_table(table)
