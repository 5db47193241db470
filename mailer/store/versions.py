"""Campaign versions (the definition each ledger row is sent from) and the plan runs
(what each planning run planned and excluded)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, func, insert, select

from mailer.store.db import Connection, Engine, upsert
from mailer.store.models import CampaignVersion, PlanRun


def stored_version_id(conn: Connection, campaign: str, definition: dict[str, Any],
                      now: datetime) -> int:
    """The id of the campaign version with this content, created if new."""
    digest = hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()
    # Two planners may store the same version at once: insert-or-ignore, then read.
    conn.execute(upsert(conn, cast(Table, CampaignVersion.__table__))
                 .values(campaign=campaign, content_hash=digest, definition=definition,
                         created_at=now)
                 .on_conflict_do_nothing(index_elements=["content_hash"]))
    return int(conn.execute(select(CampaignVersion.id)
                            .where(CampaignVersion.content_hash == digest)).scalar_one())


def record_plan_run(conn: Connection, campaign: str, occurrence: str, now: datetime,
                    planned: int, excluded: dict[str, int]) -> None:
    """Append one occurrence's counts of a planning run: planned, excluded by reason."""
    conn.execute(insert(PlanRun).values(campaign=campaign, occurrence=occurrence, now=now,
                                        planned=planned, excluded=excluded))


def latest_plan_run(engine: Engine) -> datetime | None:
    """The `now` of the store's latest planning run that wrote a plan, or None before any
    (a `--now` before it is refused by the commands that write plans)."""
    with engine.connect() as conn:
        latest: datetime | None = conn.execute(select(func.max(PlanRun.now))).scalar()
    return latest


def version_definition(engine: Engine, version_id: int) -> dict[str, Any]:
    """The stored definition of one campaign version (what a row is rendered from)."""
    with engine.connect() as conn:
        stored: dict[str, Any] = conn.execute(
            select(CampaignVersion.definition)
            .where(CampaignVersion.id == version_id)).scalar_one()
    return stored


def stored_version(conn: Connection, version_id: int) -> tuple[str, dict[str, Any]] | None:
    """The content hash and the definition of one campaign version, or None: what a
    survey answer is recorded with (the hash) and its page shows (the frozen survey)."""
    found = conn.execute(select(CampaignVersion.content_hash, CampaignVersion.definition)
                         .where(CampaignVersion.id == version_id)).first()
    return None if found is None else (str(found[0]), dict(found[1]))


def plan_run_exclusions(conn: Connection, campaign: str) -> list[dict[str, int]]:
    """Per plan run of CAMPAIGN, the customers it excluded by reason."""
    return [{reason: int(n) for reason, n in (found or {}).items()}
            for (found,) in conn.execute(select(PlanRun.excluded)
                                         .where(PlanRun.campaign == campaign))]


def last_planned_by_campaign(conn: Connection) -> dict[str, datetime]:
    """Campaign -> the `now` of its latest planning run that wrote a plan."""
    return {str(campaign): moment for campaign, moment in conn.execute(
        select(PlanRun.campaign, func.max(PlanRun.now)).group_by(PlanRun.campaign))}


def versioned_campaigns(conn: Connection) -> set[str]:
    """Every campaign with a stored version: those the ledger may hold rows of (a small
    table, unlike the ledger)."""
    return {str(campaign) for campaign in
            conn.execute(select(CampaignVersion.campaign).distinct()).scalars()}
