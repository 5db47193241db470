"""What one planning run has planned per customer (and per customer and topic), for the
caps of the campaigns planned after: compact counts by customer id.

A Counter keyed by customer id (and one keyed by (id, topic) tuples) held an object or
two per planned mail: 172 MB at a million recipients (tracemalloc; the planner's peak
memory in `make soak`'s 1M-mail send was 256 MB). Customer ids are the store's own
dense integers, so a counter is an array of 16-bit counts indexed by id, grown as ids
come, saturating at 65,535 (a count no cap allows): 4.7 MB a million customers (the
array doubles as it grows). An id far above the others (PostgreSQL's sequences, an
import with explicit ids: 2,000,000,000 would be a 4 GB array) is counted in a dict
instead: the array grows only up to DENSE_FLOOR ids or DENSE_RATIO times the ids counted,
so memory follows the customers counted, not their largest id.
"""

from __future__ import annotations

from array import array

MOST = 0xFFFF  # a count is kept up to this, then stays there
DENSE_FLOOR = 1 << 20  # ids the array may always cover: 2 MB
DENSE_RATIO = 4  # beyond that, at most this many array slots per id counted


class RunCounts:
    """Mails planned in this run, per customer id."""

    def __init__(self) -> None:
        self._counts = array("H")
        self._sparse: dict[int, int] = {}  # the ids the array would not grow to
        self._ids = 0  # distinct ids counted

    def __getitem__(self, customer_id: int) -> int:
        if 0 <= customer_id < len(self._counts):
            return self._counts[customer_id]
        return self._sparse.get(customer_id, 0)

    def add(self, customer_id: int) -> None:
        counts = self._counts
        if customer_id >= len(counts):
            if customer_id in self._sparse:
                self._sparse[customer_id] = min(self._sparse[customer_id] + 1, MOST)
                return
            bound = max(DENSE_FLOOR, DENSE_RATIO * (self._ids + 1))
            if customer_id >= bound:
                self._sparse[customer_id] = 1
                self._ids += 1
                return
            self._grow(min(max(customer_id + 1, 2 * len(counts)), bound))
        elif customer_id < 0:
            raise ValueError(f"customer id {customer_id} is not a ledger id")
        count = counts[customer_id]
        if count == 0:
            self._ids += 1
        if count < MOST:
            counts[customer_id] = count + 1

    def _grow(self, size: int) -> None:
        """The array to SIZE ids; the far ids it now covers move into it (every id of
        the dict stays beyond the array: one place to look)."""
        self._counts.extend(array("H", bytes(2 * (size - len(self._counts)))))
        for customer_id in [i for i in self._sparse if i < size]:
            self._counts[customer_id] = self._sparse.pop(customer_id)


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
