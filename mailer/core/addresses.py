"""Email addresses: syntax check, normalised form and the identity key (DESIGN §3).

Syntax only, never DNS. `email_key` is the NFC, case-folded normalised address
with the Unicode form of its domain, so `John@x.com` and `john@x.com` are one
person, and so are `info@xn--bcher-kva.example` and `info@bücher.example`.

`fold` is the one case fold of the engine: identity keys, the folded shadow
columns that segments match (mailer.store.models) and the values segments are
matched with all go through it, so SQLite and PostgreSQL compare the same
strings whatever their own lower() does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import idna
from email_validator import EmailNotValidError, validate_email

from mailer.core.errors import InvalidValue
from mailer.core.folding import fold, fold_domain


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


@lru_cache(maxsize=1024)  # a campaign has one sender domain and few recipient domains
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


def email_key(normalised: str) -> str:
    """The identity key of an address: folded, with the Unicode form of its domain."""
    local, at, domain = normalised.rpartition("@")
    if not at:
        return fold(normalised)
    return f"{fold(local)}@{fold_domain(domain)}"
