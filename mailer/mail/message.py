"""Building the MIME message of one mail (DESIGN §6): pure, bytes out.

multipart/alternative with a plain-text and an HTML part; From and Reply-To from
mailer.yaml; a Date; a Message-ID stable for its ledger row (a retry sends the
same id); List-Unsubscribe with the HTTPS link and a mailto URI, and
List-Unsubscribe-Post for one-click (RFC 8058). Header values are stripped of
CR, LF and every other control character first, so data can never add a header.
Subjects and display names are capped (SUBJECT_LIMIT, NAME_LIMIT) and written as
ASCII folded at spaces, or as RFC 2047 encoded-words of at most 75 characters
(non-ASCII, and ASCII that looks like an encoded-word); no header line reaches
998 octets whatever the data (docs/delivery.md, tests/test_headers.py).

A part goes as 7bit when it can: ASCII, no control character, no line over 998
octets (RFC 2045 §2.7). The HTML part gets there by writing non-ASCII characters
as numeric references (`&#8212;`), which every client shows as the character;
a compiled template's own text already is (mailer.mail.templates.ascii_markup), so only
a customer's data can still need it. CSS does not read references, so a
non-ASCII `<style>` keeps quoted-printable. Quoted-printable is the fallback
for the rest (RFC 2045 §6.7): it costs about 8 ns a byte here, 7bit about 1.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from binascii import b2a_base64, b2a_qp
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime, parseaddr
from functools import lru_cache

from mailer.core.addresses import CONTROL, ascii_domain
from mailer.core.errors import InvalidValue

# Characters a header shows at most (docs/delivery.md): a longer subject or display
# name is cut and ends in an ellipsis, so no data can make an unreadable header.
SUBJECT_LIMIT = 255
NAME_LIMIT = 100


def clean_header(value: str) -> str:
    """A header value with every control character (CR and LF included) made a space."""
    return re.sub(r"\s{2,}", " ", CONTROL.sub(" ", value)).strip()


def message_id(*, campaign: str, occurrence: str, customer: str, domain: str) -> str:
    """The Message-ID of a row planned before Message-IDs were random (its message_id is
    NULL): derived from the row's key, so every attempt at it sends the same one."""
    digest = hashlib.sha256(f"{campaign}\x00{occurrence}\x00{customer}".encode()).hexdigest()
    return f"<{digest[:32]}@{domain}>"


def new_message_id(domain: str) -> str:
    """A fresh Message-ID, made when a row is planned and stored on it: 128 random bits
    (hex: base64.b32encode is pure Python and cost 8 µs an id, token_hex 0.8 µs), so
    two installations never make the same one and a bounce quoting it can only be
    about that row."""
    try:  # a header is ASCII: an IDN domain as its punycode
        domain = ascii_domain(domain)
    except InvalidValue:
        domain = "mailer.invalid"
    return f"<{secrets.token_hex(16)}@{domain}>"


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
    unsubscribe_url: str  # "" for a notice: no List-Unsubscribe headers
    unsubscribe_mailto: str
    reply_to: str | None = None


@lru_cache(maxsize=64)
def _sender(text: str, header: str) -> str:
    """The From or Reply-To header: the same for every mail of a campaign."""
    name, email = parseaddr(text)
    return _address(name, email, header)


def capped(value: str, limit: int) -> str:
    """VALUE as a header shows it: cleaned (clean_header), and past LIMIT characters cut
    to LIMIT - 1 (trailing white space dropped) plus an ellipsis (docs/delivery.md)."""
    value = clean_header(value)
    if len(value) <= limit:
        return value
    return value[:limit - 1].rstrip() + "\u2026"


# A display name that needs neither quotes nor encoding: atoms (RFC 5322 §3.2.3)
# separated by single spaces.
_ATOMS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?: [A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


def _encoded_words(name: str, value: str) -> str:
    """VALUE as RFC 2047 encoded-words (base64 of its UTF-8), folded so that each line,
    and so each word, is at most 76 characters (§2: an encoded-word is at most 75), no
    character split between two words (§5). Written out: email.header.Header took
    about 0.1 ms a name, a third of a mail's MIME."""
    data = value.encode("utf-8")
    words: list[str] = []
    start = 0
    room = max((76 - len(name) - 2 - 12) // 4, 1) * 3  # the first line holds "Name: "
    while start < len(data):
        end = min(start + room, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:  # a UTF-8 continuation byte
            end -= 1
        words.append("=?utf-8?b?" + b2a_base64(data[start:end], newline=False).decode()
                     + "?=")
        start, room = end, (76 - 1 - 12) // 4 * 3  # the next lines start with a space
    return "\r\n ".join(words)


def _phrase(header: str, name: str) -> str:
    """The display name as an RFC 5322 phrase: atoms as they are, other ASCII quoted,
    the rest encoded. Text that looks like an encoded-word is encoded too, so that a
    client shows what was typed rather than decoding it."""
    if name.isascii() and "=?" not in name:
        if _ATOMS.fullmatch(name):
            return name
        return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return _encoded_words(header, name)


def _addr_spec(email: str) -> str:
    """The address for a header: an IDN domain as punycode when the local part is ASCII;
    a non-ASCII local part leaves the whole address in UTF-8 (RFC 6532, sent with
    SMTPUTF8)."""
    email = clean_header(email)
    if email.isascii():
        return email
    local, _, domain = email.rpartition("@")
    if not local.isascii():
        return email
    return f"{local}@{ascii_domain(domain)}"


def _address(name: str, email: str, header: str = "To") -> str:
    """`Name <addr>`, the name capped at NAME_LIMIT; a long line folds before `<`."""
    addr = _addr_spec(email)
    name = capped(name, NAME_LIMIT)
    if not name:
        return addr
    phrase = _phrase(header, name)
    _, newline, last = phrase.rpartition("\r\n")
    width = len(last) + (0 if newline else len(header) + 2) + len(addr) + 3
    fold = " " if width <= 78 else "\r\n "
    return f"{phrase}{fold}<{addr}>"


def _fold(name: str, value: str) -> str:
    """ASCII VALUE folded at its spaces under 78 columns where its words allow. (Header
    puts a word longer than the line on a line of its own, after an empty first line,
    and readers then show a leading space.)"""
    lines: list[str] = []
    line, width = "", 78 - len(name) - 2
    for word in value.split(" "):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line, width = word, 77
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return "\r\n ".join(lines)


def _unstructured(name: str, value: str) -> str:
    """A text header (Subject): ASCII as it is, folded at spaces, else RFC 2047
    encoded-words (also ASCII that looks like one)."""
    if value.isascii() and "=?" not in value:
        if len(name) + len(value) < 76:  # most subjects: nothing to do
            return value
        return _fold(name, value)
    return _encoded_words(name, value)


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
    if _has_long_line(data):
        return None
    return data


def _has_long_line(data: bytes) -> bool:
    """Whether a line of DATA (LF-separated) is longer than MAX_LINE: every window of
    MAX_LINE + 1 bytes must hold a line feed, so each look jumps to the last one in its
    window (about 20 looks for 20 KB, where splitting into lines made 400 objects)."""
    start, size = 0, len(data)
    while size - start > MAX_LINE:
        end = data.rfind(b"\n", start, start + MAX_LINE + 1)
        if end < 0:
            return True
        start = end + 1
    return False


# Quoted-printable lines already encoded (CRLF line ends), by their text: a campaign's
# mails share most of their lines. Cleared when full; long lines are not kept.
_QP_LINES: dict[str, bytes] = {}
_QP_KEPT = 4096
_QP_LONGEST = 1000


def _quoted_printable(body: str) -> bytes:
    """b2a_qp(BODY as UTF-8) with CRLF line ends, made a line at a time from _QP_LINES:
    b2a_qp was a seventh of a newsletter's instructions. The same bytes: b2a_qp starts
    every line afresh and looks past a character only for the line's end, so a line
    encodes alike alone and in its text, unless the text has a CR (CRLF line ends)
    or a line ends in a space or tab (written `=20` at a line end, not at the text's):
    those take the whole-text path."""
    if "\r" in body or " \n" in body or "\t\n" in body:
        return b2a_qp(body.encode("utf-8")).replace(b"\n", b"\r\n")
    kept = _QP_LINES
    lines = body.split("\n")
    coded: list[bytes | None] = list(map(kept.get, lines))  # C calls, not one a line
    if None in coded:
        for index, line in enumerate(lines):
            if coded[index] is None:
                made = b2a_qp(line.encode("utf-8")).replace(b"\n", b"\r\n")  # soft breaks
                if len(line) <= _QP_LONGEST:
                    if len(kept) >= _QP_KEPT:
                        kept.clear()
                    kept[line] = made
                coded[index] = made
    return b"\r\n".join(coded)  # type: ignore[arg-type]  # no None left


def _part(subtype: str, body: str) -> bytes:
    if "\r" in body:
        body = body.replace("\r\n", "\n")
    data = _seven_bit(body, html=subtype == "html")
    if data is not None:
        encoding, payload = "7bit", data.replace(b"\n", b"\r\n")
    else:
        encoding, payload = "quoted-printable", _quoted_printable(body)
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
        ("From", _sender(mail.sender, "From")),
        ("To", _address(mail.recipient_name, mail.recipient_email)),
        *([("Reply-To", _sender(mail.reply_to, "Reply-To"))] if mail.reply_to else []),
        ("Subject", _unstructured("Subject", capped(mail.subject, SUBJECT_LIMIT))),
        ("Date", _date(mail.date)),
        ("Message-ID", clean_header(mail.message_id)),
        # A notice (mail that is not marketing: an alert, the review) has no unsubscribe URL
        *([("List-Unsubscribe", f"<{clean_header(mail.unsubscribe_url)}>,\r\n "
                                f"<mailto:{clean_header(mail.unsubscribe_mailto)}"
                                "?subject=unsubscribe>"),
           ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")]
          if mail.unsubscribe_url else []),
        ("MIME-Version", "1.0"),
    ]
    text, html = _part("plain", mail.text), _part("html", mail.html)
    boundary = "=_mailer_" + hashlib.sha256(mail.message_id.encode()).hexdigest()[:24]
    while boundary.encode() in text or boundary.encode() in html:
        boundary += "_"
    headers.append(("Content-Type", f"multipart/alternative;\r\n boundary=\"{boundary}\""))
    # UTF-8 only for a non-ASCII local part (RFC 6532); everything else is ASCII.
    head = "".join(f"{name}: {value}\r\n" for name, value in headers).encode("utf-8")
    marker = f"--{boundary}\r\n".encode()
    return b"".join((head, b"\r\n", marker, text, b"\r\n", marker, html,
                     f"\r\n--{boundary}--\r\n".encode()))
