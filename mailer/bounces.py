"""Bounces and complaints that arrive after delivery (DESIGN §5 `bounces`).

`parse` reads one message: an RFC 3464 delivery status notification
(multipart/report; report-type=delivery-status) or an RFC 5965 ARF complaint
(report-type=feedback-report). Pure. `apply` writes what the reports say: a
permanent failure (Action: failed, Status 5.x.x) suppresses the address and sets
consent `bounced`; a complaint suppresses it and sets consent `complained`;
delays (4.x.x) change nothing. A report that is not one of these is
`Malformed`: the command sets its file aside and goes on.
"""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass
from datetime import datetime
from email.message import Message

from sqlalchemy import Engine, insert, select, update

from mailer.addresses import parse_address
from mailer.errors import InvalidValue, UserError
from mailer.models import Customer, Delivery, Event, Suppression

_STATUS = re.compile(r"^([245])\.\d{1,3}\.\d{1,3}$")


class Malformed(UserError):
    """Not a delivery status notification or complaint this command can read."""


@dataclass(frozen=True)
class Finding:
    kind: str  # "bounce" or "complaint"
    address: str
    status: str  # the DSN status (5.1.1), or the feedback type (abuse)
    permanent: bool  # a bounce that suppresses; complaints always do
    message_id: str | None  # of the mail it is about, when the report quotes it


def parse(raw: bytes) -> list[Finding]:
    """What one report says, recipient by recipient; Malformed when it is no report."""
    try:
        message = email.message_from_bytes(raw, policy=email.policy.compat32)
    except Exception as err:  # the parser is lenient; this is for the truly broken
        raise Malformed(f"cannot parse: {err}") from None
    if message.get_content_type() != "multipart/report":
        raise Malformed(f"not a report (Content-Type {message.get_content_type()})")
    param = message.get_param("report-type")
    kind = param.lower() if isinstance(param, str) else ""
    parts = _messages(message.get_payload())
    if not parts:
        raise Malformed("a report without parts")
    original = _original_message_id(parts)
    if kind == "delivery-status":
        return _dsn(parts, original)
    if kind == "feedback-report":
        return _arf(parts, original)
    raise Malformed(f"report-type {kind or 'missing'} is neither delivery-status nor "
                    "feedback-report")


def _dsn(parts: list[Message], original: str | None) -> list[Finding]:
    status_part = next((p for p in parts if p.get_content_type() == "message/delivery-status"),
                       None)
    if status_part is None:
        raise Malformed("a delivery-status report without a message/delivery-status part")
    blocks = _messages(status_part.get_payload())
    if len(blocks) < 2:
        raise Malformed("a delivery-status part without per-recipient fields")
    found = []
    for block in blocks[1:]:  # the first block is per-message
        recipient = _address(block.get("Final-Recipient") or block.get("Original-Recipient"))
        action = (block.get("Action") or "").strip().lower()
        status = (block.get("Status") or "").strip().split()[0] if block.get("Status") else ""
        if recipient is None or not _STATUS.match(status):
            raise Malformed("a recipient block without Final-Recipient or a valid Status")
        found.append(Finding("bounce", recipient, status,
                             permanent=action == "failed" and status.startswith("5"),
                             message_id=original))
    return found


def _arf(parts: list[Message], original: str | None) -> list[Finding]:
    feedback = next((p for p in parts if p.get_content_type() == "message/feedback-report"),
                    None)
    if feedback is None:
        raise Malformed("a feedback report without a message/feedback-report part")
    fields = _messages(feedback.get_payload())
    block = fields[0] if fields else None
    if block is None:
        text = feedback.get_payload(decode=True) or b""
        block = email.message_from_bytes(bytes(text), policy=email.policy.compat32)
    feedback_type = (block.get("Feedback-Type") or "").strip().lower()
    if not feedback_type:
        raise Malformed("a feedback report without Feedback-Type")
    recipient = _address(block.get("Original-Rcpt-To") or block.get("Removal-Recipient"))
    if recipient is None:
        quoted = _quoted(parts)
        recipient = _address(quoted.get("To")) if quoted is not None else None
    if recipient is None:
        raise Malformed("a complaint that names no recipient")
    return [Finding("complaint", recipient, feedback_type, permanent=True,
                    message_id=original)]


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


def _original_message_id(parts: list[Message]) -> str | None:
    quoted = _quoted(parts)
    value = quoted.get("Message-ID") if quoted is not None else None
    return value.strip() if value else None


def _address(field: str | None) -> str | None:
    """`rfc822; someone@example.com` or `<someone@example.com>` as an address."""
    if not field:
        return None
    value = field.split(";", 1)[1] if ";" in field else field
    value = value.strip().strip("<>").strip()
    try:
        return parse_address(value).email
    except InvalidValue:
        return None


@dataclass(frozen=True)
class Applied:
    suppressed: list[str]  # addresses newly suppressed
    unchanged: list[str]  # already suppressed, or a temporary failure


def apply(engine: Engine, findings: list[Finding], now: datetime, source: str) -> Applied:
    """Suppress what the findings say (idempotent) and record each as an event."""
    suppressed, unchanged = [], []
    with engine.begin() as conn:
        for finding in findings:
            address = parse_address(finding.address)
            customer = conn.execute(select(Customer.id).where(
                Customer.email_key == address.key)).scalar()
            delivery = conn.execute(select(Delivery.id, Delivery.campaign).where(
                Delivery.message_id == finding.message_id)).first() \
                if finding.message_id else None
            conn.execute(insert(Event).values(
                kind=finding.kind, customer_id=customer, at=now,
                campaign=delivery.campaign if delivery else None,
                delivery_id=delivery.id if delivery else None, comment=finding.status))
            if not finding.permanent:
                unchanged.append(finding.address)
                continue
            reason = "complaint" if finding.kind == "complaint" else f"bounce {finding.status}"
            known = conn.execute(select(Suppression.id).where(
                Suppression.email_key == address.key)).first()
            if known is None:
                conn.execute(insert(Suppression).values(
                    email_key=address.key, reason=reason, source=source, created_at=now))
                suppressed.append(finding.address)
            else:
                unchanged.append(finding.address)
            if customer is not None:
                consent = "complained" if finding.kind == "complaint" else "bounced"
                conn.execute(update(Customer).where(
                    Customer.id == customer, Customer.consent.not_in(("complained",))
                ).values(consent=consent, consent_at=now, consent_source=source,
                         consent_reason=reason, updated_at=now))
    return Applied(suppressed, unchanged)
