"""Import records checked and typed: customers and orders (DESIGN §5, import formats).

Pure functions: a raw record in, a typed row out, or `BadRow` with the reason a
marketer reads next to the line number.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from mailer.config.settings import Settings
from mailer.core.addresses import has_control_character, parse_address
from mailer.core.clock import iso_z, parse_local, zone
from mailer.core.errors import InvalidValue, Problem
from mailer.core.money import exponent, format_minor, to_minor
from mailer.store.models import ORDER_STATUSES

CUSTOMER_COLUMNS = ("id", "email", "first_name", "last_name", "birth_date", "timezone", "locale",
                    "country", "city", "signed_up_at", "subscribed", "tags", "referred_by")
CUSTOMER_REQUIRED = ("id", "email")
ORDER_COLUMNS = ("order_id", "customer_id", "placed_at", "status", "currency", "total", "sku",
                 "product", "category", "quantity", "price", "coupon")
ORDER_REQUIRED = ("order_id", "customer_id", "placed_at", "total")
ITEM_FIELDS = ("sku", "product", "category", "quantity", "price")
IDENTIFIERS = ("id", "referred_by", "order_id", "customer_id")  # store ids, text
MAX_COLUMNS = 500  # columns of a file, attributes of a customer
MAX_MAJOR_DIGITS = 12  # an amount is below 10**12 in major units: sums stay in int64
MAX_QUANTITY = 1_000_000_000  # fits the 32-bit quantity column

T = TypeVar("T")

_TRUE = {"true", "yes", "1", "y"}
_FALSE = {"false", "no", "0", "n"}
_LOCALE = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*$")
# What a spreadsheet writes for a number it has rounded (1.23457E+17) and for none at all.
_SCIENTIFIC = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)[eE][+-]?\d+$")
_NOT_A_NUMBER = {"nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity",
                 "-infinity"}


class BadRow(ValueError):
    """Why a record cannot be imported: one reason, or every problem a row has."""

    def __init__(self, *reasons: str) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = list(reasons)


class _Problems:
    """Every problem of one record, in the order of its columns, so a row with three
    mistakes is reported with three lines instead of being fixed and re-imported thrice."""

    def __init__(self, record: Mapping[str, Any]) -> None:
        self._column = {key: n for n, key in enumerate(record)}
        self._found: list[tuple[int, str]] = []

    def check(self, key: str, step: Callable[..., T], *args: Any) -> T | None:
        """What `step(*args)` returns, or None after noting why the field `key` is bad."""
        try:
            return step(*args)
        except BadRow as bad:
            self.add(key, *bad.reasons)
            return None

    def add(self, key: str, *reasons: str) -> None:
        where = self._column.get(key, -1)  # a missing column is named first
        self._found += [(where, reason) for reason in reasons]

    def __len__(self) -> int:
        return len(self._found)

    def raise_any(self) -> None:
        if self._found:
            raise BadRow(*(reason for _, reason in sorted(self._found, key=lambda f: f[0])))


@dataclass(frozen=True)
class Context:
    """What checking a record needs besides the record: the workspace's zone and currency."""

    tz: ZoneInfo
    currency: str
    today: date
    double_opt_in: bool = False  # consent.double_opt_in: `subscribed=pending` is allowed

    @classmethod
    def of(cls, settings: Settings, now: datetime) -> Context:
        """The checks' context for a workspace at `now`."""
        tz = zone(settings.timezone)
        return cls(tz=tz, currency=settings.store.currency, today=now.astimezone(tz).date(),
                   double_opt_in=settings.consent.double_opt_in)


# --- column names --------------------------------------------------------------------


def _distance(a: str, b: str) -> int:
    """Optimal string alignment distance: insertions, deletions, substitutions, swaps."""
    rows = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        rows[i][0] = i
    for j in range(len(b) + 1):
        rows[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            rows[i][j] = min(rows[i - 1][j] + 1, rows[i][j - 1] + 1, rows[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                rows[i][j] = min(rows[i][j], rows[i - 2][j - 2] + 1)
    return rows[-1][-1]


def misspelt(name: str, known: tuple[str, ...]) -> str | None:
    """The known column a header is a typo of: within edit distance 2 (1 for names of
    up to five letters, so that short custom columns such as `vip` are not mistaken for `id`)."""
    lowered = name.lower()
    best = min(known, key=lambda k: _distance(lowered, k))
    allowed = 2 if len(best) > 5 else 1
    distance = _distance(lowered, best)
    return best if 0 < distance <= allowed or (distance == 0 and name != best) else None


def check_header(header: list[str], kind: str, path: str) -> tuple[list[Problem], list[Problem]]:
    """Problems that stop the file (missing, duplicate, misspelt columns) and warnings."""
    known = CUSTOMER_COLUMNS if kind == "customers" else ORDER_COLUMNS
    required = CUSTOMER_REQUIRED if kind == "customers" else ORDER_REQUIRED
    errors, warnings = [], []
    if len(header) > MAX_COLUMNS:
        return [Problem(path, 1, None, f"the header has {len(header)} columns; an import reads "
                        f"at most {MAX_COLUMNS} (the known columns and custom attributes)")], []
    seen: set[str] = set()
    for name in header:
        if name in seen:
            errors.append(Problem(path, 1, None, f"column {name!r} appears twice"))
        seen.add(name)
        if name in known:
            continue
        guess = misspelt(name, known)
        if guess is not None:
            errors.append(Problem(path, 1, None, f"unknown column {name!r}: did you mean {guess}?"))
        elif not name:
            errors.append(Problem(path, 1, None, "a column has no name"))
        elif kind == "orders":
            warnings.append(Problem(path, 1, None, f"column {name!r} is not used", warning=True))
    for name in required:
        if name not in seen and not any(misspelt(h, known) == name for h in header):
            errors.append(Problem(path, 1, None, f"required column {name!r} is missing"))
    return errors, warnings


# --- values ---------------------------------------------------------------------------


def _text(record: Mapping[str, Any], key: str) -> str | None:
    """A text value, stripped; empty means cleared (None)."""
    value = record[key]
    if value is None:
        return None
    if not isinstance(value, str):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        else:
            raise BadRow(f"{key}: expected text, got {value!r}")
    if has_control_character(value):
        raise BadRow(f"{key}: contains a control character")
    return value.strip() or None


def _required(record: Mapping[str, Any], key: str) -> str:
    if key in IDENTIFIERS:
        value = _identifier(record, key)
    else:
        value = _text(record, key) if key in record else None
    if value is None:
        raise BadRow(f"{key} is missing")
    return value


def _identifier(record: Mapping[str, Any], key: str) -> str | None:
    """A store id: text, or a whole JSON number. Text that reads as a rounded or missing
    number is refused: two ids a spreadsheet rounded alike would be one customer."""
    raw = record.get(key)
    if isinstance(raw, float):
        raise BadRow(f"{key}: {raw!r} is not a whole number (write ids as strings)")
    value = _text(record, key) if key in record else None
    if value is None or not isinstance(raw, str):
        return value
    if value.lower() in _NOT_A_NUMBER:
        raise BadRow(f"{key}: {value!r} is a placeholder for a missing number, not an id")
    if _SCIENTIFIC.match(value):
        raise BadRow(f"{key}: {value!r} is a number in scientific notation, as a spreadsheet "
                     "writes a long number it has rounded: export the column as text "
                     "(or use JSON Lines)")
    return value


def _when(record: Mapping[str, Any], key: str, tz: ZoneInfo) -> datetime | None:
    value = _text(record, key)
    if value is None:
        return None
    try:
        return parse_local(value, tz)
    except InvalidValue as err:
        raise BadRow(f"{key}: {err.message}") from None


def _flag(record: Mapping[str, Any], key: str) -> bool | None:
    value = record[key]
    if isinstance(value, bool) or value is None:
        return value
    text = str(value).strip().lower()
    if not text:
        return None
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise BadRow(f"{key}: expected true or false, got {value!r}")


# --- customers ------------------------------------------------------------------------


@dataclass(frozen=True)
class CustomerRow:
    """A checked customer record. `values` holds only the columns the record carries
    (None clears one); `attributes` maps custom fields to values (None clears one)."""

    line: int
    store_id: str
    email: str
    email_key: str
    values: dict[str, Any]
    subscribed: bool | None
    attributes: dict[str, Any] = field(default_factory=dict)
    # `subscribed=pending` (or a webhook's opt-in under double opt-in): the customer
    # asked and must confirm; `subscribed` is then True
    pending: bool = False


def _birth_date(record: Mapping[str, Any], ctx: Context) -> date | None:
    value = _text(record, "birth_date")
    if value is None:
        return None
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise BadRow(f"birth_date: expected YYYY-MM-DD, got {value!r}")
    try:
        born = date.fromisoformat(value)
    except ValueError:
        raise BadRow(f"birth_date: {value} is not a date") from None
    if born > ctx.today or born.year < 1900:
        raise BadRow(f"birth_date: {value} is not a plausible birth date")
    return born


def _tags(value: Any) -> list[str] | None:
    if value is None:
        return None
    items = value.split(";") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(tag, str) for tag in items):
        raise BadRow(f"tags: expected a list of text, got {value!r}")
    if any(has_control_character(tag) for tag in items):
        raise BadRow("tags: contains a control character")
    tags = [tag.strip() for tag in items if tag.strip()]
    return tags or None


def _address(email: str) -> Any:
    try:
        return parse_address(email)
    except InvalidValue as err:
        raise BadRow(err.message) from None


def _locale(record: Mapping[str, Any]) -> str | None:
    locale = _text(record, "locale")
    if locale is not None and not _LOCALE.match(locale):
        raise BadRow(f"locale: expected a language tag like de-DE, got {locale!r}")
    return locale


def _timezone(record: Mapping[str, Any]) -> str | None:
    name = _text(record, "timezone")
    if name is not None:
        try:
            zone(name)
        except InvalidValue as err:
            raise BadRow(f"timezone: {err.message}") from None
    return name


def _typed_attributes(record: Mapping[str, Any]) -> dict[str, Any]:
    """JSON Lines: custom fields under `attributes`; any other unknown field is a mistake."""
    unknown = [k for k in record if k not in CUSTOMER_COLUMNS and k != "attributes"]
    if unknown:
        guess = misspelt(unknown[0], CUSTOMER_COLUMNS)
        hint = f"did you mean {guess}?" if guess else "custom fields go under attributes"
        raise BadRow(f"unknown field {unknown[0]!r}: {hint}")
    extra = record.get("attributes")
    if extra is not None and not isinstance(extra, dict):
        raise BadRow(f"attributes: expected an object, got {extra!r}")
    if extra is not None and len(extra) > MAX_COLUMNS:
        raise BadRow(f"attributes: {len(extra)} fields; a customer has at most {MAX_COLUMNS}")
    return dict(extra or {})


def _csv_attribute(key: str, value: Any) -> Any:
    """CSV: an unknown column is an attribute; an empty cell clears it."""
    if isinstance(value, str) and has_control_character(value):
        raise BadRow(f"{key}: contains a control character")
    cleaned = value.strip() if isinstance(value, str) else value
    return cleaned or None


def parse_customer(line: int, record: Mapping[str, Any], ctx: Context,
                   *, typed: bool) -> CustomerRow:
    """Check one customer record. `typed` records (JSON Lines) keep custom fields under
    `attributes`; CSV records turn unknown columns into attributes."""
    problems = _Problems(record)
    store_id = problems.check("id", _required, record, "id")
    email = problems.check("email", _required, record, "email")
    address = problems.check("email", _address, email) if email is not None else None
    values: dict[str, Any] = {}
    for key in ("first_name", "last_name", "city", "country"):
        if key in record:
            values[key] = problems.check(key, _text, record, key)
    if "referred_by" in record:
        values["referred_by"] = problems.check("referred_by", _identifier, record, "referred_by")
    if "locale" in record:
        values["locale"] = problems.check("locale", _locale, record)
    if "birth_date" in record:
        values["birth_date"] = problems.check("birth_date", _birth_date, record, ctx)
    if "timezone" in record:
        values["timezone"] = problems.check("timezone", _timezone, record)
    if "signed_up_at" in record:
        values["signed_up_at"] = problems.check("signed_up_at", _when, record, "signed_up_at",
                                                ctx.tz)
    if "tags" in record:
        values["tags"] = problems.check("tags", _tags, record["tags"])
    pending = _is_pending(record.get("subscribed"))
    if pending and not ctx.double_opt_in:
        problems.add("subscribed", "subscribed: pending needs `consent: {double_opt_in: "
                                   "true}` in mailer.yaml (nothing would ask them to confirm)")
    subscribed = True if pending else problems.check("subscribed", _flag, record,
                                                     "subscribed") \
        if "subscribed" in record else None
    attributes: dict[str, Any] = {}
    if typed:
        attributes = problems.check("attributes", _typed_attributes, record) or {}
    else:
        for key, value in record.items():
            if key not in CUSTOMER_COLUMNS:
                attributes[key] = problems.check(key, _csv_attribute, key, value)
    if store_id is not None and store_id == values.get("referred_by"):
        problems.add("referred_by", "referred_by: a customer cannot refer themselves")
    problems.raise_any()
    assert store_id is not None and address is not None  # else raise_any raised
    return CustomerRow(line, store_id, address.email, address.key, values, subscribed, attributes,
                       pending)


def _is_pending(value: Any) -> bool:
    """Whether a `subscribed` value is `pending` (double opt-in: asked, not confirmed)."""
    return isinstance(value, str) and value.strip().lower() == "pending"


# --- orders ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LineItem:
    line: int
    sku: str | None
    product: str | None
    category: str | None
    quantity: int
    price_minor: int | None


@dataclass(frozen=True)
class OrderRow:
    """A checked order with its lines; `lines` are the file lines it came from."""

    store_id: str
    customer_store_id: str
    placed_at: datetime
    status: str
    currency: str
    total_minor: int
    coupon: str | None
    items: tuple[LineItem, ...]
    lines: tuple[int, ...]

    def same_order(self, other: OrderRow) -> str | None:
        """Why another line of the same order disagrees with this one, if it does."""
        for name, mine, theirs in (
            ("customer_id", self.customer_store_id, other.customer_store_id),
            ("placed_at", self.placed_at, other.placed_at),
            ("status", self.status, other.status),
            ("currency", self.currency, other.currency),
            ("total", self.total_minor, other.total_minor),
            ("coupon", self.coupon, other.coupon),
        ):
            if mine != theirs:
                shown = record_value(name, theirs, other.currency)
                expected = record_value(name, mine, self.currency)
                return (f"{name} {shown} disagrees with {expected} on line {self.lines[0]} "
                        f"of order {self.store_id}")
        return None

    def with_items_of(self, other: OrderRow) -> OrderRow:
        return OrderRow(self.store_id, self.customer_store_id, self.placed_at, self.status,
                        self.currency, self.total_minor, self.coupon,
                        self.items + other.items, self.lines + other.lines)


def record_value(name: str, value: Any, currency: str) -> str:
    if name == "total":
        return format_minor(int(value), currency)
    if isinstance(value, datetime):
        return iso_z(value)
    return str(value)


def _amount(record: Mapping[str, Any], key: str, currency: str) -> int | None:
    value = record.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise BadRow(f"{key}: expected an amount like 12.34, got {value!r}")
    try:
        magnitude = Decimal(str(value).strip())
    except InvalidOperation:
        magnitude = Decimal(0)  # to_minor says what is wrong with it
    if magnitude.is_finite() and magnitude and magnitude.adjusted() >= MAX_MAJOR_DIGITS:
        # Checked before scaling: 1e400 would become a 400-digit integer no column holds.
        largest = format_minor(10 ** (MAX_MAJOR_DIGITS + exponent(currency)) - 1, currency)
        shown = str(value).strip()
        shown = shown if len(shown) <= 20 else shown[:20] + "…"
        raise BadRow(f"{key}: {shown} is too large (at most {largest} {currency})")
    try:
        minor = to_minor(value, currency)
    except InvalidValue as err:
        raise BadRow(f"{key}: {err.message}") from None
    if minor < 0:
        raise BadRow(f"{key}: {value} is negative")
    return minor


def _quantity(record: Mapping[str, Any]) -> int:
    quantity_raw = record.get("quantity")
    if quantity_raw is None or not str(quantity_raw).strip():
        return 1
    text = str(quantity_raw).strip()
    if isinstance(quantity_raw, bool) or not re.fullmatch(r"\d+", text) or not text.strip("0"):
        raise BadRow(f"quantity: expected a whole number of at least 1, got {quantity_raw!r}")
    # The length first: int() of thousands of digits is slow, then refused by Python.
    if len(text.lstrip("0")) > len(str(MAX_QUANTITY)) or int(text) > MAX_QUANTITY:
        raise BadRow(f"quantity: expected a whole number from 1 to {MAX_QUANTITY}, "
                     f"got {text[:20]!r}")
    return int(text)


def _item(line: int, record: Mapping[str, Any], currency: str,
          problems: _Problems) -> LineItem | None:
    """One order line's item; its problems go to `problems` (None if it has any)."""
    before = len(problems)
    texts = {key: problems.check(key, _text, record, key) if key in record else None
             for key in ("sku", "product", "category")}
    quantity = problems.check("quantity", _quantity, record)
    price = problems.check("price", _amount, record, "price", currency)
    if len(problems) > before or quantity is None:
        return None
    return LineItem(line=line, sku=texts["sku"], product=texts["product"],
                    category=texts["category"], quantity=quantity, price_minor=price)


def _placed_at(record: Mapping[str, Any], tz: ZoneInfo) -> datetime:
    placed_at = _when(record, "placed_at", tz) if "placed_at" in record else None
    if placed_at is None:
        raise BadRow("placed_at is missing")
    return placed_at


def _status(record: Mapping[str, Any]) -> str:
    status = (_text(record, "status") if "status" in record else None) or "paid"
    if status.lower() not in ORDER_STATUSES:
        raise BadRow(f"status: expected paid, refunded or cancelled, got {status!r}")
    return status.lower()


def _currency(record: Mapping[str, Any], default: str) -> str:
    currency = ((_text(record, "currency") if "currency" in record else None)
                or default).upper()
    if not re.fullmatch(r"[A-Z]{3}", currency):
        raise BadRow(f"currency: expected a three-letter code like EUR, got {currency!r}")
    return currency


def _total(record: Mapping[str, Any], currency: str) -> int:
    total = _amount(record, "total", currency)
    if total is None:
        raise BadRow("total is missing")
    return total


def _typed_items(line: int, record: Mapping[str, Any], currency: str) -> tuple[LineItem, ...]:
    """JSON Lines: an order's `items`; any unknown field is a mistake."""
    unknown = [k for k in record if k not in ORDER_COLUMNS and k != "items"]
    if unknown:
        guess = misspelt(unknown[0], (*ORDER_COLUMNS, "items"))
        raise BadRow(f"unknown field {unknown[0]!r}" + (f": did you mean {guess}?" if guess
                                                        else ""))
    raw_items = record.get("items") or []
    if not isinstance(raw_items, list) or not all(isinstance(i, dict) for i in raw_items):
        raise BadRow("items: expected a list of objects")
    problems = _Problems({})
    items = [_item(line, item, currency, problems) for item in raw_items]
    problems.raise_any()
    return tuple(item for item in items if item is not None)


def parse_order(line: int, record: Mapping[str, Any], ctx: Context, *, typed: bool) -> OrderRow:
    """Check one order line (CSV) or one whole order with `items` (JSON Lines)."""
    problems = _Problems(record)
    store_id = problems.check("order_id", _required, record, "order_id")
    customer = problems.check("customer_id", _required, record, "customer_id")
    placed_at = problems.check("placed_at", _placed_at, record, ctx.tz)
    status = problems.check("status", _status, record)
    currency = problems.check("currency", _currency, record, ctx.currency)
    total = problems.check("total", _total, record, currency) if currency else None
    coupon = problems.check("coupon", _text, record, "coupon") if "coupon" in record else None
    items: tuple[LineItem, ...] | None = None
    if currency is not None:
        if typed:
            items = problems.check("items", _typed_items, line, record, currency)
        else:
            item = _item(line, record, currency, problems)
            items = (item,) if item is not None else None
    problems.raise_any()
    assert store_id and customer and placed_at and status and currency and items is not None
    assert total is not None  # else raise_any raised
    return OrderRow(store_id, customer, placed_at, status, currency, total, coupon,
                    items, (line,))
