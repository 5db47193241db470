"""Double opt-in (issue 20): consent `pending` and the proof of a confirmation on the
customer (where and when they asked, when the confirmation and its reminder were
queued, when and from which IP they confirmed), with a partial index over the pending
customers for the confirmation sweep.

Revision ID: 0018
Revises: 0017
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

COLUMNS = (("opt_in_source", sa.String(64)), ("opt_in_requested_at", sa.DateTime),
           ("opt_in_sent_at", sa.DateTime), ("opt_in_reminded_at", sa.DateTime),
           ("opt_in_confirmed_at", sa.DateTime), ("opt_in_ip", sa.String(45)))
PENDING = sa.text("consent = 'pending'")


def upgrade() -> None:
    with op.batch_alter_table("customers") as batch:
        for name, kind in COLUMNS:
            batch.add_column(sa.Column(name, kind))
    op.create_index("ix_customers_pending", "customers", ["opt_in_sent_at"],
                    sqlite_where=PENDING, postgresql_where=PENDING)


def downgrade() -> None:
    op.drop_index("ix_customers_pending", table_name="customers")
    with op.batch_alter_table("customers") as batch:
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
