"""What one planning run has planned per customer (and per customer and topic), for the
caps of the campaigns planned after: compact counts by customer id.

A Counter keyed by customer id (and one keyed by (id, topic) tuples) held an object or
two per planned mail: 172 MB at a million recipients (tracemalloc; the planner's peak
memory in `make soak`'s 1M-mail send was 256 MB). Customer ids are the store's own
dense integers, so a counter is an array of 16-bit counts indexed by id, grown as ids
come, saturating at 65,535 (a count no cap allows): 4.7 MB a million customers (the
array doubles as it grows).
"""

from __future__ import annotations

from array import array

MOST = 0xFFFF  # a count is kept up to this, then stays there


class RunCounts:
    """Mails planned in this run, per customer id."""

    def __init__(self) -> None:
        self._counts = array("H")

    def __getitem__(self, customer_id: int) -> int:
        return self._counts[customer_id] if 0 <= customer_id < len(self._counts) else 0

    def add(self, customer_id: int) -> None:
        if customer_id < 0:
            raise ValueError(f"customer id {customer_id} is not a ledger id")
        if customer_id >= len(self._counts):
            grow = max(customer_id + 1, 2 * len(self._counts)) - len(self._counts)
            self._counts.extend(array("H", bytes(2 * grow)))
        if self._counts[customer_id] < MOST:
            self._counts[customer_id] += 1


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
