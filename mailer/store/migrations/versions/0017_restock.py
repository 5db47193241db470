"""products.url: where a back-in-stock mail sends the reader (the custom event's `url`,
WooCommerce's `permalink`); an index on products.restocked_at, which each plan of a
back_in_stock campaign reads (the products restocked in the last 3 days). The restock
time itself (restocked_at, set when in_stock turns true) came with 0016.

Revision ID: 0017
Revises: 0016
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("products") as batch:
        batch.add_column(sa.Column("url", sa.Text))
    op.create_index("ix_products_restocked_at", "products", ["restocked_at"])


def downgrade() -> None:
    op.drop_index("ix_products_restocked_at", "products")
    with op.batch_alter_table("products") as batch:
        batch.drop_column("url")
