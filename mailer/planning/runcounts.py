"""What one planning run has planned per customer (and per customer and topic), for the
caps of the campaigns planned after: compact counts by customer id.

A Counter keyed by customer id (and one keyed by (id, topic) tuples) held an object or
two per planned mail: 172 MB at a million recipients (tracemalloc; the planner's peak
memory in `make soak`'s 1M-mail send was 256 MB). Customer ids are the ledger's own
integers, handed out by the database in order, so counts are kept in pages of PAGE ids:
a 16-bit count each, saturating at 65,535 (a count no cap allows), a page made when an
id of it is first counted. A million customers with neighbouring ids take 245 pages,
2 MB; an id far from the others (a sequence that ran for years: 2,000,000,000) one page,
8 KB; in any order the ids come (the planner reads customers in store-id order, which
says nothing of their ids). One array indexed by id cost memory for the largest id, and
bounding it made ids that came out of order slow.
"""

from __future__ import annotations

from array import array

MOST = 0xFFFF  # a count is kept up to this, then stays there
PAGE_BITS = 12
PAGE = 1 << PAGE_BITS  # ids a page counts: 8 KB of 16-bit counts
_EMPTY = bytes(2 * PAGE)


class RunCounts:
    """Mails planned in this run, per customer id."""

    def __init__(self) -> None:
        self._pages: dict[int, array[int]] = {}  # id >> PAGE_BITS -> the page's counts

    def __getitem__(self, customer_id: int) -> int:
        page = self._pages.get(customer_id >> PAGE_BITS)
        return 0 if page is None or customer_id < 0 else page[customer_id & (PAGE - 1)]

    def add(self, customer_id: int) -> None:
        if customer_id < 0:
            raise ValueError(f"customer id {customer_id} is not a ledger id")
        page = self._pages.get(customer_id >> PAGE_BITS)
        if page is None:
            page = self._pages[customer_id >> PAGE_BITS] = array("H", _EMPTY)
        slot = customer_id & (PAGE - 1)
        if page[slot] < MOST:
            page[slot] += 1


class RunTopics:
    """Mails planned in this run, per customer id and topic."""

    def __init__(self) -> None:
        self._topics: dict[str | None, RunCounts] = {}

    def __getitem__(self, key: tuple[int, str | None]) -> int:
        customer_id, topic = key
        counts = self._topics.get(topic)
        return counts[customer_id] if counts is not None else 0

    def add(self, customer_id: int, topic: str | None) -> None:
        self._topics.setdefault(topic, RunCounts()).add(customer_id)
