"""Bounces and complaints that arrive after delivery (DESIGN §5 `bounces`).

`parse` reads one message: an RFC 3464 delivery status notification
(multipart/report; report-type=delivery-status) or an RFC 5965 ARF complaint
(report-type=feedback-report). Pure, and total: whatever a file holds, it
returns a Report or raises Malformed, so one broken file never stops the ones
after it.

`apply` acts only on a report about a mail we sent: one that names a `sent` or
`unknown` ledger row, by the Message-ID it quotes (random, made at plan time),
else by a VERP return path it was sent back to (`sender.return_path`, with the
row id and a signature; see `verp_address`). Anything else raises NotOurs
("not about a mail we sent"): a forged or misdirected report can never
suppress anyone. A permanent failure (Action: failed, Status 5.x.x) suppresses
the row's address and sets consent `bounced`; a complaint suppresses it and
sets consent `complained`; delays (4.x.x) are recorded and change nothing.
"""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.message import Message
from email.utils import getaddresses

from mailer.core.addresses import Address, email_key, parse_address
from mailer.core.errors import InvalidValue, UserError
from mailer.core.states import Consent
from mailer.mail.links import verp_row
from mailer.store import events
from mailer.store.customers import opt_out_customer, suppress
from mailer.store.db import Connection, Engine
from mailer.store.ledger import SentMail, sent_mail, sent_mail_with_message_id

_STATUS = re.compile(r"^([245])\.\d{1,3}\.\d{1,3}$")
_MESSAGE_ID = re.compile(r"<[^<>\s]+>")
# local+<row id>-<signature>@domain (the signature: 20 hex digits, see links)
MAX_REPORT_BYTES = 10 * 1024 * 1024  # a report quotes a mail; anything bigger is not one
NOT_OURS = "not about a mail we sent"


class SetAside(UserError):
    """A report this command does not act on: its file is moved to set-aside/."""


class Malformed(SetAside):
    """Not a delivery status notification or complaint this command can read."""


class NotOurs(SetAside):
    """A readable report that names no mail we sent."""

    def __init__(self) -> None:
        super().__init__(NOT_OURS)


@dataclass(frozen=True)
class Finding:
    kind: str  # "bounce" or "complaint"
    recipients: tuple[Address, ...]  # the addresses it names (a complaint may name none)
    status: str  # the DSN status (5.1.1), or the feedback type (abuse)
    permanent: bool  # a bounce that suppresses; complaints always do


@dataclass(frozen=True)
class Report:
    findings: tuple[Finding, ...]
    message_id: str | None  # of the mail it is about, when it quotes one
    return_paths: tuple[str, ...]  # where it was sent, or the envelope sender it quotes


# --- reading a report (pure) ------------------------------------------------------------


def parse(raw: bytes) -> Report:
    """What one report says; Malformed when it is no report this command can read."""
    if len(raw) > MAX_REPORT_BYTES:
        raise Malformed(f"larger than {MAX_REPORT_BYTES // 2**20} MB: not a report")
    try:
        return _parse(raw)
    except Malformed:
        raise
    except Exception as err:  # untrusted input: whatever it breaks, the file is set aside
        raise Malformed(f"cannot read: {type(err).__name__}: {err}") from None


def _parse(raw: bytes) -> Report:
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    if message.get_content_type() != "multipart/report":
        raise Malformed(f"not a report (Content-Type {message.get_content_type()})")
    param = message.get_param("report-type")
    kind = param.lower() if isinstance(param, str) else ""
    parts = _messages(message.get_payload())
    if not parts:
        raise Malformed("a report without parts")
    quoted = _quoted(parts)
    original = _message_id(_header(quoted, "Message-ID") if quoted is not None else None)
    return_paths = [*_addresses(message, "To", "Delivered-To", "X-Original-To", "Envelope-To",
                                "X-Envelope-To"),
                    *(_addresses(quoted, "Return-Path") if quoted is not None else [])]
    if kind == "delivery-status":
        findings = _dsn(parts)
    elif kind == "feedback-report":
        findings, mail_from = _arf(parts, quoted)
        return_paths += mail_from
    else:
        raise Malformed(f"report-type {kind or 'missing'} is neither delivery-status nor "
                        "feedback-report")
    return Report(tuple(findings), original, tuple(dict.fromkeys(return_paths)))


def _dsn(parts: list[Message]) -> list[Finding]:
    status_part = _part(parts, "message/delivery-status")
    if status_part is None:
        raise Malformed("a delivery-status report without a message/delivery-status part")
    blocks = _messages(status_part.get_payload())
    if len(blocks) < 2:
        raise Malformed("a delivery-status part without per-recipient fields")
    found = []
    for block in blocks[1:]:  # the first block is per-message
        recipients = tuple(a for a in (_address(_field(block, "Final-Recipient")),
                                       _address(_field(block, "Original-Recipient")))
                           if a is not None)
        action = (_field(block, "Action") or "").strip().lower()
        words = (_field(block, "Status") or "").split()  # "5.1.1 (comment)"; may be blank
        status = words[0] if words else ""
        if not recipients or not _STATUS.match(status):
            raise Malformed("a recipient block without Final-Recipient or a valid Status")
        found.append(Finding("bounce", recipients, status,
                             permanent=action == "failed" and status.startswith("5")))
    return found


def _arf(parts: list[Message], quoted: Message | None) -> tuple[list[Finding], list[str]]:
    """The complaint, and the envelope sender the report says the mail had."""
    feedback = _part(parts, "message/feedback-report")
    if feedback is None:
        raise Malformed("a feedback report without a message/feedback-report part")
    fields = _messages(feedback.get_payload())
    block = fields[0] if fields else None
    if block is None:
        text = feedback.get_payload(decode=True) or b""
        block = email.message_from_bytes(bytes(text), policy=email.policy.compat32)
    feedback_type = (_field(block, "Feedback-Type") or "").strip().lower()
    if not feedback_type:
        raise Malformed("a feedback report without Feedback-Type")
    # Providers often redact the recipient: the row found by Message-ID or VERP decides.
    named = [_address(_header(block, "Original-Rcpt-To")),
             _address(_header(block, "Removal-Recipient")),
             _address(_header(quoted, "To")) if quoted is not None else None]
    recipients = tuple(a for a in named if a is not None)
    return ([Finding("complaint", recipients, feedback_type, permanent=True)],
            _addresses(block, "Original-Mail-From"))


def _part(parts: list[Message], content_type: str) -> Message | None:
    part = next((p for p in parts if p.get_content_type() == content_type), None)
    encoding = (_header(part, "Content-Transfer-Encoding") or "7bit").strip().lower() \
        if part is not None else "7bit"
    if encoding not in ("7bit", "8bit", "binary"):
        # RFC 2046 §5.2: a message/* body is never encoded; the parser read it as fields
        raise Malformed(f"a {content_type} part encoded as {encoding}, which it cannot be")
    return part


def _quoted(parts: list[Message]) -> Message | None:
    """The original message (or its headers) a report quotes."""
    for part in parts[1:]:
        if part.get_content_type() == "message/rfc822":
            inner = _messages(part.get_payload())
            if inner:
                return inner[0]
        if part.get_content_type() == "text/rfc822-headers":
            payload = part.get_payload(decode=True) or b""
            return email.message_from_bytes(bytes(payload), policy=email.policy.compat32)
    return None


def _messages(payload: object) -> list[Message]:
    """The sub-messages of a payload (a multipart's parts, a status part's blocks)."""
    if not isinstance(payload, list):
        return []
    return [item for item in payload if isinstance(item, Message)]


def _field(block: Message, name: str) -> str | None:
    """A field the report's meaning rests on: RFC 3464 and 5965 fields are ASCII, so 8-bit
    bytes there (the parser hands them over as a Header) make the report malformed."""
    value = block.get(name)
    if isinstance(value, Header):
        raise Malformed(f"{name}: 8-bit bytes where the RFC allows only ASCII")
    return value


def _header(message: Message | None, name: str) -> str | None:
    """A header as text, or None when absent or not ASCII (it then identifies nothing)."""
    value = message.get(name) if message is not None else None
    return value if isinstance(value, str) else None


def _addresses(message: Message, *names: str) -> list[str]:
    values = [value for name in names for value in (message.get_all(name) or [])
              if isinstance(value, str)]
    return [address for _, address in getaddresses(values) if address]


def _message_id(value: str | None) -> str | None:
    match = _MESSAGE_ID.search(value) if value else None
    return match.group(0) if match else None


def _address(field: str | None) -> Address | None:
    """`rfc822; someone@example.com` or `<someone@example.com>` as an address."""
    if not field:
        return None
    value = field.split(";", 1)[1] if ";" in field else field
    value = value.strip().strip("<>").strip()
    try:
        return parse_address(value)
    except InvalidValue:
        return None


# --- acting on it ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Applied:
    address: str  # the recipient of the mail the report is about
    findings: tuple[Finding, ...]  # those about that mail's recipient
    suppressed: bool  # newly suppressed by this report


def _sent_row(conn: Connection, report: Report, keys: Sequence[str]) -> SentMail | None:
    """The sent or unknown row the report is about: by Message-ID, else by VERP."""
    if report.message_id is not None:
        found = sent_mail_with_message_id(conn, report.message_id)
        if found is not None:
            return found
    for address in report.return_paths:
        row_id = verp_row(address, keys)
        if row_id is not None:
            found = sent_mail(conn, row_id)
            if found is not None:
                return found
    return None


def apply(engine: Engine, report: Report, now: datetime, source: str, *,
          keys: Sequence[str] = ()) -> Applied:
    """Suppress what the report says about the mail it names (idempotent) and record each
    finding as an event of that mail. KEYS verify VERP return paths. NotOurs when the
    report names no sent or unknown row, or only other recipients than that row's."""
    with engine.begin() as conn:
        row = _sent_row(conn, report, keys)
        if row is None:
            raise NotOurs
        target = email_key(row.email)  # the address we sent to, as planned
        # A bounce must be about the row's recipient (someone who got our mail cannot
        # bounce another's address with it); a complaint is about the row, whoever it names.
        findings = tuple(f for f in report.findings if f.kind == "complaint"
                         or target in {a.key for a in f.recipients})
        if not findings:
            raise NotOurs
        for finding in findings:
            events.add(conn, finding.kind, customer_id=row.customer_id, at=now,
                       campaign=row.campaign, delivery_id=row.id, comment=finding.status)
        permanent = next((f for f in findings if f.permanent), None)
        if permanent is None:
            return Applied(row.email, findings, suppressed=False)
        complaint = permanent.kind == "complaint"
        reason = "complaint" if complaint else f"bounce {permanent.status}"
        added = suppress(conn, [target], now=now, source=source, reason=reason)
        opt_out_customer(conn, row.customer_id,
                         Consent.COMPLAINED if complaint else Consent.BOUNCED, now=now,
                         source=source, reason=reason)
    return Applied(row.email, findings, suppressed=bool(added))
