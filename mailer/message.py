"""Building the MIME message of one mail (DESIGN §6): pure, bytes out.

multipart/alternative with a plain-text and an HTML part; From and Reply-To from
mailer.yaml; a Date; a Message-ID stable for its ledger row (a retry sends the
same id); List-Unsubscribe with the HTTPS link and a mailto URI, and
List-Unsubscribe-Post for one-click (RFC 8058). Header values are stripped of
CR, LF and every other control character first, so data can never add a header;
non-ASCII is RFC 2047-encoded and long lines are folded under 998 octets by the
email package's default policy.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, parseaddr

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def clean_header(value: str) -> str:
    """A header value with every control character (CR and LF included) made a space."""
    return re.sub(r"\s{2,}", " ", _CONTROL.sub(" ", value)).strip()


def message_id(*, campaign: str, occurrence: str, customer: str, domain: str) -> str:
    """The Message-ID of a ledger row: the same for every attempt at that row."""
    digest = hashlib.sha256(f"{campaign}\x00{occurrence}\x00{customer}".encode()).hexdigest()
    return f"<{digest[:32]}@{domain}>"


@dataclass(frozen=True)
class Mail:
    """Everything one message carries."""

    sender: str  # "Pine & Co <hello@shop.example>"
    recipient_name: str
    recipient_email: str
    subject: str
    html: str
    text: str
    date: datetime
    message_id: str
    unsubscribe_url: str
    unsubscribe_mailto: str
    reply_to: str | None = None


def _address(text: str) -> Address:
    name, email = parseaddr(text)
    username, _, domain = email.rpartition("@")
    return Address(display_name=clean_header(name), username=username, domain=domain)


def build(mail: Mail) -> bytes:
    """The complete message, CRLF line endings, ready for SMTP DATA."""
    message = EmailMessage()
    message["From"] = _address(mail.sender)
    username, _, domain = mail.recipient_email.rpartition("@")
    message["To"] = Address(display_name=clean_header(mail.recipient_name),
                            username=clean_header(username), domain=clean_header(domain))
    if mail.reply_to:
        message["Reply-To"] = _address(mail.reply_to)
    message["Subject"] = clean_header(mail.subject)
    message["Date"] = format_datetime(mail.date)
    message["Message-ID"] = clean_header(mail.message_id)
    message["List-Unsubscribe"] = (f"<{clean_header(mail.unsubscribe_url)}>, "
                                   f"<mailto:{clean_header(mail.unsubscribe_mailto)}"
                                   f"?subject=unsubscribe>")
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(mail.text, subtype="plain", charset="utf-8")
    message.add_alternative(mail.html, subtype="html", charset="utf-8")
    return message.as_bytes(policy=SMTP)
