"""The numbers of one campaign (DESIGN §5 `report`): ledger states, exclusions (summed
per planning run), variants, and what recipients did: opens, clicks, unsubscribes,
ratings and the comments left with them."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from mailer.core import machines
from mailer.core.clock import iso_z
from mailer.core.errors import NotFoundError
from mailer.core.suggest import did_you_mean
from mailer.store import events
from mailer.store.db import Engine
from mailer.store.ledger import counts, mails_with_event_by_variant, variant_states
from mailer.store.versions import plan_run_exclusions

Segments = Callable[[list[int]], dict[int, set[str]]]  # customer ids -> their segments
COMMENTS = 100  # the newest rating comments a report holds


# The dataclasses' fields are in the order of their keys in the JSON document.
@dataclass(frozen=True)
class Reach:
    """Opens or clicks: the mails that had one, and all of them."""

    mails: int
    total: int


@dataclass(frozen=True)
class Satisfaction:
    """Ratings 1-5: how many, the mean, and the satisfaction index (CSAT: the share of
    4s and 5s, in per cent, as stores report it); None without ratings."""

    count: int
    mean: float | None
    csat: float | None

    @classmethod
    def of(cls, scores: Counter[int]) -> Satisfaction:
        count = sum(scores.values())
        mean = sum(score * n for score, n in scores.items()) / count if count else None
        satisfied = scores[4] + scores[5]
        return cls(count, round(mean, 2) if mean is not None else None,
                   round(100 * satisfied / count, 1) if count else None)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Ratings(Satisfaction):
    """All of a campaign's ratings, and the same per ISO week and per segment."""

    scores: Mapping[int, int]  # score 1-5 -> how many
    by_week: tuple[tuple[str, Satisfaction], ...]  # ("2026-W48", …), oldest first
    by_segment: Mapping[str, Satisfaction]  # segments the raters are in now

    def as_json(self) -> dict[str, Any]:
        return {"count": self.count, "mean": self.mean, "csat": self.csat,
                "scores": {str(score): n for score, n in self.scores.items()},
                "by_week": [{"week": week, **brief.as_json()} for week, brief in self.by_week],
                "by_segment": {segment: brief.as_json()
                               for segment, brief in self.by_segment.items()}}


@dataclass(frozen=True)
class Variant:
    """One subject variant: its rows planned and sent, its mails opened, clicked and
    unsubscribed from."""

    variant: int  # numbered from 1
    planned: int
    sent: int
    opened: int
    clicked: int
    unsubscribed: int = 0


@dataclass(frozen=True)
class Winner:
    """The variant with the best click rate, and how sure it beats the runner-up."""

    variant: int
    metric: str  # what it won by: "clicks"
    click_rate: float
    runner_up: int
    confidence: float


@dataclass(frozen=True)
class Comment:
    """A comment left with a rating: when it was rated, by whom (store id), the score."""

    at: datetime
    customer: str | None
    score: int
    text: str

    def as_json(self) -> dict[str, Any]:
        return {"at": iso_z(self.at), "customer": self.customer, "score": self.score,
                "text": self.text}


@dataclass(frozen=True)
class CampaignReport:
    campaign: str
    states: Mapping[str, int]  # rows by ledger state, every state (zeros included)
    excluded: Mapping[str, int]  # customers excluded by reason, summed over plan runs
    opens: Reach  # a reader's (mailer.core.machines.HUMAN): machines' are apart
    clicks: Reach
    unsubscribes: int
    ratings: Ratings
    variants: tuple[Variant, ...]
    winner: Winner | None
    comments: tuple[Comment, ...]  # rating comments, the newest COMMENTS, newest first
    # privacy proxies' prefetches, filters' and link scanners' hits (mailer.core.machines)
    machine_opens: Reach = Reach(0, 0)
    machine_clicks: Reach = Reach(0, 0)

    @property
    def planned(self) -> int:
        return sum(self.states.values())

    def as_json(self) -> dict[str, Any]:
        """The document `mailer report --json` prints."""
        return {"campaign": self.campaign, "planned": self.planned, **self.states,
                "excluded": dict(self.excluded), "opens": asdict(self.opens),
                "clicks": asdict(self.clicks), "machine_opens": asdict(self.machine_opens),
                "machine_clicks": asdict(self.machine_clicks),
                "unsubscribes": self.unsubscribes,
                "ratings": self.ratings.as_json(),
                "variants": [asdict(variant) for variant in self.variants],
                "winner": None if self.winner is None else asdict(self.winner),
                "comments": [comment.as_json() for comment in self.comments]}


def report_of(engine: Engine, campaign: str, known: list[str],
              segments_of: Segments | None = None) -> CampaignReport:
    """Rows by state (every key, zeros included), exclusions summed over plan runs,
    and per subject variant the rows planned and sent. A campaign of the workspace
    (KNOWN) that was never planned has zeros; one never heard of is an error."""
    states = counts(engine, campaign)
    excluded: Counter[str] = Counter()
    planned_sent: dict[int, tuple[int, int]] = {}
    with engine.connect() as conn:
        runs = plan_run_exclusions(conn, campaign)
        for found in runs:
            excluded.update(found)
        for variant, status, n in variant_states(conn, campaign):
            planned, sent = planned_sent.get(variant, (0, 0))
            planned_sent[variant] = (planned + n, sent + n if status == "sent" else sent)
        # the kinds are the split: a machine's open or click is stored as another kind
        opens = Reach(*events.mails_and_count(conn, campaign, machines.OPEN))
        clicks = Reach(*events.mails_and_count(conn, campaign, machines.CLICK))
        machine_opens = Reach(*events.mails_and_count(conn, campaign, machines.MACHINE_OPEN))
        machine_clicks = Reach(*events.mails_and_count(conn, campaign, machines.MACHINE_CLICK))
        unsubscribes = events.count(conn, campaign, "unsubscribe")
        ratings = _ratings(events.ratings_given(conn, campaign), segments_of)
        opened = dict(mails_with_event_by_variant(conn, campaign, machines.OPEN))
        clicked = dict(mails_with_event_by_variant(conn, campaign, machines.CLICK))
        unsubscribed = dict(mails_with_event_by_variant(conn, campaign, "unsubscribe"))
        comments = tuple(Comment(*found) for found in events.comments_given(
            conn, campaign, COMMENTS))
    if not runs and not any(states.values()) and campaign not in known:
        raise NotFoundError(f"unknown campaign {campaign!r}{did_you_mean(campaign, known)}")
    variants = tuple(Variant(v + 1, planned, sent, opened.get(v, 0), clicked.get(v, 0),
                             unsubscribed.get(v, 0))
                     for v, (planned, sent) in sorted(planned_sent.items()))
    return CampaignReport(campaign, states, dict(sorted(excluded.items())), opens, clicks,
                          unsubscribes, ratings, variants, winner(variants), comments,
                          machine_opens, machine_clicks)


def _ratings(rated: list[tuple[int, int, datetime]], segments_of: Segments | None) -> Ratings:
    """RATED ((customer id, score, when), oldest first) summed up, per ISO week and per
    segment the customers are in (when SEGMENTS_OF can tell)."""
    scores = Counter(score for _, score, _ in rated)
    weeks: dict[str, Counter[int]] = {}
    for _, score, at in rated:
        year, week, _ = at.isocalendar()
        weeks.setdefault(f"{year}-W{week:02d}", Counter())[score] += 1
    by_segment: dict[str, Counter[int]] = {}
    if segments_of is not None and rated:
        member_of = segments_of(sorted({customer for customer, _, _ in rated}))
        for customer, score, _ in rated:
            for segment in member_of.get(customer, ()):
                by_segment.setdefault(segment, Counter())[score] += 1
    overall = Satisfaction.of(scores)
    return Ratings(overall.count, overall.mean, overall.csat,
                   scores={score: scores[score] for score in range(1, 6)},
                   by_week=tuple((week, Satisfaction.of(counted))
                                 for week, counted in sorted(weeks.items())),
                   by_segment={segment: Satisfaction.of(counted)
                               for segment, counted in sorted(by_segment.items())})


def winner(variants: Sequence[Variant]) -> Winner | None:
    """The variant with the best click rate (clicked mails / sent mails) and how sure we
    are that it beats the runner-up: one minus the p-value of a one-sided
    two-proportion z-test. None with fewer than two variants or no click yet."""
    rated = [v for v in variants if v.sent]
    if len(rated) < 2:
        return None
    ranked = sorted(rated, key=lambda v: v.clicked / v.sent, reverse=True)
    best, second = ranked[0], ranked[1]
    if not best.clicked:
        return None
    p1, p2 = best.clicked / best.sent, second.clicked / second.sent
    pooled = (best.clicked + second.clicked) / (best.sent + second.sent)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / best.sent + 1 / second.sent))
    z = (p1 - p2) / spread if spread else 0.0
    confidence = 0.5 * (1 + math.erf(z / math.sqrt(2)))
    return Winner(best.variant, "clicks", round(p1, 4), second.variant, round(confidence, 3))
