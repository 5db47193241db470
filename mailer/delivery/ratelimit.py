"""The send rate limit (DESIGN §6): never more than `rate_per_second` mails in any
one-second window, across every sender of one database.

Both limiters hand out RATE permits. A mail holds one from before its start until
its reply is recorded, and the permit is free again one second after that. Any
RATE + 1 mails therefore include two on the same permit, more than a second
apart at the server whatever the network delay (a limit on start times alone is
broken by one slow reply). Below one mail per second there is one permit that
rests 1/RATE seconds.

`LocalRateLimit` keeps the permits in memory: enough where one process sends
(SQLite). `SharedRateLimit` keeps them in PostgreSQL (mailer.store.rate_slots),
taken with FOR UPDATE SKIP LOCKED and timed by the database's clock, so workers
on several hosts share one limit. A permit taken by a sender that dies comes
back after a minute.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Sequence
from typing import Protocol

from mailer.store import rate_slots
from mailer.store.db import Connection, Engine, is_server

MOST_PERMITS = 10_000  # a higher rate_per_second is limited to this


def _shape(rate: float) -> tuple[int, float]:
    """(permits, seconds a permit rests after a reply)."""
    return (min(MOST_PERMITS, max(1, int(rate))), 1.0 if rate >= 1 else 1.0 / rate)


class RateLimit(Protocol):
    """Permits are taken and given back inside the sender's transaction (CONN)."""

    capacity: int  # permits: about the mails a second it lets through

    def take(self, conn: Connection, wanted: int, given_back: Sequence[int] = ()) -> list[int]:
        """Up to WANTED permits that are free now (possibly none), after GIVEN_BACK are
        given back (as give_back would: they rest first, so none of them is taken)."""
        ...

    def give_back(self, conn: Connection, permits: Sequence[int]) -> None:
        """Permits whose mails have their replies; they rest before the next use."""
        ...

    def retry_in(self) -> float:
        """Seconds until a permit may be free, when take() gave none."""
        ...


class LocalRateLimit:
    def __init__(self, rate: float) -> None:
        self.capacity, self.rest = _shape(rate)
        self._free_at = [(0.0, n) for n in range(self.capacity)]  # heap of (time, permit)

    def take(self, conn: Connection, wanted: int, given_back: Sequence[int] = ()) -> list[int]:
        self.give_back(conn, given_back)
        now = time.monotonic()
        taken: list[int] = []
        while self._free_at and len(taken) < wanted and self._free_at[0][0] <= now:
            taken.append(heapq.heappop(self._free_at)[1])
        return taken

    def give_back(self, conn: Connection, permits: Sequence[int]) -> None:
        again = time.monotonic() + self.rest
        for permit in permits:
            heapq.heappush(self._free_at, (again, permit))

    def retry_in(self) -> float:
        if not self._free_at:
            return 0.05  # every permit is out: a reply will bring one back
        return max(0.0, self._free_at[0][0] - time.monotonic())


class SharedRateLimit:
    def __init__(self, engine: Engine, rate: float) -> None:
        self.engine = engine
        self.capacity, self.rest = _shape(rate)
        rate_slots.keep_permits(engine, self.capacity)

    def take(self, conn: Connection, wanted: int, given_back: Sequence[int] = ()) -> list[int]:
        return rate_slots.take(conn, wanted, given_back, self.rest)

    def give_back(self, conn: Connection, permits: Sequence[int]) -> None:
        if permits:
            rate_slots.give_back(conn, permits, self.rest)

    def retry_in(self) -> float:
        wait = rate_slots.seconds_to_free(self.engine)
        return min(max(wait or 0.0, 0.005), 1.0)


def rate_limit(engine: Engine, rate: float) -> RateLimit:
    """The shared limit on PostgreSQL, the in-memory one where a single process sends."""
    if is_server(engine):
        return SharedRateLimit(engine, rate)
    return LocalRateLimit(rate)
