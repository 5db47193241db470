"""The occurrences the store's events make (DESIGN §4.2), one definition for the planner
that writes them and the sender, the contexts and the browser view that read them. Pure.

`checkout:<id>` and `checkout-reminder:<id>` are an abandoned checkout's mails,
`stock:<sku>:<YYYY-MM-DD>` a back-in-stock mail, `reminder` a promotion's reminder.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

CHECKOUT = "checkout:"
CHECKOUT_REMINDER = "checkout-reminder:"
REMINDER = "reminder"  # a promotion's reminder's occurrence
STOCK = "stock:"


def is_reminder(occurrence: str) -> bool:
    """A reminder's occurrence (a promotion's, an abandoned checkout's): it has its own
    subject, and no A/B winner of its own."""
    return occurrence == REMINDER or occurrence.startswith(CHECKOUT_REMINDER)


def stock_occurrence(sku: str, restocked_at: datetime, tz: ZoneInfo) -> str:
    """`stock:<sku>:<YYYY-MM-DD>`: the restock's local date in TZ (the workspace zone).
    A sku may hold colons (`shopify-variant:1`): the date is after the last one."""
    return f"{STOCK}{sku}:{restocked_at.astimezone(tz).date().isoformat()}"


def stock_sku(occurrence: str) -> str | None:
    """The sku of a back_in_stock mail's occurrence, None for any other occurrence."""
    if not occurrence.startswith(STOCK):
        return None
    sku, colon, _ = occurrence.removeprefix(STOCK).rpartition(":")
    return sku if colon else None
