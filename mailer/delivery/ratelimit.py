"""The send rate limit (DESIGN §6): never more than `rate_per_second` mails in any
one-second window, across every sender of one database.

Both limiters hand out RATE permits. A mail holds one from before its start until
its reply is recorded, and the permit is free again one second after that. Any
RATE + 1 mails therefore include two on the same permit, more than a second
apart at the server whatever the network delay (a limit on start times alone is
broken by one slow reply). Below one mail per second there is one permit that
rests 1/RATE seconds.

`LocalRateLimit` keeps the permits in memory: enough where one process sends
(SQLite). `SharedRateLimit` keeps them in the `rate_slots` table of PostgreSQL,
taken with FOR UPDATE SKIP LOCKED and timed by the database's clock, so workers
on several hosts share one limit. A permit taken by a sender that dies comes
back after a minute.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Sequence
from typing import Protocol

from sqlalchemy import Connection, Engine, text

MOST_PERMITS = 10_000  # a higher rate_per_second is limited to this


def _shape(rate: float) -> tuple[int, float]:
    """(permits, seconds a permit rests after a reply)."""
    return (min(MOST_PERMITS, max(1, int(rate))), 1.0 if rate >= 1 else 1.0 / rate)


class RateLimit(Protocol):
    """Permits are taken and given back inside the sender's transaction (CONN)."""

    def take(self, conn: Connection, wanted: int) -> list[int]:
        """Up to WANTED permits that are free now (possibly none)."""
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

    def take(self, conn: Connection, wanted: int) -> list[int]:
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


HELD = "60 seconds"  # a taken permit's free time: a dead sender's permit returns then
_TAKE = text(
    "UPDATE rate_slots SET free_at = clock_timestamp() AT TIME ZONE 'UTC' "
    f"+ interval '{HELD}' WHERE slot IN (SELECT slot FROM rate_slots "
    "WHERE free_at <= clock_timestamp() AT TIME ZONE 'UTC' ORDER BY free_at "
    "LIMIT :n FOR UPDATE SKIP LOCKED) RETURNING slot")
# clock_timestamp(): the time of the give-back itself, after the replies were recorded
_GIVE_BACK = text(
    "UPDATE rate_slots SET free_at = clock_timestamp() AT TIME ZONE 'UTC' "
    "+ make_interval(secs => :rest) WHERE slot = ANY(:slots)")


class SharedRateLimit:
    def __init__(self, engine: Engine, rate: float) -> None:
        self.engine = engine
        self.capacity, self.rest = _shape(rate)
        with engine.begin() as conn:  # exactly `capacity` permits exist
            conn.execute(text("INSERT INTO rate_slots (slot, free_at) "
                              "SELECT n, now() AT TIME ZONE 'UTC' - interval '1 second' "
                              "FROM generate_series(0, :last) AS n "
                              "ON CONFLICT (slot) DO NOTHING"), {"last": self.capacity - 1})
            conn.execute(text("DELETE FROM rate_slots WHERE slot >= :n"), {"n": self.capacity})

    def take(self, conn: Connection, wanted: int) -> list[int]:
        return [row[0] for row in conn.execute(_TAKE, {"n": wanted})]

    def give_back(self, conn: Connection, permits: Sequence[int]) -> None:
        if permits:
            conn.execute(_GIVE_BACK, {"rest": self.rest, "slots": list(permits)})

    def retry_in(self) -> float:
        with self.engine.connect() as conn:
            wait = conn.execute(text(
                "SELECT EXTRACT(EPOCH FROM min(free_at) - clock_timestamp() AT TIME ZONE 'UTC') "
                "FROM rate_slots")).scalar()
        return min(max(float(wait or 0.0), 0.005), 1.0)


def rate_limit(engine: Engine, rate: float) -> RateLimit:
    """The shared limit on PostgreSQL, the in-memory one where a single process sends."""
    if engine.dialect.name == "postgresql":
        return SharedRateLimit(engine, rate)
    return LocalRateLimit(rate)
