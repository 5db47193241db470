"""SMTP PIPELINING (RFC 2920) against a scripted server on a real socket: the envelope
goes in one write, every reply of the group is read, and a refusal in the group ends
the transaction as the one-by-one dialogue would."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from mailer.delivery.outcomes import Outcome
from mailer.delivery.transport import SmtpTransport, parse_smtp_url

pytestmark = pytest.mark.integration  # a real server on a socket

EHLO = b"250-scripted\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, list[bytes]], Awaitable[None]]


async def _lines(reader: asyncio.StreamReader, count: int, seen: list[bytes]) -> None:
    for _ in range(count):
        seen.append((await reader.readline()).rstrip(b"\r\n"))


async def _message(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n.\r\n")


def run(script: Script, recipients: list[str]) -> tuple[list[Outcome], list[bytes]]:
    """Send one message to each of RECIPIENTS over one connection to a server that
    answers EHLO, then plays SCRIPT once per transaction; QUIT ends it."""
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 scripted ESMTP\r\n")
        await _lines(reader, 1, seen)
        writer.write(EHLO)
        for _ in recipients:
            await script(reader, writer, seen)
        await _lines(reader, 1, seen)
        writer.write(b"221 bye\r\n")
        await writer.drain()
        writer.close()

    async def main() -> list[Outcome]:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport = SmtpTransport(parse_smtp_url(f"smtp://127.0.0.1:{port}?timeout=5"), 1)
        try:
            return [await transport.send("hello@shop.example", to,
                                         b"Subject: hi\r\n\r\nHello\r\n")
                    for to in recipients]
        finally:
            await transport.close()
            server.close()

    return asyncio.run(main()), seen


def test_the_envelope_goes_in_one_write_and_replies_in_one_segment_are_all_read() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     seen: list[bytes]) -> None:
        # nothing is answered before all three commands are in: a client waiting for
        # the reply to MAIL FROM would stall here until its timeout
        await _lines(reader, 3, seen)
        writer.write(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go ahead\r\n")
        await _message(reader)
        writer.write(b"250 2.0.0 queued\r\n")

    outcomes, seen = run(script, ["a@example.com", "b@example.com"])
    assert [o.kind for o in outcomes] == ["sent", "sent"]
    assert outcomes[0].reply == "250 2.0.0 queued"
    assert seen[1:4] == [b"MAIL FROM:<hello@shop.example>", b"RCPT TO:<a@example.com>", b"DATA"]
    assert seen[4:7] == [b"MAIL FROM:<hello@shop.example>", b"RCPT TO:<b@example.com>", b"DATA"]


def test_a_refused_recipient_in_the_group_fails_the_row_and_the_next_one_goes() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     seen: list[bytes]) -> None:
        await _lines(reader, 3, seen)
        if b"RCPT TO:<gone@example.com>" in seen[-3:]:
            writer.write(b"250 ok\r\n550 5.1.1 no such mailbox\r\n"
                         b"554 5.5.1 no valid recipients\r\n")
            await _lines(reader, 1, seen)  # RSET
            writer.write(b"250 reset\r\n")
            return
        writer.write(b"250 ok\r\n250 ok\r\n354 go ahead\r\n")
        await _message(reader)
        writer.write(b"250 queued\r\n")

    outcomes, seen = run(script, ["gone@example.com", "ok@example.com"])
    assert (outcomes[0].kind, outcomes[0].suppress) == ("permanent", True)
    assert outcomes[0].reply == "550 5.1.1 no such mailbox"
    assert outcomes[1].kind == "sent"
    assert b"RSET" in seen


def test_data_accepted_after_a_refused_recipient_ends_with_an_empty_message() -> None:
    """RFC 2920 §3.1: a server may take DATA though no recipient was accepted; the
    client then sends a lone dot, not the message."""
    bodies: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     seen: list[bytes]) -> None:
        await _lines(reader, 3, seen)
        if b"RCPT TO:<later@example.com>" in seen[-3:]:
            writer.write(b"250 ok\r\n451 4.3.0 try later\r\n354 go ahead\r\n")
            bodies.append(await reader.readuntil(b".\r\n"))
            writer.write(b"554 5.5.1 no valid recipients\r\n")
            return
        writer.write(b"250 ok\r\n250 ok\r\n354 go ahead\r\n")
        bodies.append(await _message(reader))
        writer.write(b"250 queued\r\n")

    outcomes, _ = run(script, ["later@example.com", "ok@example.com"])
    assert [(o.kind, o.reply) for o in outcomes] == [("temporary", "451 4.3.0 try later"),
                                                     ("sent", "250 queued")]
    assert bodies[0] == b".\r\n" and b"Hello" in bodies[1]


def test_a_server_closing_after_refusing_in_the_group_keeps_its_refusal() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     seen: list[bytes]) -> None:
        await _lines(reader, 3, seen)
        writer.write(b"250 ok\r\n421 4.7.0 too many connections, closing\r\n")
        await writer.drain()
        writer.close()

    outcomes, _ = run_closing(script)
    assert (outcomes[0].kind, outcomes[0].throttle) == ("temporary", True)
    assert outcomes[0].reply.startswith("421 4.7.0")


def run_closing(script: Script) -> tuple[list[Outcome], list[bytes]]:
    """As run, for a script that closes the connection in its one transaction."""
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 scripted ESMTP\r\n")
        await _lines(reader, 1, seen)
        writer.write(EHLO)
        await script(reader, writer, seen)

    async def main() -> list[Outcome]:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport = SmtpTransport(parse_smtp_url(f"smtp://127.0.0.1:{port}?timeout=5"), 1)
        try:
            return [await transport.send("hello@shop.example", "x@example.com",
                                         b"Subject: hi\r\n\r\nHello\r\n")]
        finally:
            await transport.close()
            server.close()

    return asyncio.run(main()), seen
