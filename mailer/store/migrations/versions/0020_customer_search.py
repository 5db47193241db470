"""The console's customer search (issue 23): indexes on the lower-case store id and names
and on the folded address for a case-insensitive prefix search (on SQLite the last one
doubles the unique index; one schema on both databases is worth the few pages).

PostgreSQL's indexes use text_pattern_ops, so `LIKE 'abc%'` is answered from them under
any database collation; SQLite answers a range on the same expressions.

Revision ID: 0020
Revises: 0019
"""

from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

# name -> the expression it indexes
INDEXES = {"ix_customers_store_id_lower": "(lower(store_id))",
           "ix_customers_first_name_lower": "(lower(first_name))",
           "ix_customers_last_name_lower": "(lower(last_name))",
           "ix_customers_email_key_prefix": "email_key"}


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    ops = " text_pattern_ops" if postgres else ""
    for name, expression in INDEXES.items():
        op.execute(f"CREATE INDEX {name} ON customers ({expression}{ops})")


def downgrade() -> None:
    for name in INDEXES:
        op.execute(f"DROP INDEX {name}")
