"""Who may enter the console: password hashes, the users of MAILER_CONSOLE_USERS, signed
session cookies, form tokens and the slowing of failed logins.

Passwords are hashed with scrypt (hashlib, OpenSSL's implementation): memory-hard, in the
standard library and in every OpenSSL the project already trusts for TLS and DKIM, so no
new dependency. A hash reads `scrypt$N$r$p$SALT$KEY` (base64url, no padding).

The session cookie and the form tokens are tokens of mailer.mail.links under
MAILER_SECRET_KEY (earlier keys still verify), each with a purpose of its own
(`console_session`, `console_form`): an unsubscribe link's token, or any other, is refused
as a cookie. A session names the user, its expiry (epoch seconds) and a random nonce the
form tokens are bound to; it is not stored, so rotating the key ends every session.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from mailer.core.errors import UserError
from mailer.mail.links import Claims, InvalidLink, sign, verify

# OWASP's password storage cheat sheet: scrypt N=2^16, r=8, p=2 (64 MiB a hash), or
# N=2^17, p=1. The console checks one login at a time, so a flood of logins cannot take
# the machine's memory.
N, R, P = 2**16, 8, 2
MAX_MEMORY = 256 * 1024 * 1024  # what OpenSSL may take for a hash we read (N up to 2^17)
SESSION_HOURS = 8  # a working day; then log in again
COOKIE = "mailer_console"
LOGIN_COOKIE = "mailer_console_login"  # the login form's nonce (before any session)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, n: int = N) -> str:
    """A new scrypt hash of PASSWORD with a random salt."""
    if not password:
        raise UserError("an empty password cannot be hashed")
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=R, p=P, dklen=32,
                         maxmem=MAX_MEMORY)
    return f"scrypt${n}${R}${P}${_b64(salt)}${_b64(key)}"


def check_hash(hashed: str) -> None:
    """UserError unless HASHED is a hash `hash_password` could have written."""
    parts = hashed.split("$")
    if len(parts) != 6 or parts[0] != "scrypt" or not all(p.isdigit() for p in parts[1:4]):
        raise UserError("not a hash of `mailer console hash-password` (scrypt$N$r$p$salt$key)")
    n, r, p = (int(x) for x in parts[1:4])
    if n < 2**14 or n > 2**17 or n & (n - 1) or not 1 <= r <= 16 or not 1 <= p <= 4:
        raise UserError(f"scrypt parameters N={n} r={r} p={p} are out of range")
    try:
        _unb64(parts[4]), _unb64(parts[5])
    except ValueError:
        raise UserError("the salt or key of the hash is not base64url") from None


def password_matches(password: str, hashed: str) -> bool:
    """Whether PASSWORD is the one HASHED was made of (constant-time compare)."""
    _, n, r, p, salt, key = hashed.split("$")
    found = hashlib.scrypt(password.encode("utf-8"), salt=_unb64(salt), n=int(n), r=int(r),
                           p=int(p), dklen=len(_unb64(key)), maxmem=MAX_MEMORY)
    return hmac.compare_digest(found, _unb64(key))


# A hash to check a password against when the name is unknown: the answer takes as long
# as for a known name, so timing does not tell which names exist.
_DUMMY = "scrypt$65536$8$2$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"


def parse_users(text: str) -> dict[str, str]:
    """MAILER_CONSOLE_USERS (`name:hash` pairs split by whitespace) as name -> hash;
    UserError naming the pair that is wrong."""
    users: dict[str, str] = {}
    for number, pair in enumerate(text.split(), start=1):
        name, colon, hashed = pair.partition(":")
        if not colon or not name or not hashed:
            raise UserError(f"MAILER_CONSOLE_USERS: pair {number} is not name:hash")
        if not name.isprintable() or len(name) > 64:
            raise UserError(f"MAILER_CONSOLE_USERS: pair {number}: a user name is at most "
                            "64 printable characters")
        try:
            check_hash(hashed)
        except UserError as err:
            raise UserError(f"MAILER_CONSOLE_USERS: pair {number} ({name}): {err}") from None
        if name in users:
            raise UserError(f"MAILER_CONSOLE_USERS: user {name!r} is given twice")
        users[name] = hashed
    return users


def login(users: dict[str, str], name: str, password: str) -> bool:
    """Whether NAME may enter with PASSWORD; as slow for an unknown name as a known one."""
    hashed = users.get(name)
    matches = password_matches(password, hashed or _DUMMY)
    return hashed is not None and matches


@dataclass(frozen=True)
class Session:
    user: str
    expires: int  # epoch seconds
    nonce: str  # binds the form tokens to this session


class Keys:
    """The secret key and the earlier ones: sessions and form tokens signed and read."""

    def __init__(self, keys: Sequence[str], *, hours: float = SESSION_HOURS) -> None:
        self.keys = tuple(keys)
        self.seconds = int(hours * 3600)

    def new_session(self, user: str, now: float | None = None) -> tuple[Session, str]:
        at = int(time.time() if now is None else now)
        found = Session(user, at + self.seconds, secrets.token_urlsafe(16))
        token = sign(Claims("console_session", user, str(found.expires), found.nonce),
                     self.keys[0])
        return found, token

    def session(self, token: str | None, now: float | None = None) -> Session | None:
        """The session of a cookie; None for none, a forged, expired or other-purpose one."""
        if not token or len(token) > 1024:
            return None
        try:
            claims = verify(token, "console_session", self.keys)
        except InvalidLink:
            return None
        if not claims.campaign.isdigit() or not claims.message:
            return None
        expires = int(claims.campaign)
        if expires <= (time.time() if now is None else now):
            return None
        return Session(claims.customer, expires, claims.message)

    def form_token(self, nonce: str) -> str:
        """The CSRF token of the forms of the session (or login form) with NONCE."""
        return sign(Claims("console_form", "", "", nonce), self.keys[0])

    def form_ok(self, token: str | None, nonce: str | None) -> bool:
        if not token or not nonce or len(token) > 1024:
            return False
        try:
            claims = verify(token, "console_form", self.keys)
        except InvalidLink:
            return False
        return hmac.compare_digest(claims.message.encode(), nonce.encode())


@dataclass
class Throttle:
    """Failed logins slowed: each failure from an address doubles the wait of its next
    answer (from BASE seconds, at most CAP), forgotten after FORGET seconds quiet."""

    base: float = 1.0
    cap: float = 30.0
    forget: float = 900.0
    _failures: dict[str, tuple[int, float]] = field(default_factory=dict)

    def delay(self, address: str, now: float) -> float:
        count, last = self._failures.get(address, (0, now))
        if now - last > self.forget:
            count = 0
        return 0.0 if count == 0 else min(self.base * 2 ** (count - 1), self.cap)

    def failed(self, address: str, now: float) -> int:
        count, last = self._failures.get(address, (0, now))
        count = 1 if now - last > self.forget else count + 1
        self._failures[address] = (count, now)
        if len(self._failures) > 10_000:  # a spread-out flood: memory stays bounded
            oldest = min(self._failures, key=lambda key: self._failures[key][1])
            del self._failures[oldest]
        return count

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)
