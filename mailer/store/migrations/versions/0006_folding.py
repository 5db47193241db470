"""One case fold on both databases: folded shadow columns, and address keys with the
Unicode form of their domain.

Adds `<column>_folded` beside every column segments match case-insensitively
and fills them in Python, in batches, with the fold the importer writes
(mailer.core.folding.fold, through mailer.store.models.folded). Recomputes
`email_key` of customers and suppressions: a key that would collide with another
customer's is reported and left as it was (the two records are one person, for the
operator to merge); two suppressions of one person become one.

Revision ID: 0006
Revises: 0005
"""

import logging
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from mailer.core.addresses import email_key
from mailer.store.models import folded

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

BATCH = 1000
log = logging.getLogger("mailer.migrations")
# The columns as of this revision (mailer.store.models.FOLDED may grow in later ones).
FOLDED = {"customers": ("country", "city", "locale", "tags", "attributes"),
          "order_lines": ("sku", "product", "category")}


def _table(name: str, columns: tuple[str, ...]) -> sa.TableClause:
    json = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
    types = {"tags": json, "attributes": json}
    return sa.table(name, sa.column("id", sa.Integer),
                    *(sa.column(c, types.get(c, sa.Text)) for c in columns),
                    *(sa.column(f"{c}_folded", types.get(c, sa.Text)) for c in columns))


def _batches(conn: sa.Connection, query: sa.Select[Any], id_column: Any) -> Any:
    """Rows of QUERY in batches of BATCH, by id (keyset pagination: flat memory)."""
    last = 0
    while True:
        rows = list(conn.execute(query.where(id_column > last).order_by(id_column)
                                 .limit(BATCH)))
        if not rows:
            return
        yield rows
        last = rows[-1].id


def _backfill(conn: sa.Connection, name: str) -> None:
    columns = FOLDED[name]
    table = _table(name, columns)
    statement = (table.update().where(table.c.id == sa.bindparam("_id"))
                 .values({f"{c}_folded": sa.bindparam(f"v_{c}") for c in columns}))
    query = sa.select(table.c.id, *(table.c[c] for c in columns))
    for rows in _batches(conn, query, table.c.id):
        params = []
        for row in rows:
            shadows = folded(name, {c: getattr(row, c) for c in columns})
            params.append({"_id": row.id, **{f"v_{c}": shadows[f"{c}_folded"]
                                             for c in columns}})
        conn.execute(statement, params)


def _rekey_customers(conn: sa.Connection) -> None:
    customers = sa.table("customers", sa.column("id", sa.Integer),
                         sa.column("store_id", sa.String), sa.column("email", sa.String),
                         sa.column("email_key", sa.String))
    query = sa.select(customers.c.id, customers.c.store_id, customers.c.email,
                      customers.c.email_key)
    for rows in _batches(conn, query, customers.c.id):
        moved = {row.id: (row, email_key(row.email)) for row in rows
                 if email_key(row.email) != row.email_key}
        if not moved:
            continue
        taken = {key: store_id for key, store_id in conn.execute(
            sa.select(customers.c.email_key, customers.c.store_id)
            .where(customers.c.email_key.in_([key for _, key in moved.values()])))}
        for row, key in moved.values():
            if key in taken:
                log.warning("customer %s keeps the address key %s: %s now names the same "
                            "person as customer %s (merge them)", row.store_id,
                            row.email_key, row.email, taken[key])
                continue
            conn.execute(customers.update().where(customers.c.id == row.id)
                         .values(email_key=key))
            taken[key] = row.store_id


def _rekey_suppressions(conn: sa.Connection) -> None:
    suppressions = sa.table("suppressions", sa.column("id", sa.Integer),
                            sa.column("email_key", sa.String))
    query = sa.select(suppressions.c.id, suppressions.c.email_key)
    for rows in _batches(conn, query, suppressions.c.id):
        moved = {row.id: email_key(row.email_key) for row in rows
                 if email_key(row.email_key) != row.email_key}
        if not moved:
            continue
        taken = set(conn.execute(sa.select(suppressions.c.email_key)
                                 .where(suppressions.c.email_key.in_(list(moved.values()))))
                    .scalars())
        for row_id, key in moved.items():
            if key in taken:  # the same person suppressed twice: one row is enough
                log.warning("suppression of %s merged with the existing one", key)
                conn.execute(suppressions.delete().where(suppressions.c.id == row_id))
                continue
            conn.execute(suppressions.update().where(suppressions.c.id == row_id)
                         .values(email_key=key))
            taken.add(key)


def upgrade() -> None:
    json = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
    with op.batch_alter_table("customers") as batch:
        for name in FOLDED["customers"]:
            batch.add_column(sa.Column(f"{name}_folded",
                                       json if name in ("tags", "attributes") else sa.Text))
    with op.batch_alter_table("order_lines") as batch:
        for name in FOLDED["order_lines"]:
            batch.add_column(sa.Column(f"{name}_folded", sa.Text))
    conn = op.get_bind()
    _backfill(conn, "customers")
    _backfill(conn, "order_lines")
    _rekey_customers(conn)
    _rekey_suppressions(conn)


def downgrade() -> None:
    with op.batch_alter_table("order_lines") as batch:
        for name in reversed(FOLDED["order_lines"]):
            batch.drop_column(f"{name}_folded")
    with op.batch_alter_table("customers") as batch:
        for name in reversed(FOLDED["customers"]):
            batch.drop_column(f"{name}_folded")
