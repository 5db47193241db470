"""The send path at its edges (issue 15): odd addresses, a poisoned row, the expiry.

Every delivery goes through a real aiosmtpd server over a socket, on both databases.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from mailer.delivery.outcomes import Outcome
from mailer.delivery.transport import SmtpTransport, parse_smtp_url
from tests.conftest import SETTINGS, Workspace
from tests.smtp_server import Behaviour, FaultServer
from tests.test_delivery import CAMPAIGN, KEY, NOW, PROMOTION, TEMPLATE, send, shop, states

NOW_UTC = datetime(2026, 11, 23, 9, tzinfo=UTC)  # NOW, 10:00 in Berlin


def _transport_send(server: FaultServer, recipient: str, *, sender: str = "hello@shop.example",
                    begin: Callable[[], bool] | None = None) -> Outcome:
    async def attempt() -> Outcome:
        transport = SmtpTransport(parse_smtp_url(server.url + "?timeout=10"), 1)
        try:
            message = b"Subject: x\r\n\r\nx\r\n"
            if begin is None:
                return await transport.send(sender, recipient, message)
            return await transport.send(sender, recipient, message, begin=begin)
        finally:
            await transport.close()

    return asyncio.run(attempt())


# --- item 2: one bad address fails one row, never the batch ------------------------------

def test_an_idn_domain_goes_on_the_envelope_in_its_punycode_form() -> None:
    with FaultServer(Behaviour(smtputf8=False)) as server:
        outcome = _transport_send(server, "anna@bücher.example", sender="hallo@bücher.example")
    assert outcome.kind == "sent", outcome.reply
    [caught] = server.caught
    assert (caught.sender, caught.recipient) == ("hallo@xn--bcher-kva.example",
                                                 "anna@xn--bcher-kva.example")
    assert "SMTPUTF8" not in caught.mail_options  # an ASCII envelope needs no extension


def test_a_domain_with_no_ascii_form_fails_before_a_byte_is_sent() -> None:
    with FaultServer() as server:
        outcome = _transport_send(server, "anna@\u2603\u2603.example")  # snowmen: not IDNA
    assert outcome == Outcome("permanent", "the address's domain has no ASCII form (IDNA 2008)")
    assert server.behaviour.connections == 0


def test_a_non_ascii_local_part_goes_with_smtputf8_when_the_server_offers_it() -> None:
    with FaultServer(Behaviour(smtputf8=True)) as server:
        outcome = _transport_send(server, "jörg@bücher.example")
    assert outcome.kind == "sent", outcome.reply
    [caught] = server.caught
    assert caught.recipient == "jörg@xn--bcher-kva.example"
    assert "SMTPUTF8" in caught.mail_options


def test_a_non_ascii_local_part_fails_when_the_server_does_not_offer_smtputf8() -> None:
    with FaultServer(Behaviour(smtputf8=False)) as server:
        outcome = _transport_send(server, "jörg@example.com")
    assert (outcome.kind, outcome.reply) == ("permanent", "server does not offer SMTPUTF8")
    assert not outcome.suppress  # the mailbox may well exist
    assert server.caught == [] and server.behaviour.attempts == {}  # no RCPT was sent


@pytest.mark.parametrize("smtputf8", [True, False], ids=["smtputf8", "ascii-only"])
def test_one_odd_address_fails_one_row_and_the_rest_of_the_batch_arrives(
        db: Workspace, smtputf8: bool) -> None:
    addresses = ["ok1@example.com", "anna@bücher.example", "jörg@example.com",
                 "zero@example.com", "ok2@example.com"]
    shop(db, addresses)
    with FaultServer(Behaviour(smtputf8=smtputf8)) as server:
        summary = send(db, server, "note")
    expected = {"ok1@example.com": "sent", "anna@bücher.example": "sent",
                "jörg@example.com": "sent" if smtputf8 else "failed",
                "zero@example.com": "failed", "ok2@example.com": "sent"}
    assert states(db) == expected
    assert (summary["sent"], summary["failed"]) == (4, 1) if smtputf8 else (3, 2)
    rows = {email: (reason, reply) for email, reason, reply in db.query(
        "SELECT email, reason, last_reply FROM deliveries")}
    assert rows["zero@example.com"][0].startswith("render_error: templates/note.html:2:")
    caught = {c.recipient: c for c in server.caught}
    # The envelope carries the domain's punycode form; so does the To header (it is ASCII).
    anna = caught.pop("anna@xn--bcher-kva.example")
    assert "anna@xn--bcher-kva.example" in anna.message()["To"]
    assert "SMTPUTF8" not in anna.mail_options
    if smtputf8:
        jorg = caught.pop("jörg@example.com")
        assert "SMTPUTF8" in jorg.mail_options
        assert "jörg@example.com" in jorg.message()["To"]
    else:
        assert rows["jörg@example.com"][1] == "server does not offer SMTPUTF8"
    assert sorted(caught) == ["ok1@example.com", "ok2@example.com"]


def test_any_exception_while_building_one_mail_fails_that_row_as_a_render_error(
        db: Workspace) -> None:
    from mailer.core.clock import Clock
    from mailer.delivery.ratelimit import rate_limit
    from mailer.delivery.worker import Renderer, SendingLoop
    from mailer.store.ledger import new_owner

    shop(db, ["ok1@example.com", "poison@example.com", "ok2@example.com"])
    db.env["MAILER_SECRET_KEY"] = KEY
    assert db.run("run", "--once", "--no-deliver", "--now", NOW).code == 0

    def sign(message: bytes) -> bytes:  # a signer that breaks on one mail, as a bug would
        if b"poison@example.com" in message:
            raise ValueError("the signer choked")
        return message

    engine = db.engine()
    try:
        with FaultServer() as server:
            transport = SmtpTransport(parse_smtp_url(server.url + "?timeout=10"), 2)
            delivery = SendingLoop(engine, transport, Renderer(engine, KEY, sign), new_owner(),
                                Clock(NOW_UTC), concurrency=2,
                                limit=rate_limit(engine, 100))

            async def deliver() -> Any:
                try:
                    return await delivery.run(asyncio.Event(), until_idle=True)
                finally:
                    await transport.close()

            tally = asyncio.run(deliver())
    finally:
        engine.dispose()
    assert states(db) == {"ok1@example.com": "sent", "poison@example.com": "failed",
                          "ok2@example.com": "sent"}
    [(reason, lease)] = db.query("SELECT reason, lease_owner FROM deliveries "
                                 "WHERE email = 'poison@example.com'")
    assert reason == "render_error: ValueError: the signer choked" and lease is None
    assert tally[("note", "failed")] == 1
    assert sorted(c.recipient for c in server.caught) == ["ok1@example.com", "ok2@example.com"]


# --- item 4: nothing is sent after its expiry ----------------------------------------------

def test_a_transaction_is_not_begun_once_its_row_has_expired() -> None:
    with FaultServer() as server:
        outcome = _transport_send(server, "ok@example.com", begin=lambda: False)
    assert outcome.kind == "expired"
    assert server.caught == [] and server.behaviour.attempts == {}


def test_no_mail_from_at_or_after_the_promotion_ends(db: Workspace) -> None:
    """Rows leased and rendered wait for a rate permit; the promotion ends while they
    wait. Those become `expired`; every `sent` row began its transaction before the end."""
    # Six seconds of the send's clock (from its start) at 5 a second: a loaded machine's
    # start, plan and first renders (over 2 s in a full run at load 9 when the end was
    # 2 s away: every row expired) still leave some sent; 60 rows take 12 s: the rest
    # expire.
    promotion = CAMPAIGN.replace("trigger: once\nat: 2026-11-23T09:00\ngrace: 2d\n",
                                 "trigger: promotion\nstarts: 2026-11-23T09:00\n"
                                 "ends: 2026-11-23T10:00:06\n")
    addresses = [f"p{n:02d}@example.com" for n in range(60)]
    shop(db, addresses, campaign=promotion,
         settings=SETTINGS + "delivery: {concurrency: 4, rate_per_second: 5}\n")
    with FaultServer() as server:
        summary = send(db, server, "note")
    rows = db.query("SELECT email, status, sent_at, expires_at FROM deliveries")
    by_state: dict[str, list[str]] = {}
    for email, status, _, _ in rows:
        by_state.setdefault(status, []).append(email)
    assert set(by_state) == {"sent", "expired"}, by_state.keys()
    assert by_state["sent"] and by_state["expired"]
    late = db.query("SELECT email, sent_at, expires_at FROM deliveries "
                    "WHERE status = 'sent' AND NOT (sent_at < expires_at)")
    assert late == []
    # the server caught exactly the rows the ledger calls sent
    assert sorted(c.recipient for c in server.caught) == sorted(by_state["sent"])
    assert (summary["planned"], summary["sent"], summary["expired"], summary["waiting"]) == \
        (60, len(by_state["sent"]), len(by_state["expired"]), 0)


def test_send_counts_the_rows_that_expired(db: Workspace) -> None:
    promotion = PROMOTION
    shop(db, ["temp451-a@example.com", "temp451-b@example.com", "ok@example.com"],
         campaign=promotion)
    with FaultServer(Behaviour(fails=100)) as server:
        first = send(db, server, "note")
        assert first["deferred"] == 2
        # after the end, the deferred rows expire: this send's summary says so
        after_end = send(db, server, "note", now="2026-11-23T11:00")
    assert (after_end["sent"], after_end["expired"]) == (0, 2)
    assert states(db) == {"temp451-a@example.com": "expired",
                          "temp451-b@example.com": "expired", "ok@example.com": "sent"}


def test_run_once_counts_the_rows_that_expired(db: Workspace) -> None:
    promotion = PROMOTION
    shop(db, ["temp451@example.com", "ok@example.com"], campaign=promotion)
    with FaultServer(Behaviour(fails=100)) as server:
        assert send(db, server, "note")["deferred"] == 1
        result = db.run("run", "--once", "--now", "2026-11-23T11:00", "--json")
    assert result.code == 0, result.stdout + result.stderr
    note = result.json()["campaigns"]["note"]
    assert (note["sent"], note["expired"]) == (0, 1)
    assert states(db)["temp451@example.com"] == "expired"


# --- item 3: a template bomb never blocks the sender's event loop ----------------------------

# The bomb fires only for customers with a city: validate's synthetic customer has none, so
# it is planned, and each of those mails costs the whole 2 s CPU budget of a render.
CITY_BOMB = TEMPLATE + ("{% if customer.city %}{% for x in range(10000) %}"
                        "{% for y in range(10000) %}{% endfor %}{% endfor %}{% endif %}\n")
GOOD = ["good0@example.com", "good1@example.com", "good2@example.com"]
BOMBED = [f"city{n:02d}@example.com" for n in range(20)]


def _bomb_shop(db: Workspace) -> None:
    """GOOD (no city, planned first) then BOMBED (a city each), planned and queued."""
    shop(db, [])
    db.write("templates/note.html", CITY_BOMB)
    rows = ["id,email,first_name,city"]
    rows += [f"C{n:03d},{address},Name{n},{'Springfield' if address in BOMBED else ''}"
             for n, address in enumerate(GOOD + BOMBED)]
    db.write("customers.csv", "\n".join(rows) + "\n")
    assert db.run("import", "customers", "customers.csv", "--now", "2026-01-01").code == 0
    db.env["MAILER_SECRET_KEY"] = KEY
    planned = db.run("run", "--once", "--no-deliver", "--now", NOW)
    assert planned.code == 0, planned.stdout + planned.stderr
    assert db.query("SELECT count(*) FROM deliveries WHERE status = 'queued'") == [(23,)]


class _StopAtFirstSent:
    """A transport that sets STOP once its first mail was accepted (another task than the
    delivery loop's own), the way SIGTERM arrives while the sender is busy."""

    def __init__(self, inner: SmtpTransport, stop: asyncio.Event) -> None:
        self.inner, self.stop = inner, stop

    async def send(self, sender: str, recipient: str, message: bytes, *,
                   begin: Callable[[], bool] | None = None) -> Outcome:
        outcome = await self.inner.send(sender, recipient, message, begin=begin)
        if outcome.kind == "sent":
            self.stop.set()
        return outcome

    async def close(self) -> None:
        await self.inner.close()


def test_a_template_bomb_in_every_row_neither_blocks_the_loop_nor_holds_the_stop(
        db: Workspace) -> None:
    """20 bombed rows would hold a synchronous render for 40 s. Rendered off the loop and
    at most ~2 s per batch, the good mails go out, the loop keeps ticking, a stop ends the
    run within seconds, and every row is terminal or back in the queue, unleased."""
    from mailer.core.clock import Clock
    from mailer.delivery.ratelimit import rate_limit
    from mailer.delivery.worker import Renderer, SendingLoop
    from mailer.store.ledger import new_owner

    _bomb_shop(db)
    engine = db.engine()
    gaps: list[float] = []
    try:
        with FaultServer() as server:
            async def deliver() -> float:
                stop = asyncio.Event()
                transport = SmtpTransport(parse_smtp_url(server.url + "?timeout=10"), 4)
                delivery = SendingLoop(engine, _StopAtFirstSent(transport, stop),
                                    Renderer(engine, KEY), new_owner(), Clock(NOW_UTC),
                                    concurrency=4, limit=rate_limit(engine, 100))

                async def tick() -> None:  # what a signal handler or a sweep would need
                    last = time.monotonic()
                    while True:
                        await asyncio.sleep(0.02)
                        gaps.append(time.monotonic() - last)
                        last = time.monotonic()

                ticker = asyncio.create_task(tick())
                began = time.process_time()  # CPU: a loaded machine stretches the wall clock
                try:
                    await delivery.run(stop, until_idle=False)
                    return time.process_time() - began
                finally:
                    ticker.cancel()
                    await transport.close()

            took = asyncio.run(deliver())
    finally:
        engine.dispose()
    assert took < 10, f"the run took {took:.1f} s of CPU to stop (20 bombs: 40 s)"
    assert max(gaps) < 1, f"the event loop was blocked for {max(gaps):.1f} s"
    assert sorted(c.recipient for c in server.caught) == GOOD
    rows = db.query("SELECT email, status, reason, lease_owner, lease_until FROM deliveries")
    by_email = {email: (status, reason, owner, until) for email, status, reason, owner, until
                in rows}
    assert all(by_email[email][0] == "sent" for email in GOOD)
    bombed = [by_email[email] for email in BOMBED]
    assert {status for status, *_ in bombed} <= {"failed", "queued"}
    failed = [reason for status, reason, *_ in bombed if status == "failed"]
    assert failed and all(reason.startswith("render_error: templates/note.html:") and
                          "render stopped: more than 2 s of CPU" in reason for reason in failed)
    assert len(failed) <= 3  # the rest was handed back, not rendered
    # nothing is left `sending` or leased: the next turn (or another sender) claims them
    assert [(email, owner, until) for email, (_, _, owner, until) in by_email.items()
            if owner is not None or until is not None] == []


def test_a_stop_between_rows_hands_the_rest_of_the_batch_back(db: Workspace) -> None:
    """However long a batch may render, a stop is seen after the row at hand."""
    from mailer.delivery.worker import Renderer
    from mailer.store.ledger import claim, new_owner

    _bomb_shop(db)
    engine = db.engine()
    try:
        rows = claim(engine, new_owner(), NOW_UTC, 23)
        bombs = [row for row in rows if row.email in BOMBED]
        asked: list[float] = []

        def stop() -> bool:  # set once the first bomb has been rendered
            asked.append(time.monotonic())
            return len(asked) > 1

        batch = Renderer(engine, KEY).render_batch(bombs, NOW_UTC, stop=stop, within=60.0)
    finally:
        engine.dispose()
    # Asked before each row; the second answer was "stop", so no third row was begun.
    # (Counted, not timed: the one bomb rendered may take long on a loaded machine.)
    assert len(asked) == 2
    assert batch.ready == []
    [(_, values)] = batch.failed
    assert values["status"] == "failed" and "render stopped" in values["reason"]
    assert batch.left == bombs[1:]


def test_a_turn_that_failed_leaves_the_loop_able_to_run_again(db: Workspace) -> None:
    """The daemon runs its send loop again after an error: a turn whose database work
    failed (its outcomes lost, their rows left `sending` for recovery) must not leave the
    loop counting them in flight, waiting forever for outcomes that will never come."""
    from mailer.core.clock import Clock
    from mailer.delivery.ratelimit import rate_limit
    from mailer.delivery.worker import Renderer, SendingLoop
    from mailer.store.ledger import new_owner

    addresses = [f"t{n}@example.com" for n in range(8)]
    shop(db, addresses)
    db.env["MAILER_SECRET_KEY"] = KEY
    assert db.run("run", "--once", "--no-deliver", "--now", NOW).code == 0
    engine = db.engine()
    try:
        with FaultServer() as server:
            transport = SmtpTransport(parse_smtp_url(server.url + "?timeout=10"), 2)
            delivery = SendingLoop(engine, transport, Renderer(engine, KEY), new_owner(),
                                   Clock(NOW_UTC), concurrency=2, batch=4,
                                   limit=rate_limit(engine, 100))
            original = delivery._turn_in_database
            calls = [0]

            def failing_once(results: Any, chosen: Any) -> Any:
                calls[0] += 1
                if results and calls[0] == 2:  # the first turn with outcomes to record
                    raise RuntimeError("the database went away")
                return original(results, chosen)

            delivery._turn_in_database = failing_once  # type: ignore[method-assign]

            async def deliver() -> Any:
                try:
                    with pytest.raises(RuntimeError, match="went away"):
                        await delivery.run(asyncio.Event(), until_idle=True)
                    # again, as the daemon does: it ends (nothing left it may send)
                    return await asyncio.wait_for(
                        delivery.run(asyncio.Event(), until_idle=True), 60)
                finally:
                    await transport.close()

            asyncio.run(deliver())
    finally:
        engine.dispose()
    caught = [c.recipient for c in server.caught]
    assert len(caught) == len(set(caught))  # nobody twice
    sending = {row[0] for row in db.query(
        "SELECT c.email FROM deliveries d JOIN customers c ON c.id = d.customer_id "
        "WHERE d.status = 'sending'")}
    assert sending and sending <= set(caught)  # the lost outcomes: mails that went out
