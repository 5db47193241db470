"""mailer.yaml and the environment (DESIGN §4.0)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import time, timedelta
from email.utils import parseaddr
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, field_validator

from mailer.config.specs import Spec, check
from mailer.config.yamlsrc import YamlMap, iter_keys, load_yaml
from mailer.core.addresses import parse_address
from mailer.core.clock import parse_duration, zone
from mailer.core.errors import ConfigError, InvalidValue, Problem

SETTINGS_FILE = "mailer.yaml"
DEFAULT_SMTP_URL = "smtp://127.0.0.1:1025"
DEFAULT_TRACKING_URL = "http://127.0.0.1:8080"
SECRET_KEYS = {"password", "secret", "secret_key", "api_key", "smtp_url"}


def _duration(value: object) -> timedelta:
    return value if isinstance(value, timedelta) else parse_duration(value)


Duration = Annotated[timedelta, BeforeValidator(_duration)]


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidValue(f"expected an http(s) URL like https://shop.example, got {value!r}")
    return value


@dataclass(frozen=True)
class QuietHours:
    """A span of local wall time, possibly across midnight ("21:00-08:00")."""

    start: time
    end: time

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


def parse_clock_time(text: object) -> time:
    """`09:00` -> time(9, 0); `25:00` is an error."""
    match = re.fullmatch(r"(\d{1,2}):(\d{2})", text.strip()) if isinstance(text, str) else None
    if match is None or int(match.group(1)) > 23 or int(match.group(2)) > 59:
        raise InvalidValue(f"expected a time of day like 09:00, got {text!r}")
    return time(int(match.group(1)), int(match.group(2)))


def _quiet_hours(value: object) -> QuietHours | None:
    if value is None or isinstance(value, QuietHours):
        return value
    parts = value.split("-") if isinstance(value, str) else []
    if len(parts) != 2:
        raise InvalidValue(f"expected a span of local time like 21:00-08:00, got {value!r}")
    start, end = parse_clock_time(parts[0]), parse_clock_time(parts[1])
    if start == end:
        raise InvalidValue(f"quiet hours {value!r} start and end at the same time")
    return QuietHours(start, end)


class Store(Spec):
    name: str = Field(min_length=1)
    address: str = Field(min_length=1)
    url: Annotated[str, BeforeValidator(_http_url)] | None = None
    currency: str = "EUR"
    referral_url: str | None = None

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z]{3}", value):
            raise InvalidValue(f"expected a three-letter ISO 4217 code like EUR, got {value!r}")
        return value.upper()

    @field_validator("referral_url")
    @classmethod
    def _referral(cls, value: str | None) -> str | None:
        if value is not None:
            _http_url(value)
            if "{code}" not in value:
                raise InvalidValue("must contain {code}, where the customer's referral code goes")
        return value


@lru_cache(maxsize=64)
def _address_of(text: str) -> str:
    """The address of `Name <addr>` (parsed once: senders ask for it per mail)."""
    return parseaddr(text)[1]


class Sender(Spec):
    from_: str = Field(alias="from")
    reply_to: str | None = None
    unsubscribe_mailto: str | None = None
    # The envelope sender's base (VERP): bounces go to local+<row id>-<signature>@domain.
    return_path: str | None = None

    @field_validator("from_", "reply_to", "unsubscribe_mailto")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None:
            parse_address(parseaddr(value)[1] or value)
        return value

    @field_validator("return_path")
    @classmethod
    def _return_path(cls, value: str | None) -> str | None:
        if value is None:
            return None
        plain = "<" not in value and parseaddr(value)[0] == ""
        address = parse_address(value).email if plain else ""
        if not plain or "+" in address.rsplit("@", 1)[0] or not address.isascii():
            raise InvalidValue("expected a plain ASCII address like bounces@shop.example, "
                               "without a name or a '+' (the row's tag goes after a '+'), "
                               f"got {value!r}")
        return address

    @property
    def from_address(self) -> str:
        return _address_of(self.from_)

    @property
    def unsubscribe_address(self) -> str:
        """`unsubscribe_mailto`, else unsubscribe@ the sender's domain."""
        return self.unsubscribe_mailto or "unsubscribe@" + self.from_address.rsplit("@", 1)[1]


class Cap(Spec):
    max: int = Field(ge=1)
    per: Duration


DEFAULT_CAPS = (Cap(max=1, per=timedelta(hours=24)), Cap(max=3, per=timedelta(days=7)))


class Policy(Spec):
    frequency: tuple[Cap, ...] = DEFAULT_CAPS
    quiet_hours: Annotated[QuietHours | None, BeforeValidator(_quiet_hours)] = None


class DeliverySettings(Spec):
    concurrency: int = Field(default=10, ge=1, le=1000)
    rate_per_second: float = Field(default=100, gt=0)
    retry_for: Duration = timedelta(days=2)


class Tracking(Spec):
    base_url: Annotated[str, BeforeValidator(_http_url)] = DEFAULT_TRACKING_URL
    opens: bool = True  # an open pixel in each sent mail
    clicks: bool = True  # links of the HTML part go through signed click redirects


class Dkim(Spec):
    domain: str
    selector: str
    key_file: str | None = None


class Settings(Spec):
    store: Store
    sender: Sender
    timezone: str = "UTC"
    policy: Policy = Policy()
    delivery: DeliverySettings = DeliverySettings()
    tracking: Tracking = Tracking()
    dkim: Dkim | None = None
    database: str | None = None

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        zone(value)
        return value


def _secret_problems(data: Any, path: str) -> list[Problem]:
    problems = []
    for loc, line in iter_keys(data):
        field = ".".join(str(p) for p in loc)
        if loc[-1] in SECRET_KEYS:
            problems.append(Problem(path, line, field,
                                    "secrets never live in mailer.yaml: put them in the "
                                    "environment (MAILER_SMTP_URL, MAILER_SECRET_KEY, ...)"))
    database = data.get("database") if isinstance(data, YamlMap) else None
    if isinstance(database, str) and urlsplit(database).password:
        problems.append(Problem(path, data.key_lines["database"], "database",
                                "put passwords in MAILER_DATABASE_URL"))
    return problems


def parse_settings(text: str, path: str = SETTINGS_FILE) -> tuple[Settings, list[Problem]]:
    """The settings and their warnings; every error raises one ConfigError."""
    data = load_yaml(text, path)
    if data is None:
        data = YamlMap()
    secrets = _secret_problems(data, path)
    settings, problems = check(Settings, data, path)
    problems = secrets + [p for p in problems if p.field not in {s.field for s in secrets}]
    problems.sort(key=lambda p: p.line or 0)
    if problems or settings is None:
        raise ConfigError(problems)
    warnings = []
    if "tracking" not in data or "base_url" not in (data.get("tracking") or {}):
        warnings.append(Problem(path, None, "tracking.base_url",
                                f"not set: links in mails point at {DEFAULT_TRACKING_URL}, "
                                "which only works on this machine", warning=True))
    return settings, warnings


def load_settings(root: Path) -> tuple[Settings, list[Problem]]:
    """Read ROOT/mailer.yaml; a missing or unreadable file is a ConfigError."""
    file = root / SETTINGS_FILE
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Problem(SETTINGS_FILE, None, None,
                                   f"not found in {root} (create one with `mailer init DIR`)")]
                          ) from None
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
        raise ConfigError([Problem(SETTINGS_FILE, None, None, f"cannot read: {reason}")]) from None
    return parse_settings(text)


@dataclass(frozen=True)
class Environment:
    """The MAILER_* variables (DESIGN §4.0), read once at the edge."""

    database_url: str | None = None
    smtp_url: str = DEFAULT_SMTP_URL
    secret_key: str | None = None
    old_secret_keys: tuple[str, ...] = ()
    dkim_key: str | None = None
    log_format: str = "text"
    workspace: str | None = None

    @classmethod
    def from_mapping(cls, env: Mapping[str, str]) -> Environment:
        old = env.get("MAILER_SECRET_KEY_OLD", "")
        return cls(
            database_url=env.get("MAILER_DATABASE_URL") or None,
            smtp_url=env.get("MAILER_SMTP_URL") or DEFAULT_SMTP_URL,
            secret_key=env.get("MAILER_SECRET_KEY") or None,
            old_secret_keys=tuple(k.strip() for k in old.split(",") if k.strip()),
            dkim_key=env.get("MAILER_DKIM_KEY") or None,
            log_format=env.get("MAILER_LOG_FORMAT") or "text",
            workspace=env.get("MAILER_WORKSPACE") or None,
        )
