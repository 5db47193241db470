"""mailer.yaml and the environment (docs/reference.md#maileryaml).

Every key carries its meaning (`Field(description=...)`) and every value type that
YAML writes as text its JSON Schema (`WithJsonSchema`), so `mailer schema` describes
what users write, never the Python type it becomes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import time, timedelta
from email.utils import parseaddr
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, WithJsonSchema, field_validator

from mailer.config.specs import Spec, check
from mailer.config.yamlsrc import YamlMap, iter_keys, load_yaml
from mailer.core.addresses import parse_address
from mailer.core.clock import format_duration, parse_duration, zone
from mailer.core.errors import ConfigError, InvalidValue, Problem
from mailer.core.suggest import did_you_mean

SETTINGS_FILE = "mailer.yaml"
DEFAULT_SMTP_URL = "smtp://127.0.0.1:1025"
DEFAULT_TRACKING_URL = "http://127.0.0.1:8080"
SECRET_KEYS = {"password", "secret", "secret_key", "api_key", "smtp_url"}


def _duration(value: object) -> timedelta:
    return value if isinstance(value, timedelta) else parse_duration(value)


JsonSchema = dict[str, Any]

# How YAML writes these values, for `mailer schema` (the validators word the errors).
DURATION_SCHEMA: JsonSchema = {
    "type": "string", "title": "duration", "pattern": r"^\s*\d+\s*[smhdw]\s*$",
    "examples": ["7d", "12h"]}
Duration = Annotated[timedelta, BeforeValidator(_duration), WithJsonSchema(DURATION_SCHEMA)]
CLOCK_PATTERN = r"\s*([01]?[0-9]|2[0-3]):[0-5][0-9]\s*"  # 09:00, hours 0-23
CLOCK_SCHEMA: JsonSchema = {
    "type": "string", "title": "time of day", "pattern": f"^{CLOCK_PATTERN}$",
    "examples": ["09:00"]}
QUIET_HOURS_SCHEMA: JsonSchema = {
    "type": "string", "title": "span of local time",
    "pattern": f"^{CLOCK_PATTERN}-{CLOCK_PATTERN}$", "examples": ["21:00-08:00"]}
HTTP_URL_SCHEMA: JsonSchema = {
    "type": "string", "title": "http(s) URL", "pattern": "^https?://[^/?#]",
    "examples": ["https://shop.example"]}


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


HttpUrl = Annotated[str, BeforeValidator(_http_url), WithJsonSchema(HTTP_URL_SCHEMA)]
MOST_PROCESSES = 64


def _processes(value: object) -> int | str:
    """`delivery.processes`: a whole number from 1 to 64, or `auto`."""
    if value == "auto":
        return "auto"
    if isinstance(value, int) and not isinstance(value, bool) and \
            1 <= value <= MOST_PROCESSES:
        return value
    raise ValueError(f"should be a whole number from 1 to {MOST_PROCESSES}, or auto "
                     f"(one per core, at most 4); got {value!r}")


PROCESSES_SCHEMA: JsonSchema = {"anyOf": [
    {"type": "integer", "minimum": 1, "maximum": MOST_PROCESSES}, {"const": "auto"}]}
Processes = Annotated[int | Literal["auto"], BeforeValidator(_processes),
                      WithJsonSchema(PROCESSES_SCHEMA)]


_LOCALE_TAG = r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*$"


class Store(Spec):
    name: str = Field(min_length=1, description="The store's name, in mails and templates "
                                                "as `store.name`.")
    address: str = Field(min_length=1, description="The postal address the footer of every "
                                                   "marketing mail carries.")
    url: HttpUrl | None = Field(None, description="The shop's web address, for templates as "
                                                  "`store.url`.")
    # Patterns as schema only: the validators below word the errors.
    currency: str = Field("EUR", json_schema_extra={"pattern": "^[A-Za-z]{3}$"}, description=(
        "ISO 4217 code: `spent` and `average_order` count orders in this currency only."))
    locale: str = Field("en", json_schema_extra={"pattern": _LOCALE_TAG}, description=(
        "The language tag money, dates and numbers are written in (`| money`, `| date`) "
        "for a customer without a `locale` Babel knows (one it does not know means en)."))
    referral_url: str | None = Field(
        None, json_schema_extra={"anyOf": [{"type": "string", "pattern": r"^https?://.*\{code\}"},
                                           {"type": "null"}]},
        description="The link a referral code goes into, at `{code}`: `referral.url` in "
                    "templates.")

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z]{3}", value):
            raise InvalidValue(f"expected a three-letter ISO 4217 code like EUR, got {value!r}")
        return value.upper()

    @field_validator("locale")
    @classmethod
    def _locale(cls, value: str) -> str:
        if not re.fullmatch(_LOCALE_TAG, value):
            raise InvalidValue(f"expected a language tag like en, de-DE or pt-BR, got {value!r}")
        return value

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
    from_: str = Field(alias="from", description=(
        "The From header, an address with an optional display name: "
        "`Pine & Co <hello@shop.example>`."))
    reply_to: str | None = Field(None, description="Where replies go, if not to `from`.")
    unsubscribe_mailto: str | None = Field(None, description=(
        "The mailto address of the List-Unsubscribe header; default unsubscribe@ the "
        "domain of `from`."))
    # The envelope sender's base (VERP): bounces go to local+<row id>-<signature>@domain.
    return_path: str | None = Field(None, description=(
        "The base of the envelope sender (VERP): a bounce comes back to "
        "local+ROW-SIGNATURE@domain, so `mailer bounces` knows the mail; a plain ASCII "
        "address without a name or a `+`. Unset: the envelope sender is `from`."))

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
    max: int = Field(ge=1, description=(
        "The most mails one customer gets within `per`: of every campaign, or of the "
        "campaigns with `topic` when it is given."))
    per: Duration = Field(description=(
        "The span the cap looks back over; a mail planned exactly this long ago no longer "
        "counts."))
    topic: str | None = Field(None, min_length=1, description=(
        "Count only the mails of campaigns with this `topic:` (`{max: 1, per: 7d, topic: "
        "promotions}`: at most 1 promotions mail per 7 days, whatever other topics send); "
        "without it the cap counts every campaign. A topic no campaign has is a `validate` "
        "warning."))

    def label(self) -> str:
        """The cap in words, as plan and forecast name it: `1 per 7d (promotions)`.
        Whole days stay days (`7d`, not `1w`): caps are written and read in days."""
        days, rest = divmod(int(self.per.total_seconds()), 86400)
        span = f"{days}d" if days and not rest else format_duration(self.per)
        text = f"{self.max} per {span}"
        return f"{text} ({self.topic})" if self.topic else text


DEFAULT_CAPS = (Cap(max=1, per=timedelta(hours=24)), Cap(max=3, per=timedelta(days=7)))


class Sunset(Spec):
    after: Duration = Field(timedelta(days=180), description=(
        "A customer whose last sign of life (a human click, a paid order, an opt-in or "
        "resubscribe, the sign-up, a \"keep me subscribed\" POST; never an open) is "
        "before now − this is silent (one exactly this long ago is not)."))
    min_mails: int = Field(5, ge=1, le=10_000, description=(
        "A silent customer is sunset once at least this many marketing mails (ledger rows "
        "`sent` or `unknown`, of any campaign) were sent after their last sign of life."))

    @field_validator("after")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0) or value > timedelta(days=36_600):
            raise InvalidValue("expected a duration from 1s to 36600d")
        return value


class Policy(Spec):
    frequency: tuple[Cap, ...] = Field(DEFAULT_CAPS, description=(
        "Caps on the mails one customer gets; `[]` for none."))
    quiet_hours: Annotated[QuietHours | None, BeforeValidator(_quiet_hours),
                           WithJsonSchema({"anyOf": [QUIET_HOURS_SCHEMA, {"type": "null"}]})
                           ] = Field(None, description=(
        "In each customer's local time (the workspace's for customers without a zone), no "
        "mail is released: it waits for the end, and is not planned if that is after its "
        "expiry."))
    sunset: Sunset | None = Field(None, description=(
        "Long-silent customers get no marketing mail (reason `sunset`) except from "
        "`trigger: sunset` campaigns (the re-permission mail); unset: off."))


def policy_in_words(policy: Policy) -> list[str]:
    """The store's rules of restraint as sentences (`validate --explain`): each cap, the
    quiet hours and the sunset rule."""
    lines = []
    for cap in policy.frequency:
        mails = "mail" if cap.max == 1 else "mails"
        of = f"of topic {cap.topic}" if cap.topic else "of any campaign"
        lines.append(f"cap {cap.label()}: at most {cap.max} {mails} {of} to one customer "
                     f"in any {spelled(cap.per)}")
    if not policy.frequency:
        lines.append("no frequency cap: a customer may get every mail that is due")
    if policy.quiet_hours is not None:
        lines.append(f"quiet hours {policy.quiet_hours}: no mail leaves in those hours of "
                     "the customer's own zone; it waits for their end")
    if policy.sunset is not None:
        lines.append(f"sunset: a customer with no sign of life for "
                     f"{spelled(policy.sunset.after)} and {policy.sunset.min_mails} or more "
                     "marketing mails since gets only the trigger: sunset campaign's mail")
    return lines


def spelled(span: timedelta) -> str:
    """A duration in words, in its largest whole unit: `7 days`, `24 hours`, `90 minutes`."""
    seconds = int(span.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0 and seconds >= size:
            count = seconds // size
            if unit == "day" and count == 1:
                continue  # "in any 24 hours" reads better than "in any 1 day"
            if unit == "day" or count < 48 or unit == "minute":
                return f"{count} {unit}{'' if count == 1 else 's'}"
    return f"{seconds} second{'' if seconds == 1 else 's'}"


class DeliverySettings(Spec):
    concurrency: int = Field(default=10, ge=1, le=1000, description=(
        "Mails one sender has in flight over SMTP at the same time."))
    rate_per_second: float = Field(default=100, gt=0, description=(
        "At most this many mails in any one second, across every sender of the database."))
    retry_for: Duration = Field(timedelta(days=2), description=(
        "Temporary failures are retried for this long after the first attempt, or until "
        "the mail's expiry if that comes first."))
    processes: Processes = Field("auto", description=(
        "Processes a sender (`send`, `run`, `worker`) delivers with: it sends and writes "
        "the ledger, the others render its mails; `auto` is one per core, at most 4."))


class Tracking(Spec):
    base_url: HttpUrl = Field(DEFAULT_TRACKING_URL, description=(
        "The public address of `mailer serve` that unsubscribe, preference, tracking and "
        "rating links point at; https except on this machine."))
    opens: bool = Field(True, description="An open pixel in each sent mail.")
    clicks: bool = Field(True, description=(
        "Links of the HTML part go through signed click redirects."))


class Dkim(Spec):
    domain: str = Field(description="The signing domain (`d=`).")
    selector: str = Field(description=(
        "The selector (`s=`): the public key is published at SELECTOR._domainkey.DOMAIN."))
    key_file: str | None = Field(None, description=(
        "The PEM private key, relative to the workspace; MAILER_DKIM_KEY (the PEM itself) "
        "is used instead when set."))


# The relationship stages, in the order a customer usually passes through them
# (mailer.insight.stages holds the rules; segments and templates name them).
STAGE_NAMES = ("awareness", "exploration", "expansion", "commitment", "termination")
MAX_COMMITTED_ORDERS = 100  # mail contexts read each customer's latest orders up to this many


class StageSettings(Spec):
    lapsed_after: Duration = Field(timedelta(days=180), description=(
        "A customer whose latest paid order was placed more than this long before now is in "
        "`termination` (an order exactly this long ago still counts)."))
    committed_orders: int = Field(4, ge=2, le=MAX_COMMITTED_ORDERS, description=(
        "At least this many paid orders within `committed_within` put a customer in "
        "`commitment`."))
    committed_within: Duration = Field(timedelta(days=365), description=(
        "The span `committed_orders` are counted over: orders placed in [now − this, now]."))

    @field_validator("lapsed_after", "committed_within")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0) or value > timedelta(days=36_600):
            raise InvalidValue("expected a duration from 1s to 36600d")
        return value


def _review_cron(value: object) -> str:
    """The review's schedule, checked as a campaign's cron line is."""
    from mailer.config.campaign import _cron  # same subpackage; campaign imports this module

    return _cron(value)


REVIEW_CRON_SCHEMA: JsonSchema = {
    "type": "string", "title": "cron line", "examples": ["0 8 1 * *"],
    "description": "Five crontab(5) fields (minute hour day-of-month month day-of-week), "
                   "in the workspace time zone."}


class Review(Spec):
    send_to: str = Field(description=(
        "Who gets the monthly review (`mailer review`) as a notice, an address."))
    schedule: Annotated[str, BeforeValidator(_review_cron), WithJsonSchema(REVIEW_CRON_SCHEMA)
                        ] = Field("0 8 1 * *", description=(
        "When `mailer run` sends the previous month's review: a cron line in the workspace "
        "zone; once per month whatever the restarts (its key is review:YYYY-MM)."))

    @field_validator("send_to")
    @classmethod
    def _address(cls, value: str) -> str:
        return parse_address(value).email


class HolidaySettings(Spec):
    country: str = Field(json_schema_extra={"pattern": "^[A-Za-z]{2}$", "examples": ["DE"]},
                         description=(
        "The ISO 3166 alpha-2 country whose public holidays a `holiday` campaign uses for "
        "customers without a country of their own (or with one the holidays package does "
        "not know)."))

    @field_validator("country")
    @classmethod
    def _country(cls, value: str) -> str:
        from mailer.core.holidays import COUNTRIES, country_code

        code = country_code(value)
        if code is None:
            raise InvalidValue(f"expected a country code the holidays package knows, like "
                               f"DE, got {value!r}" + did_you_mean(value.upper(),
                                                                    sorted(COUNTRIES)))
        return code


class ConsentSettings(Spec):
    double_opt_in: bool = Field(False, description=(
        "A customer who opts in by webhook (or by import with `subscribed=pending`) is "
        "`pending` until they confirm through the signed `/confirm/TOKEN` link of a "
        "confirmation notice (one reminder 3 days later); pending customers get no "
        "marketing mail (reason `pending`). docs/events.md#double-opt-in."))


class Settings(Spec):
    store: Store = Field(description="The shop the mails come from.")
    sender: Sender = Field(description="The addresses mails are sent from and answered to.")
    timezone: str = Field("UTC", json_schema_extra={"examples": ["Europe/Berlin"]},
                          description=(
        "IANA time zone of customers without one, and of times written without an offset."))
    policy: Policy = Field(Policy(), description="Rules every campaign obeys, per customer.")
    delivery: DeliverySettings = Field(DeliverySettings(), description="How mails are sent.")
    tracking: Tracking = Field(Tracking(), description=(
        "The links in mails: where they point and what they track."))
    dkim: Dkim | None = Field(None, description="Sign every mail with DKIM; unset: unsigned.")
    stages: StageSettings = Field(StageSettings(), description=(
        "The rules of the relationship stages (docs/customers.md): when a customer has "
        "lapsed and what makes one committed."))
    review: Review | None = Field(None, description=(
        "Send the previous month's review (`mailer review`) as a notice on a schedule; "
        "unset: only on demand."))
    consent: ConsentSettings = Field(ConsentSettings(), description=(
        "How consent is gathered: `double_opt_in` asks new subscribers to confirm."))
    holidays: HolidaySettings | None = Field(None, description=(
        "The workspace's holiday calendar (`trigger: holiday`); unset: customers without a "
        "country have none."))
    database: str | None = Field(None, description=(
        "The database URL without a password (a SQLite path is relative to the workspace); "
        "MAILER_DATABASE_URL wins. Unset: mailer.db in the workspace."))

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


# The variables Environment reads, with their meaning (for docs/reference.md).
ENVIRONMENT_DOCS = {
    "MAILER_DATABASE_URL": "The database URL (postgresql://... or sqlite:///...); wins over "
                           "`database:`.",
    "MAILER_SMTP_URL": f"Where mails go (default {DEFAULT_SMTP_URL}, where `mailer sink` "
                       "listens): `smtp://` is plain unless `?starttls=true`, `smtps://` is "
                       "implicit TLS, `user:pass@` logs in.",
    "MAILER_SECRET_KEY": "Signs links and tokens; `send`, `run`, `worker` and `serve` need it.",
    "MAILER_SECRET_KEY_OLD": "Comma-separated earlier keys whose links are still accepted.",
    "MAILER_DKIM_KEY": "The DKIM private key (PEM), instead of `dkim.key_file`.",
    "MAILER_LOG_FORMAT": "`json` for one JSON object per log line; default `text`.",
    "MAILER_WORKSPACE": "The workspace folder when `--workspace` is not given.",
    "MAILER_SHOPIFY_SECRET": "Checks `X-Shopify-Hmac-Sha256` of `POST /hooks/shopify` "
                             "(docs/events.md); unset, that path answers 401.",
    "MAILER_WOOCOMMERCE_SECRET": "Checks `X-WC-Webhook-Signature` of "
                                 "`POST /hooks/woocommerce`.",
    "MAILER_EVENTS_SECRET": "Checks `X-Mailer-Signature: sha256=…` of `POST /hooks/custom` "
                            "(never the link key).",
    "MAILER_CONSOLE_USERS": "Who may log in to `mailer console`: whitespace-separated "
                            "`name:hash` pairs, each hash from `mailer console hash-password`.",
}


@dataclass(frozen=True)
class Environment:
    """The MAILER_* variables (docs/reference.md#environment), read once at the edge."""

    database_url: str | None = None
    smtp_url: str = DEFAULT_SMTP_URL
    secret_key: str | None = None
    old_secret_keys: tuple[str, ...] = ()
    dkim_key: str | None = None
    log_format: str = "text"
    workspace: str | None = None
    # webhook signing secrets by source (docs/events.md): shopify, woocommerce, custom
    hook_secrets: tuple[tuple[str, str], ...] = ()
    console_users: str = ""  # MAILER_CONSOLE_USERS, parsed by mailer.web.console.auth

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
            hook_secrets=tuple((source, env[name]) for source, name in (
                ("shopify", "MAILER_SHOPIFY_SECRET"),
                ("woocommerce", "MAILER_WOOCOMMERCE_SECRET"),
                ("custom", "MAILER_EVENTS_SECRET")) if env.get(name)),
            console_users=env.get("MAILER_CONSOLE_USERS", ""),
        )
