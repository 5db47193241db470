"""`mailer campaigns`: every campaign of the workspace at a glance (docs/campaigns.md).

A campaign is `draft` while its file does not validate, `paused` while an operator
has paused it (`mailer pause`), `ended` when its trigger can never be due again and
none of its rows may still go out, `running` while it is due or has rows that may
still go out, else `scheduled`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from mailer.config.campaign import TRIGGERS, Campaign
from mailer.config.conditions import SegmentSpec
from mailer.config.settings import Settings
from mailer.config.workspace import load_campaigns, load_segments
from mailer.config.yamlsrc import load_yaml
from mailer.core.clock import iso_z, zone
from mailer.core.errors import ConfigError, Problem
from mailer.planning.triggers import due_now, never_due_again
from mailer.planning.wakeups import next_wakeup
from mailer.segments.runner import count, scope_for
from mailer.store import events
from mailer.store.customers import time_zones
from mailer.store.db import Connection, Engine
from mailer.store.ledger import pending_by_campaign, sent_by_campaign
from mailer.store.operator.pauses import Pause, pauses
from mailer.store.versions import last_planned_by_campaign


class State(StrEnum):
    DRAFT = "draft"
    PAUSED = "paused"
    ENDED = "ended"
    RUNNING = "running"
    SCHEDULED = "scheduled"


@dataclass(frozen=True)
class Overview:
    """One campaign's line; the fields up to `unsubscribed` are its JSON keys in order."""

    campaign: str  # the file stem
    name: str | None  # None: a draft whose name cannot be read
    trigger: str | None
    state: State
    next_due: datetime | None  # None: never again (or a draft)
    last_planned: datetime | None  # the latest planning run that wrote a plan for it
    audience: int | None  # its segment's size now; None for a draft
    sent: int
    opened: int  # mails with at least one open
    clicked: int  # mails with at least one click
    unsubscribed: int  # unsubscribes through its mails' links
    problem: Problem | None = None  # a draft's first problem
    paused: Pause | None = None  # its pause (`mailer pause`), a draft's too

    def pause_json(self) -> dict[str, Any] | None:
        if self.paused is None:
            return None
        return {"at": iso_z(self.paused.at), "by": self.paused.by,
                "reason": self.paused.reason}

    def as_json(self) -> dict[str, Any]:
        return {"campaign": self.campaign, "name": self.name, "trigger": self.trigger,
                "state": str(self.state),
                "next_due": None if self.next_due is None else iso_z(self.next_due),
                "last_planned": None if self.last_planned is None else iso_z(self.last_planned),
                "audience": self.audience, "sent": self.sent, "opened": self.opened,
                "clicked": self.clicked, "unsubscribed": self.unsubscribed,
                "paused": self.pause_json()}


@dataclass(frozen=True)
class Counts:
    """A campaign's counts over the ledger and its events (an Overview's `sent` to
    `unsubscribed`)."""

    sent: int = 0
    opened: int = 0
    clicked: int = 0
    unsubscribed: int = 0


def campaign_counts(conn: Connection) -> dict[str, Counts]:
    """Campaign -> its counts, for every campaign with any: four aggregates over the whole
    ledger and events (the console keeps them as a computed figure)."""
    sent = sent_by_campaign(conn)
    opened = events.mails_with_event_by_campaign(conn, "open")
    clicked = events.mails_with_event_by_campaign(conn, "click")
    unsubscribed = events.count_by_campaign(conn, "unsubscribe")
    return {slug: Counts(sent.get(slug, 0), opened.get(slug, 0), clicked.get(slug, 0),
                         unsubscribed.get(slug, 0))
            for slug in sorted(set(sent) | set(opened) | set(clicked) | set(unsubscribed))}


def campaign_files(root: Path) -> dict[str, str]:
    """Campaign id -> its file's path in the workspace, as the loader reads them."""
    return {file.stem: f"campaigns/{file.name}"
            for file in sorted((root / "campaigns").glob("*.y*ml"))
            if file.suffix in (".yaml", ".yml")}


def _readable(root: Path, relative: str) -> tuple[str | None, str | None]:
    """A draft's name and trigger, when its YAML can be read and they are plain values."""
    try:
        data = load_yaml((root / relative).read_text(encoding="utf-8"), relative)
    except (ConfigError, OSError, UnicodeDecodeError):
        return None, None
    if not isinstance(data, dict):
        return None, None
    name, trigger = data.get("name"), data.get("trigger")
    return (name.strip() or None if isinstance(name, str) else None,
            trigger if trigger in TRIGGERS else None)


def overview(root: Path, settings: Settings, engine: Engine, now: datetime, *,
             audiences: Mapping[str, int] | None = None,
             loaded: tuple[dict[str, SegmentSpec], dict[str, Campaign], list[Problem]]
             | None = None, zones: list[str] | None = None,
             counts: Mapping[str, Counts] | None = None) -> list[Overview]:
    """Every campaign file of the workspace at ROOT, by id, as of NOW. AUDIENCES, segment
    sizes computed before (the console keeps them), saves counting each segment; a
    segment missing from them has no audience (None). LOADED, the segments, campaigns
    and problems parsed before (the console keeps them), saves reading the files; ZONES,
    the store's time zones counted with the audiences, a scan of the customers; COUNTS,
    the campaigns' counts computed before (`campaign_counts`; a campaign missing from
    them has none), saves four aggregates over the ledger and events."""
    if loaded is not None:
        specs, campaigns, problems = loaded
    else:
        specs, _ = load_segments(root)
        campaigns, problems = load_campaigns(root, set(specs))
    tz = zone(settings.timezone)
    zones = sorted((set(zones) if zones is not None else time_zones(engine))
                   | {settings.timezone})
    scope = scope_for(settings, now, engine)
    with engine.connect() as conn:
        if counts is None:
            counts = campaign_counts(conn)
        pending = pending_by_campaign(conn, now)
        last_planned = last_planned_by_campaign(conn)
        paused = pauses(conn)
    counted: dict[str, int] = {}  # by segment: campaigns often share one
    found = []
    for slug, relative in campaign_files(root).items():
        mine = counts.get(slug, Counts())
        numbers = (mine.sent, mine.opened, mine.clicked, mine.unsubscribed)
        spec = campaigns.get(slug)
        if spec is None:
            name, trigger = _readable(root, relative)
            first = next((p for p in problems if p.path == relative), None)
            found.append(Overview(slug, name, trigger, State.DRAFT, None,
                                  last_planned.get(slug), None, *numbers, problem=first,
                                  paused=paused.get(slug)))
            continue
        due = due_now(spec, now, tz, zones)
        if slug in paused:
            state = State.PAUSED
        elif pending.get(slug) or due:
            state = State.RUNNING
        elif never_due_again(spec, now, tz):
            state = State.ENDED
        else:
            state = State.SCHEDULED
        if audiences is not None:
            audience = audiences.get(spec.segment)
        else:
            if spec.segment not in counted:
                counted[spec.segment] = count(engine, specs, spec.segment, scope)
            audience = counted[spec.segment]
        found.append(Overview(slug, spec.name, spec.trigger, state,
                              now if due else next_wakeup(spec, now, tz, zones),
                              last_planned.get(slug), audience, *numbers,
                              paused=paused.get(slug)))
    return found
