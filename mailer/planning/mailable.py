"""Would the plan mail these customers now, and if not, why (preview and test sends).

The planner's own rules, asked about a few customers rather than the whole audience:
the campaign's due candidates at scope.now (planner.candidates), the planner's facts of
each and policy.decide, the A/B hold-back included. Only the candidates asked about get
their facts read, so a question about one customer costs one pass over the candidate
ids. A customer who is no candidate is `not_in_segment` outside the campaign's segment,
else `not_due`: the trigger has nothing due for them at now (outside the campaign's
window, not their birthday, no order in the window). One campaign alone is judged, as
`mailer plan CAMPAIGN` does: mails other campaigns would plan in the same run are not
counted against the caps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache

from mailer.config.campaign import Campaign
from mailer.config.conditions import SegmentSpec
from mailer.config.settings import Settings
from mailer.core.clock import as_local, zone
from mailer.core.occurrences import is_reminder
from mailer.core.states import PAUSED_CAMPAIGN
from mailer.planning.frozen import send_prior
from mailer.planning.planner import (
    Candidate,
    ab_winner,
    batch_facts,
    best_hours,
    candidates,
)
from mailer.planning.policy import decide, in_test_group
from mailer.planning.runcounts import RunCounts
from mailer.segments.compiler import Scope
from mailer.segments.runner import member_ids
from mailer.store.db import Engine
from mailer.store.operator.pauses import is_paused

NOT_IN_SEGMENT = "not_in_segment"
NOT_DUE = "not_due"


@dataclass(frozen=True)
class Verdict:
    """What the plan at now would do with one customer."""

    reason: str | None  # None: mailed; else the planner's reason, not_in_segment, not_due
    occurrence: str = ""  # the occurrence they would get, or were judged for
    send_after: datetime | None = None  # mailed: when it would leave (send_at: best's hour)

    @property
    def mailable(self) -> bool:
        return self.reason is None


def verdicts(engine: Engine, specs: dict[str, SegmentSpec], slug: str, campaign: Campaign, *,
             scope: Scope, settings: Settings, ids: list[int]) -> dict[int, Verdict]:
    """The verdict on each of IDS: mailed for one of its due occurrences, else the reason
    of the first occurrence it was judged for, else not_in_segment or not_due."""
    found: dict[int, Verdict] = {}
    wanted = set(ids)

    def open_question(candidate: Candidate) -> bool:
        known = found.get(candidate.customer_id)
        return candidate.customer_id in wanted and (known is None or not known.mailable)

    for candidate, reason, leaves in _judged(engine, specs, slug, campaign, scope=scope,
                                             settings=settings, asked=open_question):
        if candidate.customer_id not in found or reason is None:
            found[candidate.customer_id] = Verdict(reason, candidate.occurrence, leaves)
        if len(found) == len(wanted) and all(v.mailable for v in found.values()):
            break
    rest = sorted(wanted - set(found))
    members = set(member_ids(engine, specs, campaign.segment, scope, limit=len(rest),
                             among=rest)) if rest else set()
    for customer_id in rest:
        found[customer_id] = Verdict(NOT_DUE if customer_id in members else NOT_IN_SEGMENT)
    return found


def first_mailable(engine: Engine, specs: dict[str, SegmentSpec], slug: str,
                   campaign: Campaign, *, scope: Scope, settings: Settings,
                   limit: int) -> dict[int, Verdict]:
    """Up to LIMIT customers the plan at now would mail, in the planner's order."""
    found: dict[int, Verdict] = {}
    for candidate, reason, leaves in _judged(engine, specs, slug, campaign, scope=scope,
                                             settings=settings,
                                             asked=lambda c: c.customer_id not in found):
        if reason is None:
            found[candidate.customer_id] = Verdict(None, candidate.occurrence, leaves)
            if len(found) >= limit:
                break
    return found


def _judged(engine: Engine, specs: dict[str, SegmentSpec], slug: str, campaign: Campaign, *,
            scope: Scope, settings: Settings, asked: Callable[[Candidate], bool]
            ) -> Iterator[tuple[Candidate, str | None, datetime | None]]:
    """Each due candidate ASKED about, with the planner's reason not to mail it (None:
    it would be planned) and when it would leave, in the planner's order. The steps of
    planner.plan, less the writing: the same facts, caps, quiet hours, best hours,
    expiry and A/B hold-back."""
    now, default_zone = scope.now, zone(settings.timezone)
    caps = settings.policy.frequency
    caps_span = max((cap.per for cap in caps), default=timedelta(0))
    topics = frozenset(cap.topic for cap in caps if cap.topic is not None)
    reminder_starts = (as_local(campaign.starts, default_zone)
                       if campaign.reminder is not None and campaign.starts else None)
    winner = campaign.winner if len(campaign.subject) > 1 else None
    winners: dict[str, int | None] = {}  # occurrence -> the winning variant, None: testing
    prior = cache(lambda: send_prior(engine, settings.timezone, now))
    paused = PAUSED_CAMPAIGN if is_paused(engine, slug) else None  # the first reason
    for page in candidates(engine, specs, slug, campaign, scope, settings):
        batch = [candidate for candidate in page if asked(candidate)]
        if paused:  # no fact is read for anyone
            yield from ((candidate, paused, None) for candidate in batch)
            continue
        if not batch:
            continue
        with engine.connect() as conn:
            people, facts = batch_facts(conn, slug, campaign, batch, now, caps_span, RunCounts(),
                                        reminder_starts, topics=topics,
                                        sunset=settings.policy.sunset)
            hours = best_hours(conn, campaign, people, settings, prior(), now) \
                if campaign.best_hour else {}
        for candidate in batch:
            person = people[candidate.customer_id]
            decision = decide(facts[(candidate.customer_id, candidate.occurrence)], now=now,
                              caps=caps, tz=zone(person.timezone or settings.timezone),
                              quiet=settings.policy.quiet_hours, expires=candidate.expires,
                              reminder=candidate.occurrence == "reminder",
                              hours=hours.get(candidate.customer_id))
            reason = candidate.reason or decision.reason  # no_holidays comes decided
            if reason is None and winner is not None and not is_reminder(candidate.occurrence):
                if candidate.occurrence not in winners:
                    winners[candidate.occurrence] = ab_winner(engine, slug,
                                                               candidate.occurrence,
                                                               campaign, now)
                if winners[candidate.occurrence] is None and not in_test_group(
                        slug, candidate.customer_id, winner.test_share):
                    reason = "waiting_for_winner"
            yield candidate, reason, decision.send_after if reason is None else None
