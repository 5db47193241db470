"""Relationship stages (docs/customers.md): where a customer stands with the store, from
their paid orders as of now. Pure: the store's SQL (mailer.store.insight.stages) computes the same
rules for every customer at once, and tests hold the two to each other.

The first rule that matches, over paid orders placed at or before now:

- awareness: no paid order;
- termination: the latest paid order is before now − lapsed_after (strictly, as
  `last_order: {more_than_ago: …}`: an order exactly lapsed_after ago keeps the customer);
- commitment: at least committed_orders paid orders placed in [now − committed_within,
  now] (inclusive, as `orders: {within: …}`);
- expansion: two or more paid orders;
- exploration: exactly one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from enum import StrEnum

from mailer.config.settings import StageSettings


class Stage(StrEnum):
    """The five stages, in the order a customer usually passes through them (the same
    names, in the same order, as mailer.config.settings.STAGE_NAMES)."""

    AWARENESS = "awareness"
    EXPLORATION = "exploration"
    EXPANSION = "expansion"
    COMMITMENT = "commitment"
    TERMINATION = "termination"


def stage_from_counts(orders: int, last_at: datetime | None, recent: int, *, now: datetime,
                      rules: StageSettings) -> Stage:
    """The stage from a customer's paid orders by now: how many, the latest one's time, and
    how many were placed in [now − committed_within, now]."""
    if orders == 0 or last_at is None:
        return Stage.AWARENESS
    if last_at < now - rules.lapsed_after:
        return Stage.TERMINATION
    if recent >= rules.committed_orders:
        return Stage.COMMITMENT
    return Stage.EXPANSION if orders >= 2 else Stage.EXPLORATION


def stage_of(placed: Iterable[datetime], *, now: datetime, rules: StageSettings) -> Stage:
    """The stage from the times of a customer's paid orders (those after now are left out)."""
    times = [moment for moment in placed if moment <= now]
    since = now - rules.committed_within
    return stage_from_counts(len(times), max(times, default=None),
                             sum(1 for moment in times if moment >= since), now=now,
                             rules=rules)


def stage_of_latest(orders: int, latest: Sequence[datetime], *, now: datetime,
                    rules: StageSettings) -> Stage:
    """The stage from the count of paid orders by now and the times of the latest ones
    (newest first, at least committed_orders of them when there are that many): what a
    mail's context holds (mailer.mail.context)."""
    since = now - rules.committed_within
    recent = sum(1 for moment in latest[:rules.committed_orders] if since <= moment <= now)
    return stage_from_counts(orders, latest[0] if latest else None, recent, now=now,
                             rules=rules)
