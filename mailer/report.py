"""The numbers of one campaign (DESIGN §5 `report`): ledger states, exclusions, variants."""

from __future__ import annotations

from collections import Counter
from difflib import get_close_matches
from typing import Any

from sqlalchemy import Engine, func, select

from mailer.errors import NotFoundError
from mailer.ledger import counts
from mailer.models import Delivery, PlanRun


def campaign_report(engine: Engine, campaign: str, known: list[str]) -> dict[str, Any]:
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
    if runs == 0 and not any(states.values()) and campaign not in known:
        close = get_close_matches(campaign, known, n=1)
        raise NotFoundError(f"unknown campaign {campaign!r}"
                            + (f" (did you mean {close[0]}?)" if close else ""))
    return {"campaign": campaign, "planned": sum(states.values()), **states,
            "excluded": dict(sorted(excluded.items())),
            "variants": [{"variant": v + 1, **numbers} for v, numbers in sorted(variants.items())]}
