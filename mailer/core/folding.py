"""Case folding for comparisons (DESIGN §4.1): one fold, the same on SQLite and
PostgreSQL because it runs here, in Python, for stored shadow columns and for segment
values alike. Light (idna only for an A-label): mailer.store.models imports it on every command.
"""

from __future__ import annotations

import unicodedata


def fold(text: str) -> str:
    """TEXT compared case-insensitively: NFC, then Unicode full case folding, then NFC
    again (folding can decompose: 'İ' becomes 'i' + U+0307). Context-free, so Greek
    final sigma, 'ß'/'SS'/'ẞ' and Turkish 'İ' fold the same on every database."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", text).casefold())


def fold_domain(domain: str) -> str:
    """A domain's folded Unicode form: an `xn--` label and its Unicode spelling are one
    name (a label that does not decode stays as written)."""
    return ".".join(fold(_unicode_label(label)) for label in domain.split("."))


def _unicode_label(label: str) -> str:
    """An IDNA A-label (`xn--...`) as its U-label; any other label, or an A-label that
    is not valid IDNA 2008 (`xn--a-`, `xn--`), as it is."""
    if label[:4].lower() != "xn--" or not label.isascii():
        return label
    import idna  # only for the rare A-label: this module stays standard-library light

    try:
        return str(idna.decode(label))
    except (idna.IDNAError, UnicodeError):
        return label
