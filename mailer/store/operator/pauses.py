"""Paused campaigns (issue 23; docs/campaigns.md, "Pausing a campaign"): every statement on
`paused_campaigns`. A campaign is paused while it has a row here. The planner asks
`is_paused` once per plan; the ledger's lease names the paused campaigns (read in its
transaction) and its start statement embeds `paused_clause`, so a pause taking effect
while a sender runs stops its next lease and its next start at once (a mail already on
the wire finishes)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, delete, exists, select

from mailer.store.db import Connection, Engine, upsert
from mailer.store.models import PausedCampaign

PAUSED = cast(Table, PausedCampaign.__table__)


@dataclass(frozen=True)
class Pause:
    """A campaign's pause: since when, by whom, and why (None: no reason given)."""

    campaign: str
    at: datetime
    by: str
    reason: str | None


def paused_clause(campaign: Any) -> Any:
    """SQL: the campaign named by the column CAMPAIGN is paused. The ledger's start
    statement embeds it; its lease does not (it names the paused campaigns, read first:
    `ledger.due(now, campaigns, paused)`)."""
    return exists().where(PAUSED.c.campaign == campaign)


def pause(conn: Connection, campaign: str, *, at: datetime, by: str,
          reason: str | None) -> bool:
    """Pause CAMPAIGN; False when it was paused already (its first pause is kept)."""
    written = conn.execute(upsert(conn, PAUSED).values(
        campaign=campaign, paused_at=at, paused_by=by, reason=reason)
        .on_conflict_do_nothing(index_elements=[PAUSED.c.campaign])
        .returning(PAUSED.c.campaign)).first()
    return written is not None


def resume(conn: Connection, campaign: str) -> Pause | None:
    """Resume CAMPAIGN; the pause it ended, None when it was not paused."""
    found = conn.execute(delete(PAUSED).where(PAUSED.c.campaign == campaign).returning(
        PAUSED.c.campaign, PAUSED.c.paused_at, PAUSED.c.paused_by, PAUSED.c.reason)).first()
    return None if found is None else Pause(*found)


def pause_of(conn: Connection, campaign: str) -> Pause | None:
    """CAMPAIGN's pause, None while it is not paused."""
    found = conn.execute(select(PAUSED.c.campaign, PAUSED.c.paused_at, PAUSED.c.paused_by,
                                PAUSED.c.reason).where(PAUSED.c.campaign == campaign)).first()
    return None if found is None else Pause(*found)


def is_paused(engine: Engine, campaign: str) -> bool:
    """Whether CAMPAIGN is paused now."""
    with engine.connect() as conn:
        return pause_of(conn, campaign) is not None


def pauses(conn: Connection) -> dict[str, Pause]:
    """Every paused campaign's pause, by campaign."""
    return {row[0]: Pause(*row) for row in conn.execute(
        select(PAUSED.c.campaign, PAUSED.c.paused_at, PAUSED.c.paused_by, PAUSED.c.reason)
        .order_by(PAUSED.c.campaign))}
