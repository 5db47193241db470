"""The numbers of one campaign (DESIGN §5 `report`): ledger states, exclusions, variants,
and what recipients did: opens, clicks, unsubscribes and ratings."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Engine, func, select

from mailer.app.charts import Column, Segment
from mailer.core.errors import NotFoundError
from mailer.core.suggest import did_you_mean
from mailer.store.ledger import counts
from mailer.store.models import Delivery, Event, PlanRun

Segments = Callable[[list[int]], dict[int, set[str]]]  # customer ids -> their segments


def campaign_report(engine: Engine, campaign: str, known: list[str],
                    segments_of: Segments | None = None) -> dict[str, Any]:
    """Rows by state (every key, zeros included), exclusions summed over plan runs,
    and per subject variant the rows planned and sent. A campaign of the workspace
    (KNOWN) that was never planned has zeros; one never heard of is an error."""
    states = counts(engine, campaign)
    excluded: Counter[str] = Counter()
    variants: dict[int, dict[str, int]] = {}
    with engine.connect() as conn:
        runs = 0
        for (found,) in conn.execute(select(PlanRun.excluded).where(PlanRun.campaign == campaign)):
            runs += 1
            excluded.update({reason: int(n) for reason, n in (found or {}).items()})
        for variant, status, n in conn.execute(
                select(Delivery.subject_variant, Delivery.status, func.count())
                .where(Delivery.campaign == campaign)
                .group_by(Delivery.subject_variant, Delivery.status)):
            entry = variants.setdefault(int(variant), {"planned": 0, "sent": 0})
            entry["planned"] += int(n)
            if status == "sent":
                entry["sent"] += int(n)
        engaged = _engagement(conn, campaign, segments_of)
        by_variant = _by_variant(conn, campaign)
    if runs == 0 and not any(states.values()) and campaign not in known:
        raise NotFoundError(f"unknown campaign {campaign!r}{did_you_mean(campaign, known)}")
    listed = [{"variant": v + 1, **numbers, **by_variant.get(v, {"opened": 0, "clicked": 0})}
              for v, numbers in sorted(variants.items())]
    return {"campaign": campaign, "planned": sum(states.values()), **states,
            "excluded": dict(sorted(excluded.items())), **engaged,
            "variants": listed, "winner": winner(listed)}


def _engagement(conn: Connection, campaign: str,
                segments_of: Segments | None) -> dict[str, Any]:
    """Opens and clicks (mails that had one, and all of them), unsubscribes, ratings."""
    found: dict[str, Any] = {}
    for kind, key in (("open", "opens"), ("click", "clicks")):
        total, unique = conn.execute(
            select(func.count(), func.count(func.distinct(Event.delivery_id)))
            .where(Event.campaign == campaign, Event.kind == kind)).one()
        found[key] = {"mails": int(unique), "total": int(total)}
    found["unsubscribes"] = int(conn.execute(select(func.count()).where(
        Event.campaign == campaign, Event.kind == "unsubscribe")).scalar_one())
    rated = [(int(customer or 0), int(score or 0), at) for customer, score, at in conn.execute(
        select(Event.customer_id, Event.score, Event.at).where(
            Event.campaign == campaign, Event.kind == "rating").order_by(Event.at))]
    found["ratings"] = ratings(Counter(score for _, score, _ in rated))
    weeks: dict[str, Counter[int]] = {}
    for _, score, at in rated:
        year, week, _ = at.isocalendar()
        weeks.setdefault(f"{year}-W{week:02d}", Counter())[score] += 1
    found["ratings"]["by_week"] = [{"week": week, **_brief(scores)}
                                   for week, scores in sorted(weeks.items())]
    by_segment: dict[str, Counter[int]] = {}
    if segments_of is not None and rated:
        member_of = segments_of(sorted({customer for customer, _, _ in rated}))
        for customer, score, _ in rated:
            for segment in member_of.get(customer, ()):
                by_segment.setdefault(segment, Counter())[score] += 1
    found["ratings"]["by_segment"] = {segment: _brief(scores)
                                      for segment, scores in sorted(by_segment.items())}
    return found


def _brief(scores: Counter[int]) -> dict[str, Any]:
    full = ratings(scores)
    return {"count": full["count"], "mean": full["mean"], "csat": full["csat"]}


def ratings(scores: Counter[int]) -> dict[str, Any]:
    """Ratings 1-5: how many, the mean, and the satisfaction index (CSAT: the share of
    4s and 5s, in per cent, as stores report it)."""
    count = sum(scores.values())
    mean = sum(score * n for score, n in scores.items()) / count if count else None
    satisfied = scores[4] + scores[5]
    return {"count": count, "mean": round(mean, 2) if mean is not None else None,
            "csat": round(100 * satisfied / count, 1) if count else None,
            "scores": {str(score): scores[score] for score in range(1, 6)}}


def _by_variant(conn: Connection, campaign: str) -> dict[int, dict[str, int]]:
    """Per subject variant, the mails opened and the mails clicked."""
    found: dict[int, dict[str, int]] = {}
    for kind, key in (("open", "opened"), ("click", "clicked")):
        for variant, n in conn.execute(
                select(Delivery.subject_variant, func.count(func.distinct(Event.delivery_id)))
                .join(Delivery, Delivery.id == Event.delivery_id)
                .where(Event.campaign == campaign, Event.kind == kind)
                .group_by(Delivery.subject_variant)):
            found.setdefault(int(variant), {"opened": 0, "clicked": 0})[key] = int(n)
    return found


def winner(variants: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The variant with the best click rate (clicked mails / sent mails) and how sure we
    are that it beats the runner-up: one minus the p-value of a one-sided
    two-proportion z-test. None with fewer than two variants or no click yet."""
    rated = [v for v in variants if v["sent"]]
    if len(rated) < 2:
        return None
    ranked = sorted(rated, key=lambda v: v["clicked"] / v["sent"], reverse=True)
    best, second = ranked[0], ranked[1]
    if not best["clicked"]:
        return None
    p1, p2 = best["clicked"] / best["sent"], second["clicked"] / second["sent"]
    pooled = (best["clicked"] + second["clicked"]) / (best["sent"] + second["sent"])
    spread = math.sqrt(pooled * (1 - pooled) * (1 / best["sent"] + 1 / second["sent"]))
    z = (p1 - p2) / spread if spread else 0.0
    confidence = 0.5 * (1 + math.erf(z / math.sqrt(2)))
    return {"variant": best["variant"], "metric": "clicks", "click_rate": round(p1, 4),
            "runner_up": second["variant"], "confidence": round(confidence, 3)}


def chart_columns(document: dict[str, Any]) -> tuple[list[Column], list[str]]:
    """The report as bars: per variant its sent, opened and clicked mails, then the
    ratings 1 to 5; and the legend (one series per variant, one for ratings)."""
    columns: list[Column] = []
    legend = []
    for number, variant in enumerate(document["variants"]):
        legend.append(f"variant {variant['variant']}")
        for metric in ("sent", "opened", "clicked"):
            columns.append(Column(f"{metric[0]}{variant['variant']}", (Segment(
                number, variant[metric], f"variant {variant['variant']} {metric}: "
                                         f"{variant[metric]}"),)))
    legend.append("ratings")
    for score, n in document["ratings"]["scores"].items():
        columns.append(Column(f"★{score}", (Segment(len(legend) - 1, n,
                                                    f"rated {score}: {n}"),)))
    return columns, legend


def chart_notes(document: dict[str, Any]) -> list[str]:
    notes = [f"{document['sent']} sent, {document['opens']['mails']} opened, "
             f"{document['clicks']['mails']} clicked, {document['unsubscribes']} unsubscribed."]
    ratings = document["ratings"]
    if ratings["count"]:
        notes.append(f"{ratings['count']} ratings, mean {ratings['mean']}, "
                     f"CSAT {ratings['csat']} %.")
    if document["winner"] is not None:
        best = document["winner"]
        notes.append(f"Winner by click rate: variant {best['variant']} "
                     f"({100 * best['confidence']:.0f} % confidence).")
    notes.append("Bars: s = sent, o = opened, c = clicked per variant; ★ = ratings.")
    return notes
