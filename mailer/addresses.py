"""Email addresses: syntax check, normalised form and the identity key (DESIGN §3).

Syntax only, never DNS. `email_key` is the NFC, case-folded normalised address,
so `John@x.com` and `john@x.com` are one person.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

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


def email_key(normalised: str) -> str:
    """The identity key of an already normalised address."""
    return unicodedata.normalize("NFC", normalised).casefold()
