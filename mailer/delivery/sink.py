"""`mailer sink`: a local SMTP server (aiosmtpd) that catches every mail into a Maildir.

For the demo and for trying campaigns on a laptop, the way Mailpit is used: nothing
leaves the machine, and each caught mail is one line on standard output.
"""

from __future__ import annotations

import asyncio
import mailbox
from collections.abc import Callable
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.policy import default
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP


class MaildirHandler:
    """Stores each message in a Maildir and reports it in one line."""

    def __init__(self, folder: Path, echo: Callable[[str], None]) -> None:
        self.box = mailbox.Maildir(str(folder), create=True)
        self.echo = echo
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data = envelope.original_content or envelope.content
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        key = self.box.add(data)
        self.count += 1
        headers = BytesHeaderParser(policy=default).parsebytes(data)
        stamp = datetime.now(UTC).strftime("%H:%M:%S")
        self.echo(f"{stamp} #{self.count} {envelope.mail_from} -> {', '.join(envelope.rcpt_tos)}"
                  f" | {headers.get('Subject', '')} | {len(data)} bytes")
        return f"250 2.0.0 Ok: queued as {key}"


async def serve(host: str, port: int, folder: Path, echo: Callable[[str], None],
                stop: asyncio.Event) -> None:
    """Listen until STOP is set; the first line says where (`listening on HOST:PORT`)."""
    handler = MaildirHandler(folder, echo)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, enable_SMTPUTF8=True, data_size_limit=50_000_000,
                     hostname="mailer-sink"), host=host, port=port)
    bound = server.sockets[0].getsockname()
    echo(f"listening on {bound[0]}:{bound[1]}")
    echo(f"catching mail into {folder}")
    try:
        await stop.wait()
    finally:
        server.close()
        await server.wait_closed()
