"""Building the MIME message of one mail (DESIGN §6): pure, bytes out.

multipart/alternative with a plain-text and an HTML part; From and Reply-To from
mailer.yaml; a Date; a Message-ID stable for its ledger row (a retry sends the
same id); List-Unsubscribe with the HTTPS link and a mailto URI, and
List-Unsubscribe-Post for one-click (RFC 8058). Header values are stripped of
CR, LF and every other control character first, so data can never add a header;
non-ASCII is RFC 2047-encoded and long lines are folded under 998 octets by the
email package's default policy.

A part goes as 7bit when it can: ASCII, no control character, no line over 998
octets (RFC 2045 §2.7). The HTML part gets there by writing non-ASCII characters
as numeric references (`&#8212;`), which every client shows as the character;
a compiled template's own text already is (mailer.render.ascii_markup), so only
a customer's data can still need it. CSS does not read references, so a
non-ASCII `<style>` keeps quoted-printable. Quoted-printable is the fallback
for the rest (RFC 2045 §6.7): it costs about 8 ns a byte here, 7bit about 1.
"""

from __future__ import annotations

import hashlib
import re
from binascii import b2a_qp
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.utils import format_datetime, formataddr, parseaddr
from functools import lru_cache

from mailer.addresses import CONTROL


def clean_header(value: str) -> str:
    """A header value with every control character (CR and LF included) made a space."""
    return re.sub(r"\s{2,}", " ", CONTROL.sub(" ", value)).strip()


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


@lru_cache(maxsize=64)
def _sender(text: str) -> str:
    """The From or Reply-To header: the same for every mail of a campaign."""
    return _address(*parseaddr(text))


def _address(name: str, email: str) -> str:
    """`Name <addr>` with the name RFC 2047-encoded when it is not ASCII."""
    return formataddr((clean_header(name), clean_header(email)), charset="utf-8")


def _encoded(name: str, value: str) -> str:
    """A header value folded under 78 columns, RFC 2047-encoded when it is not ASCII."""
    if value.isascii() and len(name) + len(value) < 76:  # most subjects: nothing to do
        return value
    charset = "us-ascii" if value.isascii() else "utf-8"
    return Header(value, charset, maxlinelen=76, header_name=name).encode(linesep="\r\n")


# Bytes a 7bit line may hold besides printable ASCII: tab (the line feed is the end).
_PRINTABLE = bytes([9, 10, *range(32, 127)])
MAX_LINE = 998


def _styles_ascii(markup: str) -> bool:
    """Whether every <style> block of MARKUP is ASCII (tags come out of lxml lower-case)."""
    start = markup.find("<style")
    while start >= 0:
        end = markup.find("</style", start)
        if end < 0 or not markup[start:end].isascii():
            return False
        start = markup.find("<style", end)
    return True


def _seven_bit(body: str, *, html: bool) -> bytes | None:
    """BODY as 7bit bytes (an HTML body's non-ASCII as numeric references), or None when
    it cannot be: non-ASCII text, a control character, a line over 998 octets."""
    if body.isascii():
        data = body.encode("ascii")
    elif html and _styles_ascii(body):
        data = body.encode("ascii", "xmlcharrefreplace")
    else:
        return None
    if data.translate(None, _PRINTABLE):
        return None
    if len(data) > MAX_LINE and max(map(len, data.split(b"\n"))) > MAX_LINE:
        return None
    return data


def _part(subtype: str, body: str) -> bytes:
    if "\r" in body:
        body = body.replace("\r\n", "\n")
    data = _seven_bit(body, html=subtype == "html")
    if data is not None:
        encoding, payload = "7bit", data.replace(b"\n", b"\r\n")
    else:
        encoding = "quoted-printable"
        payload = b2a_qp(body.encode("utf-8")).replace(b"\n", b"\r\n")
    return (f"Content-Type: text/{subtype}; charset=\"utf-8\"\r\n"
            f"Content-Transfer-Encoding: {encoding}\r\n\r\n").encode() + payload


@lru_cache(maxsize=16)
def _date(moment: datetime) -> str:
    """The Date header: the same for a whole send batch, so cached."""
    return format_datetime(moment)


def build(mail: Mail) -> bytes:
    """The complete message, CRLF line endings, ready for SMTP DATA.

    Written directly rather than through EmailMessage: this is the hot path (the
    default policy costs about 2 ms a mail). tests/test_message.py parses every
    header back with email.policy.default.
    """
    headers = [
        ("From", _sender(mail.sender)),
        ("To", _address(mail.recipient_name, mail.recipient_email)),
        *([("Reply-To", _sender(mail.reply_to))] if mail.reply_to else []),
        ("Subject", _encoded("Subject", clean_header(mail.subject))),
        ("Date", _date(mail.date)),
        ("Message-ID", clean_header(mail.message_id)),
        ("List-Unsubscribe", f"<{clean_header(mail.unsubscribe_url)}>,\r\n "
                             f"<mailto:{clean_header(mail.unsubscribe_mailto)}"
                             "?subject=unsubscribe>"),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
        ("MIME-Version", "1.0"),
    ]
    text, html = _part("plain", mail.text), _part("html", mail.html)
    boundary = "=_mailer_" + hashlib.sha256(mail.message_id.encode()).hexdigest()[:24]
    while boundary.encode() in text or boundary.encode() in html:
        boundary += "_"
    headers.append(("Content-Type", f"multipart/alternative; boundary=\"{boundary}\""))
    head = "".join(f"{name}: {value}\r\n" for name, value in headers).encode("ascii")
    marker = f"--{boundary}\r\n".encode()
    return b"".join((head, b"\r\n", marker, text, b"\r\n", marker, html,
                     f"\r\n--{boundary}--\r\n".encode()))
