"""The console's computed figures (issue 23 part 3; docs/console.md, "Computed figures"):
every statement on `console_figures`. One row a kind (`segments`, `counts`, `forecast`), replaced
whole by each refresh, so a reader sees one computation or the one before, never half."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, select

from mailer.store.db import Connection, upsert
from mailer.store.models import ConsoleFigure

FIGURES = cast(Table, ConsoleFigure.__table__)
KINDS = ("segments", "counts", "forecast")


@dataclass(frozen=True)
class Figure:
    """A stored figure: what it describes (AS_OF, on the clock it was computed with), when
    it was computed (wall time) and in how many seconds, by whom, from which workspace."""

    kind: str
    as_of: datetime
    computed_at: datetime
    seconds: float
    workspace: str
    computed_by: str
    document: dict[str, Any]


def stamp() -> datetime:
    """A figure's `computed_at`: the wall clock, not the logical one (--now), so that
    the console, the daemon and `mailer console refresh`, each with a --now of its own,
    agree on how old a stored figure is (`age`)."""
    return datetime.now(UTC).replace(microsecond=0)


def age(figure: Figure) -> float:
    """Seconds since FIGURE was computed, on the clock `stamp` stamped it with (a naive
    time, as a figure made by hand may have, is read as UTC: the column's own)."""
    at = figure.computed_at
    return (stamp() - (at if at.tzinfo is not None else at.replace(tzinfo=UTC))
            ).total_seconds()


def save(conn: Connection, figure: Figure) -> None:
    """Store FIGURE in place of its kind's last one."""
    values = {"kind": figure.kind, "as_of": figure.as_of, "computed_at": figure.computed_at,
              "seconds": figure.seconds, "workspace": figure.workspace,
              "computed_by": figure.computed_by, "document": figure.document}
    statement = upsert(conn, FIGURES).values(values)
    conn.execute(statement.on_conflict_do_update(
        index_elements=[FIGURES.c.kind],
        set_={k: statement.excluded[k] for k in values if k != "kind"}))


def load(conn: Connection, kind: str) -> Figure | None:
    """The stored figure of KIND, None when none was ever computed."""
    row = conn.execute(select(FIGURES.c.kind, FIGURES.c.as_of, FIGURES.c.computed_at,
                              FIGURES.c.seconds, FIGURES.c.workspace, FIGURES.c.computed_by,
                              FIGURES.c.document).where(FIGURES.c.kind == kind)).first()
    return None if row is None else Figure(*row)
