"""The `rate_slots` table: the permits of the send rate limit shared by every sender of
one PostgreSQL database (mailer.delivery.ratelimit), timed by the database's clock."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, Engine, text

HELD = 60.0  # seconds a taken permit is held: a dead sender's permit returns then
_TAKE = text(
    "UPDATE rate_slots SET free_at = clock_timestamp() AT TIME ZONE 'UTC' "
    "+ make_interval(secs => :held) WHERE slot IN (SELECT slot FROM rate_slots "
    "WHERE free_at <= clock_timestamp() AT TIME ZONE 'UTC' ORDER BY free_at "
    "LIMIT :n FOR UPDATE SKIP LOCKED) RETURNING slot")
# clock_timestamp(): the time of the give-back itself, after the replies were recorded
_GIVE_BACK = text(
    "UPDATE rate_slots SET free_at = clock_timestamp() AT TIME ZONE 'UTC' "
    "+ make_interval(secs => :rest) WHERE slot = ANY(:slots)")
# Both in one statement, one round trip a sender's turn instead of two. The permits
# given back are never among those taken (`<> ALL`): two parts of one statement must not
# change the same row, and a permit given back rests before its next use anyway. The
# give-back runs first, as two statements ran: PostgreSQL runs a WITH that nothing reads
# after the main query, which would lock new permits before waiting for the ones given
# back (two senders could deadlock); the count of `back` is a one-time filter, evaluated
# before the main query reads a row.
_GIVE_BACK_AND_TAKE = text(
    "WITH back AS (UPDATE rate_slots SET free_at = clock_timestamp() AT TIME ZONE 'UTC' "
    "+ make_interval(secs => :rest) WHERE slot = ANY(:slots) RETURNING slot) "
    "UPDATE rate_slots SET free_at = clock_timestamp() AT TIME ZONE 'UTC' "
    "+ make_interval(secs => :held) WHERE (SELECT count(*) FROM back) >= 0 AND slot IN ("
    "SELECT slot FROM rate_slots "
    "WHERE free_at <= clock_timestamp() AT TIME ZONE 'UTC' AND slot <> ALL(:slots) "
    "ORDER BY free_at LIMIT :n FOR UPDATE SKIP LOCKED) RETURNING slot")


def keep_permits(engine: Engine, capacity: int) -> None:
    """Make exactly CAPACITY permits exist (0 to CAPACITY - 1), the new ones free now."""
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO rate_slots (slot, free_at) "
                          "SELECT n, now() AT TIME ZONE 'UTC' - interval '1 second' "
                          "FROM generate_series(0, :last) AS n "
                          "ON CONFLICT (slot) DO NOTHING"), {"last": capacity - 1})
        conn.execute(text("DELETE FROM rate_slots WHERE slot >= :n"), {"n": capacity})


def take(conn: Connection, wanted: int, given_back: Sequence[int] = (),
         rest: float = 1.0, held: float = HELD) -> list[int]:
    """Up to WANTED permits free now, held for HELD seconds unless given back sooner;
    GIVEN_BACK (permits whose mails have their replies) free again REST seconds from now,
    in the same statement."""
    if given_back:
        return [row[0] for row in conn.execute(_GIVE_BACK_AND_TAKE, {
            "n": wanted, "slots": list(given_back), "rest": rest, "held": held})]
    return [row[0] for row in conn.execute(_TAKE, {"n": wanted, "held": held})]


def give_back(conn: Connection, permits: Sequence[int], rest: float) -> None:
    """PERMITS free again REST seconds from now."""
    conn.execute(_GIVE_BACK, {"rest": rest, "slots": list(permits)})


def seconds_to_free(engine: Engine) -> float | None:
    """Seconds until the first permit is free (negative: one is free already); None
    without permits."""
    with engine.connect() as conn:
        wait = conn.execute(text(
            "SELECT EXTRACT(EPOCH FROM min(free_at) - clock_timestamp() AT TIME ZONE 'UTC') "
            "FROM rate_slots")).scalar()
    return None if wait is None else float(wait)
