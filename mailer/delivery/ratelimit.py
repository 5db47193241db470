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
back after a minute (70 s for the shared ones kept for reuse, below).

A sender keeps the shared permits it took for a while (TERM) and reuses them
itself, resting each as it would rest in the table: they are its own until the
table gives them back (TERM + rate_slots.HELD), so the table is asked only when
the sender has too few, about one turn in eight instead of every turn. At the end of its term a
permit goes back to the table with the next statement (so senders share the
permits over time); a sender that stops or idles gives all of its back
(`release`).
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from mailer.store import rate_slots
from mailer.store.db import Connection, Engine, is_server

MOST_PERMITS = 10_000  # a higher rate_per_second is limited to this
# A shared permit is reused by the sender that took it for TERM seconds from its take;
# the table holds it for that sender for TERM + rate_slots.HELD (60 s), so a mail started
# at the end of the term still has a minute for its reply before another sender may take
# its permit, as one started right after a take always had; one that misses HELD_FOR of
# its hold is forgotten, not given back (another sender may hold it by then).
TERM = 10.0
HELD_FOR = TERM + 55.0


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

    def release(self, conn: Connection) -> None:
        """Give back every permit kept for reuse: the sender stops or idles."""
        ...

    def keeps(self) -> bool:
        """Whether any permit is kept for reuse (release has something to give back)."""
        ...

    def forget(self) -> None:
        """Never use the permits kept: a transaction that took or gave back some failed."""
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

    def release(self, conn: Connection) -> None:
        """Nothing to give back: no other sender shares these permits."""

    def keeps(self) -> bool:
        return False

    def forget(self) -> None:
        """Nothing to forget: these permits live in memory only, no rollback touches them."""


class SharedRateLimit:
    def __init__(self, engine: Engine, rate: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.engine = engine
        self.clock = clock  # the kept permits' times (a test's own clock)
        self.capacity, self.rest = _shape(rate)
        rate_slots.keep_permits(engine, self.capacity)
        # permits taken from the table and kept: the heap of (free again at, permit) for
        # those resting or free here, and each one's (end of term, end of hold); times
        # are time.monotonic() of this process (or the clock given)
        self._kept: list[tuple[float, int]] = []
        self._terms: dict[int, tuple[float, float]] = {}
        self._to_return: list[int] = []  # their term is over: back with the next statement
        self._lock = threading.Lock()  # two turns and the notices take at once

    def take(self, conn: Connection, wanted: int, given_back: Sequence[int] = ()) -> list[int]:
        with self._lock:
            now = self.clock()
            self._keep(given_back, now)
            taken: list[int] = []
            while self._kept and len(taken) < wanted and self._kept[0][0] <= now:
                permit = heapq.heappop(self._kept)[1]
                if now < self._terms[permit][0]:
                    taken.append(permit)
                else:
                    self._retire(permit, now)
            if len(taken) == wanted or wanted == 0:
                return taken
            returning = self._returning(now)
        asked = self.clock()  # before the table's clock starts the hold: conservative
        more = rate_slots.take(conn, wanted - len(taken), returning, self.rest,
                               held=TERM + rate_slots.HELD)
        with self._lock:
            for permit in more:
                self._terms[permit] = (asked + TERM, asked + HELD_FOR)
        return taken + more

    def give_back(self, conn: Connection, permits: Sequence[int]) -> None:
        with self._lock:
            self._keep(permits, self.clock())

    def _keep(self, permits: Sequence[int], now: float) -> None:
        """(Holding _lock.) PERMITS, whose mails have their replies, rest here for reuse."""
        for permit in permits:
            if permit not in self._terms:
                continue  # not kept (forgotten after its hold): the table's again
            if now < self._terms[permit][0]:
                heapq.heappush(self._kept, (now + self.rest, permit))
            else:
                self._retire(permit, now)

    def _retire(self, permit: int, now: float) -> None:
        """(Holding _lock.) Its term is over: back to the table, unless its hold is over
        too (then the table has freed it and another sender may hold it now)."""
        if now < self._terms[permit][1]:
            self._to_return.append(permit)
        else:
            del self._terms[permit]

    def _returning(self, now: float) -> list[int]:
        """(Holding _lock.) The permits to give back to the table now: those whose term
        is over, still within their hold; none of them is kept any longer."""
        returning = [p for p in self._to_return if now < self._terms[p][1]]
        for permit in self._to_return:
            del self._terms[permit]
        self._to_return = []
        return returning

    def retry_in(self) -> float:
        with self._lock:
            here = self._kept[0][0] - self.clock() if self._kept else None
        wait = rate_slots.seconds_to_free(self.engine)
        if here is not None:
            wait = here if wait is None else min(wait, here)
        return min(max(wait or 0.0, 0.005), 1.0)

    def release(self, conn: Connection) -> None:
        with self._lock:
            now = self.clock()
            kept = [permit for _, permit in self._kept]
            self._kept = []
            for permit in kept:
                self._retire(permit, now)
            returning = self._returning(now)
        if returning:
            # they rest as given back now (those resting here rest a little longer)
            rate_slots.give_back(conn, returning, self.rest)

    def keeps(self) -> bool:
        with self._lock:
            return bool(self._kept or self._to_return)

    def forget(self) -> None:
        with self._lock:  # the table frees them when their hold ends
            self._kept, self._to_return = [], []
            self._terms.clear()


def rate_limit(engine: Engine, rate: float) -> RateLimit:
    """The shared limit on PostgreSQL, the in-memory one where a single process sends."""
    if is_server(engine):
        return SharedRateLimit(engine, rate)
    return LocalRateLimit(rate)
