"""Signed per-recipient links (DESIGN §4.4, §6): unsubscribe, preferences, browser view,
ratings, the survey page, "keep me subscribed" and a double opt-in's confirmation.

A token is `PAYLOAD.SIGNATURE`, both base64url without padding. The payload is
the JSON list [purpose, customer store id, campaign, message, extra]; the
signature is HMAC-SHA256 over "mailer-link:" + payload, cut to 128 bits. A token
names its purpose, so a click token can never unsubscribe. Verification tries
MAILER_SECRET_KEY, then each of MAILER_SECRET_KEY_OLD, comparing in constant
time. Pure: keys are passed in.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import lru_cache
from json.encoder import encode_basestring
from typing import Any

from mailer.core.claims import Claims as Claims  # links make and read them
from mailer.core.errors import MailerError

# `preview` and `validate` sign with this fixed key (DESIGN §4.0): their links are
# examples, and must never be accepted by a server that has a real key.
PREVIEW_KEY = "mailer-preview-only"

# `click` signs one link's target; `clicks` is a mail's one token for the links its
# campaign version holds (mailer.mail.tracking), naming that version. The console's
# session cookie and its form tokens (mailer.web.console.auth) are tokens of their own
# purposes: no mail link ever opens the console, no console cookie is a link.
PURPOSES = {"unsubscribe": "u", "preferences": "p", "browser": "b", "click": "c", "open": "o",
            "rating": "r", "survey": "s", "keep_subscribed": "k", "clicks": "m",
            "console_session": "CS", "console_form": "CF",
            "confirm": "d"}  # `confirm`: a double opt-in's link (mailer.delivery.confirmations)


class InvalidLink(MailerError):
    """A token that is malformed, tampered with, signed with an unknown key, or for
    another purpose."""


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _b64(data: bytes) -> str:
    """base64url without padding (urlsafe_b64encode, minus two Python calls a token)."""
    return binascii.b2a_base64(data, newline=False).translate(_URLSAFE).rstrip(
        b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@lru_cache(maxsize=8)
def _keyed(key: str) -> Any:
    """HMAC-SHA256 under KEY, fed the prefix already: a mail signs a dozen links or
    more (its own, then a click link per link), and each copies this instead of
    setting the key up again. OpenSSL's HMAC object itself where hmac has one: its
    copy, update and digest are C calls, where hmac.HMAC's are Python methods calling
    them (a few µs a token)."""
    mac = hmac.new(key.encode("utf-8"), b"mailer-link:", hashlib.sha256)
    return getattr(mac, "_hmac", None) or mac


def _signature(payload: str, key: str) -> str:
    mac = _keyed(key).copy()
    mac.update(payload.encode("ascii"))
    return _b64(mac.digest()[:16])


def address_signature(text: str, key: str) -> str:
    """A short signature of TEXT to put in an email address (a VERP return path): 80
    bits in lower-case hex, since mail systems may change the case of a local part.
    Prefixed so that it can never be taken for a link token's signature."""
    mac = _keyed(key).copy()
    mac.update(b"address:" + text.encode("ascii"))
    digest: bytes = mac.digest()
    return digest[:10].hex()


# A VERP return path: bounces+<row id>-<signature>@domain (sender.return_path).
_VERP = re.compile(r"[^@+\s]+\+(\d{1,18})-([0-9a-f]{20})@[^@\s]+", re.IGNORECASE)


def verp_address(return_path: str, row_id: int, key: str) -> str:
    """The envelope sender of a row's mail: `bounces+<row id>-<signature>@domain`, so a
    bounce sent back to it names the row even when it quotes nothing of the mail."""
    local, domain = return_path.rsplit("@", 1)
    return f"{local}+{row_id}-{address_signature(str(row_id), key)}@{domain}"


def verp_row(address: str, keys: Sequence[str]) -> int | None:
    """The row id of a VERP address signed with one of KEYS; None for any other address.
    The base address is not compared, so bounces to an earlier return_path still count."""
    match = _VERP.fullmatch(address.strip())
    if match is None:
        return None
    row_id, signature = match.group(1), match.group(2).lower()
    if any(hmac.compare_digest(address_signature(row_id, key), signature) for key in keys):
        return int(row_id)
    return None


def _json(fields: list[str]) -> str:
    """`json.dumps(fields, separators=(",", ":"), ensure_ascii=False)` for a list of
    strings, written out: the encoder's set-up took half of a token's time."""
    return "[" + ",".join(map(encode_basestring, fields)) + "]"


def sign(claims: Claims, key: str) -> str:
    """The token for these claims."""
    return _token(claims.purpose, claims.customer, claims.campaign, claims.message,
                  claims.extra, key)


def _token(purpose: str, customer: str, campaign: str, message: str, extra: str,
           key: str) -> str:
    fields = [PURPOSES[purpose], customer, campaign, message]
    if extra:
        fields.append(extra)
    payload = _b64(_json(fields).encode())
    return f"{payload}.{_signature(payload, key)}"


def verify(token: str, purpose: str, keys: Sequence[str]) -> Claims:
    """The claims of a token signed with one of KEYS for PURPOSE; InvalidLink otherwise."""
    payload, _, signature = token.partition(".")
    if not payload or not signature or not payload.isascii() or not signature.isascii():
        raise InvalidLink("malformed link")
    if not any(hmac.compare_digest(_signature(payload, key), signature) for key in keys):
        raise InvalidLink("link signature does not match")
    try:
        fields = json.loads(_unb64(payload))
    except (ValueError, UnicodeDecodeError):
        raise InvalidLink("malformed link") from None
    if not isinstance(fields, list) or len(fields) not in (4, 5) or \
            not all(isinstance(f, str) for f in fields):
        raise InvalidLink("malformed link")
    if fields[0] != PURPOSES.get(purpose):
        raise InvalidLink(f"this link is not a {purpose} link")
    return Claims(purpose, fields[1], fields[2], fields[3], fields[4] if len(fields) == 5 else "")


# the URL path of each purpose under tracking.base_url (`clicks` links add `/<n>`)
PATHS = {"unsubscribe": "u", "preferences": "p", "browser": "b", "click": "c", "open": "o",
         "rating": "r", "survey": "s", "keep_subscribed": "k", "clicks": "c",
         "confirm": "confirm"}
SCORES = range(1, 6)


def link(base_url: str, claims: Claims, key: str) -> str:
    """The URL of a signed link under BASE_URL."""
    return signed_url(base_url, claims.purpose, claims.customer, claims.campaign,
                      claims.message, key, claims.extra)


def signed_url(base_url: str, purpose: str, customer: str, campaign: str, message: str,
               key: str, extra: str = "") -> str:
    """link() without a Claims object: a mail makes twenty or more of these."""
    token = _token(purpose, customer, campaign, message, extra, key)
    return f"{base_url.rstrip('/')}/{PATHS[purpose]}/{token}"


class SignedOnRead(Mapping[Any, Any]):
    """Links signed when a template first reads them, each by its own MAKE: a mail's
    `links` (all but the unsubscribe link, which the List-Unsubscribe header needs at
    once: MADE) and, inside it, `links.rating` and `links.survey`, one per score or
    answer. A token costs an HMAC, and most mails print few of them: the demo's none of
    `keep_subscribed` or the five ratings."""

    __slots__ = ("_made", "_make")

    def __init__(self, make: dict[Any, Callable[[], Any]],
                 made: dict[Any, Any] | None = None) -> None:
        self._make = make
        self._made = made if made is not None else {}

    def __getitem__(self, key: Any) -> Any:
        made = self._made.get(key)
        if made is None:
            make = self._make[key]  # KeyError for a name or score it has not
            made = self._made[key] = make()
        return made

    def __contains__(self, key: object) -> bool:
        return key in self._make

    def __iter__(self) -> Iterator[Any]:
        return iter(self._make)

    def __len__(self) -> int:
        return len(self._make)

    def __repr__(self) -> str:
        return repr(dict(self))


def recipient_links(base_url: str, *, customer: str, campaign: str, message: str,
                    key: str, survey: Sequence[int] | None = None) -> SignedOnRead:
    """`links.unsubscribe`, `links.preferences`, `links.browser`, `links.keep_subscribed`
    (the sunset mail's "keep me subscribed" page) for one mail,
    `links.rating[1]` … `links.rating[5]` (one link per score of a feedback request) and,
    given the SURVEY scale of a campaign's survey (its first question's answers: 1–5, or
    0–10 for nps), `links.survey[value]`: the survey page with that first answer chosen.
    All but the unsubscribe link are signed as they are read (SignedOnRead)."""
    def signed(purpose: str, extra: str = "") -> Callable[[], str]:
        return lambda: signed_url(base_url, purpose, customer, campaign, message, key, extra)

    def each(purpose: str, values: Sequence[int]) -> Callable[[], SignedOnRead]:
        return lambda: SignedOnRead({value: signed(purpose, str(value)) for value in values})

    make: dict[Any, Callable[[], Any]] = {
        purpose: signed(purpose)
        for purpose in ("unsubscribe", "preferences", "browser", "keep_subscribed")}
    make["rating"] = each("rating", SCORES)
    if survey is not None:
        make["survey"] = each("survey", survey)
    return SignedOnRead(make, {"unsubscribe": make["unsubscribe"]()})
