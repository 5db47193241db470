"""Delivery: the intro chosen at plan time, and the shared send-rate slots.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("intro", sa.String(255)))
    # Senders claim due rows by status and due time; leases are found by owner.
    op.create_index("ix_deliveries_lease_owner", "deliveries", ["lease_owner"])
    # Rendering looks up the coupons of a batch of rows.
    op.create_index("ix_coupons_delivery_id", "coupons", ["delivery_id"])
    op.create_table(
        "rate_slots",
        sa.Column("slot", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("free_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_rate_slots_free_at", "rate_slots", ["free_at"])


def downgrade() -> None:
    op.drop_table("rate_slots")
    op.drop_index("ix_coupons_delivery_id", "coupons")
    op.drop_index("ix_deliveries_lease_owner", "deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("intro")
