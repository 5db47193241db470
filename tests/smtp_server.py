"""A real SMTP server (aiosmtpd) in a thread of the test process, with chosen faults.

The recipient's local part picks the fault, for its first `fails` attempts:
  temp451   451 at RCPT                 bad550    550 5.1.1 at RCPT
  rej554    554 5.7.1 after DATA        storm454  454 4.7.1 at RCPT
  block571  554 5.7.1 after DATA, for its first `fails` attempts (rej554: every one)
  bye421    421 4.7.0 at RCPT, then the connection is closed
  cut354    the connection closed right after the 354 reply
  cutdot    the connection closed after the final dot, before the reply
  stallrcpt no reply to RCPT for `stall` seconds
  stalldot  no reply to the final dot for `stall` seconds
Anything else is accepted. Every accepted message is kept with its time.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class Caught:
    sender: str
    recipient: str
    data: bytes
    at: float  # time.monotonic() when the final dot arrived
    mail_options: list[str] = field(default_factory=list)  # MAIL FROM parameters

    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.data, policy=default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class Behaviour:
    fails: int = 1  # how many attempts per recipient fail before it is accepted
    stall: float = 3.0
    delay: float = 0.0  # seconds before each 250 after DATA (spreads a campaign in time)
    greeting_421: bool = False
    smtputf8: bool = True  # whether EHLO offers SMTPUTF8 (RFC 6531)
    pipelining: bool = True  # whether EHLO offers PIPELINING (RFC 2920)
    attempts: Counter[str] = field(default_factory=Counter)
    caught: list[Caught] = field(default_factory=list)
    connections: int = 0
    accepting: int = 0  # mails between their DATA and its reply, now
    most_accepting: int = 0  # the most there ever were at once


def _kind(address: str) -> str:
    return address.split("@", 1)[0].split("-", 1)[0]  # "storm454-3" is a storm454


class _Handler:
    def __init__(self, behaviour: Behaviour) -> None:
        self.b = behaviour

    def _failing(self, address: str, kind: str) -> bool:
        return _kind(address) == kind and self.b.attempts[address] <= self.b.fails

    async def handle_EHLO(self, server: Any, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        if self.b.pipelining:  # aiosmtpd reads pipelined commands, it just does not say so
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_RCPT(self, server: Any, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:
        self.b.attempts[address] += 1
        if self._failing(address, "temp451"):
            return "451 4.3.0 try again later"
        if self._failing(address, "storm454"):
            return "454 4.7.1 slow down"
        if _kind(address) == "bad550":
            return "550 5.1.1 no such mailbox"
        if self._failing(address, "bye421"):
            server.transport.close()
            return "421 4.7.0 too many connections, closing"
        if self._failing(address, "stallrcpt"):
            await asyncio.sleep(self.b.stall)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        recipient = envelope.rcpt_tos[0]
        if _kind(recipient) == "rej554":
            return "554 5.7.1 message refused"
        if self._failing(recipient, "block571"):
            return "554 5.7.1 refused by policy"
        if self._failing(recipient, "cutdot"):
            server.transport.close()
            return "250 never seen"
        if self._failing(recipient, "stalldot"):
            await asyncio.sleep(self.b.stall)
            server.transport.close()
            return "250 too late"
        data = envelope.original_content or b""
        self.b.caught.append(Caught(envelope.mail_from or "", recipient, data, time.monotonic(),
                                    list(envelope.mail_options)))
        self.b.accepting += 1
        self.b.most_accepting = max(self.b.most_accepting, self.b.accepting)
        try:
            if self.b.delay:
                await asyncio.sleep(self.b.delay)
        finally:
            self.b.accepting -= 1
        return "250 2.0.0 Ok: queued"


class _FaultySMTP(SMTP):
    def __init__(self, handler: _Handler) -> None:
        super().__init__(handler, hostname="test-smtp",
                         enable_SMTPUTF8=handler.b.smtputf8)
        self.behaviour = handler.b

    def connection_made(self, transport: Any) -> None:
        self.behaviour.connections += 1
        if self.behaviour.greeting_421:
            transport.write(b"421 4.3.2 service not available\r\n")
            transport.close()
            return
        super().connection_made(transport)

    async def smtp_DATA(self, arg: str) -> None:
        recipient = self.envelope.rcpt_tos[0] if self.envelope.rcpt_tos else ""
        if _kind(recipient) == "cut354" and self.behaviour.attempts[recipient] <= \
                self.behaviour.fails:
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            assert self.transport is not None
            self.transport.close()
            return
        await super().smtp_DATA(arg)


class FaultServer:
    """Start with `with FaultServer() as server:`; `server.url` is MAILER_SMTP_URL."""

    def __init__(self, behaviour: Behaviour | None = None) -> None:
        self.behaviour = behaviour or Behaviour()
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    @property
    def caught(self) -> list[Caught]:
        return self.behaviour.caught

    def __enter__(self) -> FaultServer:
        self._thread.start()
        handler = _Handler(self.behaviour)

        async def start() -> asyncio.AbstractServer:
            return await self.loop.create_server(lambda: _FaultySMTP(handler),
                                                 "127.0.0.1", 0)

        self._server = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            self._server.close()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
