"""Email addresses: syntax check, normalised form and the identity key (DESIGN §3).

Syntax only, never DNS. `email_key` is the NFC, case-folded normalised address
with the Unicode form of its domain, so `John@x.com` and `john@x.com` are one
person, and so are `info@xn--bcher-kva.example` and `info@bücher.example`.

`fold` is the one case fold of the engine: identity keys, the folded shadow
columns that segments match (mailer.models) and the values segments are
matched with all go through it, so SQLite and PostgreSQL compare the same
strings whatever their own lower() does.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import idna
from email_validator import EmailNotValidError, validate_email

from mailer.errors import InvalidValue


@dataclass(frozen=True)
class Address:
    email: str
    key: str


# Unicode category Cc (C0 and C1 controls) plus the line and paragraph separators.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def has_control_character(text: str) -> bool:
    """True when the text holds a C0/C1 control character or a line/paragraph separator."""
    return CONTROL.search(text) is not None


def parse_address(raw: str) -> Address:
    """The normalised address and its key; an invalid address raises InvalidValue."""
    if has_control_character(raw):
        raise InvalidValue(f"invalid email {raw!r}: it contains a control character")
    text = raw.strip()
    if not text:
        raise InvalidValue("email is empty")
    try:
        checked = validate_email(text, check_deliverability=False)
    except EmailNotValidError as err:
        raise InvalidValue(f"invalid email {text!r}: {err}") from None
    email = checked.normalized
    return Address(email=email, key=email_key(email))


def fold(text: str) -> str:
    """TEXT compared case-insensitively: NFC, then Unicode full case folding, then NFC
    again (folding can decompose: 'İ' becomes 'i' + U+0307). Context-free, so Greek
    final sigma, 'ß'/'SS'/'ẞ' and Turkish 'İ' fold the same on every database."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", text).casefold())


def ascii_domain(domain: str) -> str:
    """DOMAIN in its ASCII (punycode) form, as SMTP and headers carry it (RFC 5890): IDNA
    2008, as email-validator normalised it (Python's own codec is IDNA 2003, which
    turns 'ß' into 'ss'). Raises InvalidValue for a domain with no ASCII form."""
    if domain.isascii():
        return domain
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError:  # its text would quote the address: left out
        raise InvalidValue("the address's domain has no ASCII form (IDNA 2008)") from None


def fold_domain(domain: str) -> str:
    """A domain's folded Unicode form: an `xn--` label and its Unicode spelling are one
    name (a label that does not decode stays as written)."""
    return ".".join(fold(_unicode_label(label)) for label in domain.split("."))


def _unicode_label(label: str) -> str:
    """An IDNA A-label (`xn--...`) as its U-label; any other label as it is. Punycode
    alone: the A-label's validity was email-validator's to check when it was stored."""
    if label[:4].lower() != "xn--" or not label.isascii():
        return label
    try:
        return label[4:].lower().encode("ascii").decode("punycode")
    except UnicodeError:
        return label


def email_key(normalised: str) -> str:
    """The identity key of an address: folded, with the Unicode form of its domain."""
    local, at, domain = normalised.rpartition("@")
    if not at:
        return fold(normalised)
    return f"{fold(local)}@{fold_domain(domain)}"
