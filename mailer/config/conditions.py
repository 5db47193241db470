"""The segment language (docs/segments.md): YAML trees parsed into typed, frozen conditions.

A segment file holds a `description` and one tree of `all:` / `any:` / `not:`
over conditions. Parsing reports every problem with its line and dotted field
(`segments/vip.yaml:4: all.1.orders.at_leest: unknown key (did you mean at_least?)`),
never just the first. The tables after the parser (ALLOWED_KEYS, REQUIRED_KEYS,
BARE, ONE_OF) are the language's rules, which `mailer schema` also prints, with
each condition's and key's meaning (CONDITION_DOCS, KEY_DOCS).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Union

from mailer.config.settings import STAGE_NAMES
from mailer.config.yamlsrc import YamlList, YamlMap, flow
from mailer.core.clock import parse_duration
from mailer.core.errors import InvalidValue, Problem
from mailer.core.suggest import did_you_mean

PURCHASE = ("orders", "spent", "average_order")
DATES = ("first_order", "last_order", "signed_up")
TEXTS = ("country", "locale", "city", "email_domain")
COUNTS = ("age", "referrals")
PREDICTED = ("p_alive", "predicted_clv")  # from the latest `mailer predict`
CHURN_RISKS = ("low", "medium", "high")
CONDITIONS = (*PURCHASE, *DATES, "bought", "stage", "churn_risk", *PREDICTED, *TEXTS, "tags",
              *COUNTS, "subscribed", "birthday", "attribute", "in_segment")
COMBINATORS = ("all", "any", "not")
COMPARISONS = ("eq", "in", "at_least", "at_most")
WINDOW_KEYS = ("within", "since", "during")
DURING = ("this_month", "last_month", "this_year", "last_year")
DATE_TESTS = ("more_than_ago", "less_than_ago", "before", "after")
BOUGHT_WHAT = ("category", "sku", "product")
# Families of conditions that share their keys, for the reference and its examples.
FAMILIES: dict[str, tuple[str, ...]] = {
    "purchase": PURCHASE, "dates": DATES, "bought": ("bought",), "stage": ("stage",),
    "churn_risk": ("churn_risk",), "predictions": PREDICTED, "texts": TEXTS,
    "tags": ("tags",), "counts": COUNTS, "subscribed": ("subscribed",),
    "birthday": ("birthday",), "attribute": ("attribute",), "in_segment": ("in_segment",),
}
# A bare value instead of a mapping: `orders: 0` is {eq: 0}, `country: [DE, AT]` is
# {in: [DE, AT]}, `tags: vip` is {contains: vip}, `stage: commitment` is {eq: commitment}.
BARE = {**{kind: "eq/in" for kind in (*PURCHASE, "stage", "churn_risk", *TEXTS, *COUNTS)},
        "tags": "contains"}
ONE_OF = (WINDOW_KEYS, BOUGHT_WHAT)  # at most one key of each group in a condition

# Limits that keep every segment one query the databases accept and plan quickly
# (SQLite's parser overflows near 100 nested parentheses and refuses an expression more
# than 1,000 deep; a long OR chain is that deep). `in:` lists have no limit of their own:
# they go to the database as one parameter (mailer.segments.compiler.INLINE_VALUES).
MAX_NESTING = 10  # levels of all/any/not, in_segment inlined
MAX_ITEMS = 100  # conditions in one all:/any: list
MAX_CONDITIONS = 500  # conditions in a segment, in_segment inlined
MAX_NUMBER = Decimal(10) ** 15  # counts and amounts (SQLite integers stop at 2^63)
MAX_AGE = 150
MAX_SPAN = timedelta(days=36_600)  # windows and date tests: about a hundred years
MAX_EACH = 100  # `in:` values of conditions that need one test per value (average_order)


@dataclass(frozen=True)
class Compare:
    """One comparison: `eq`, `in` (value is a tuple), `at_least`, `at_most` (inclusive)."""

    op: str
    value: Any


@dataclass(frozen=True)
class Window:
    """Which orders a purchase condition counts: `within` a duration, `since` a date,
    or `during` a calendar period."""

    kind: str
    value: Any


@dataclass(frozen=True)
class DateTest:
    op: str  # more_than_ago | less_than_ago | before | after
    value: Any  # timedelta or date


@dataclass(frozen=True)
class Condition:
    kind: str
    line: int
    text: str  # the condition as the marketer wrote it, for the funnel
    compares: tuple[Compare, ...] = ()
    window: Window | None = None
    dates: tuple[DateTest, ...] = ()
    what: tuple[str, str] | None = None  # bought: (category|sku|product, value)
    name: str | None = None  # attribute name, or the segment of in_segment
    flag: bool | None = None  # subscribed
    span: timedelta | None = None  # birthday within_next


@dataclass(frozen=True)
class All:
    items: tuple[Node, ...]
    line: int


@dataclass(frozen=True)
class AnyOf:
    items: tuple[Node, ...]
    line: int


@dataclass(frozen=True)
class Not:
    item: Node
    line: int


Node = Union[Condition, All, AnyOf, Not]  # noqa: UP007 - a runtime alias for dataclass fields


@dataclass(frozen=True)
class SegmentSpec:
    name: str
    path: str
    description: str
    root: Node


@dataclass(frozen=True)
class Parsed:
    """A segment file parsed: the spec (None if it has problems), the problems, and the
    segments it names in in_segment (known even when the file has other problems)."""

    name: str
    path: str
    spec: SegmentSpec | None
    problems: list[Problem]
    references: list[tuple[str, int]]


class _Parser:
    def __init__(self, path: str) -> None:
        self.path = path
        self.depth = 0  # levels of all/any/not around the node being parsed
        self.problems: list[Problem] = []
        self.references: list[tuple[str, int]] = []  # in_segment names, kept on failure too

    def problem(self, line: int | None, field: str, message: str) -> None:
        self.problems.append(Problem(self.path, line, field, message))

    # --- tree ----------------------------------------------------------------------

    def node(self, data: Any, field: str, line: int) -> Node | None:
        if not isinstance(data, dict) or len(data) != 1:
            keys = ", ".join(str(k) for k in data) if isinstance(data, dict) else None
            self.problem(getattr(data, "line", line), field,
                         "expected one condition or all/any/not per item"
                         + (f", got {keys}" if keys else f", got {flow(data)!r}"))
            return None
        key, value = next(iter(data.items()))
        key_line = data.key_lines.get(key, line) if isinstance(data, YamlMap) else line
        here = f"{field}.{key}" if field else str(key)
        if key in COMBINATORS and self.depth >= MAX_NESTING:
            self.problem(key_line, here, f"nested deeper than {MAX_NESTING} levels of "
                                         "all/any/not; flatten it or split it into segments")
            return None
        if key in ("all", "any"):
            return self.group(key, value, here, key_line)
        if key == "not":
            self.depth += 1
            try:
                inner = self.group("all", value, here, key_line) if isinstance(value, list) \
                    else self.node(value, here, key_line)
            finally:
                self.depth -= 1
            return None if inner is None else Not(inner, key_line)
        if key not in CONDITIONS:
            self.problem(key_line, here, f"unknown condition {key!r}"
                         + did_you_mean(str(key), CONDITIONS + COMBINATORS))
            return None
        return self.condition(str(key), value, here, key_line)

    def group(self, key: str, value: Any, field: str, line: int) -> Node | None:
        if not isinstance(value, list) or not value:
            self.problem(line, field, "expected a list of conditions")
            return None
        if len(value) > MAX_ITEMS:
            self.problem(line, field, f"at most {MAX_ITEMS} conditions in one list, got "
                                      f"{len(value)} (for many values of one condition, "
                                      "use in:)")
            return None
        lines = value.item_lines if isinstance(value, YamlList) else [line] * len(value)
        self.depth += 1
        try:
            items = [self.node(item, f"{field}.{index}", lines[index])
                     for index, item in enumerate(value)]
        finally:
            self.depth -= 1
        if any(item is None for item in items):
            return None
        kept = tuple(item for item in items if item is not None)
        return All(kept, line) if key == "all" else AnyOf(kept, line)

    # --- conditions -------------------------------------------------------------------

    def condition(self, kind: str, value: Any, field: str, line: int) -> Condition | None:
        text = f"{kind}: {flow(value)}"
        before = len(self.problems)
        fields: dict[str, Any] = {}
        if kind in ("subscribed",):
            if not isinstance(value, bool):
                self.problem(line, field, f"expected true or false, got {flow(value)!r}")
            else:
                fields["flag"] = value
        elif kind == "in_segment":
            if not isinstance(value, str) or not value:
                self.problem(line, field, f"expected a segment name, got {flow(value)!r}")
            else:
                fields["name"] = value
                self.references.append((value, line))
        else:
            options = value if isinstance(value, dict) else None
            if options is None:
                if BARE.get(kind) == "eq/in":
                    options = {"in" if isinstance(value, list) else "eq": value}
                elif BARE.get(kind) == "contains":
                    options = {"contains": value}
                else:
                    self.problem(line, field, f"expected a mapping like {_EXAMPLES[kind]}, "
                                              f"got {flow(value)!r}")
                    return None
            self.options(kind, options, field, line, fields)
        if len(self.problems) > before:
            return None
        return Condition(kind=kind, line=line, text=text, **fields)

    def options(self, kind: str, options: dict[Any, Any], field: str, line: int,
                fields: dict[str, Any]) -> None:
        allowed = ALLOWED_KEYS[kind]
        compares: list[Compare] = []
        dates: list[DateTest] = []
        for key, raw in options.items():
            at = options.key_lines.get(key, line) if isinstance(options, YamlMap) else line
            here = f"{field}.{key}"
            if key not in allowed:
                self.problem(at, here, "unknown key" + did_you_mean(
                    str(key), allowed, cutoff=0.5,
                    otherwise=f"; expected one of {', '.join(allowed)}"))
                continue
            try:
                if key in COMPARISONS:
                    compares.append(Compare(key, _comparison_value(kind, key, raw)))
                elif key in WINDOW_KEYS:
                    if "window" in fields:
                        raise InvalidValue("give one of within, since or during")
                    fields["window"] = Window(key, _window_value(key, raw))
                elif key in DATE_TESTS:
                    dates.append(DateTest(key, _date_test_value(key, raw)))
                elif key in BOUGHT_WHAT:
                    if "what" in fields:
                        raise InvalidValue("give one of category, sku or product")
                    fields["what"] = (key, _text(raw))
                elif key == "contains":
                    fields["compares"] = (Compare("in", _texts(raw)),)
                elif key == "within_next":
                    span = parse_duration(raw)
                    if span < timedelta(days=1) or span > timedelta(days=366):
                        raise InvalidValue("expected whole days from 1d to 366d")
                    fields["span"] = span
                elif key == "name":
                    fields["name"] = _text(raw)
            except InvalidValue as err:
                self.problem(at, here, err.message)
        if compares:
            fields["compares"] = tuple(compares)
        if dates:
            fields["dates"] = tuple(dates)
        for required, message in REQUIRED_KEYS.get(kind, ()):
            if not any(key in options for key in required):
                self.problem(line, field, message)


_EXAMPLES = {
    "first_order": "{more_than_ago: 60d}", "last_order": "{more_than_ago: 60d}",
    "signed_up": "{less_than_ago: 30d}", "bought": "{category: shoes, within: 90d}",
    "birthday": "{within_next: 7d}", "attribute": "{name: tier, eq: gold}",
    "p_alive": "{at_most: 0.3}", "predicted_clv": "{at_least: 500}",
}
ALLOWED_KEYS: dict[str, tuple[str, ...]] = {
    **{kind: (*COMPARISONS, *WINDOW_KEYS) for kind in PURCHASE},
    **{kind: DATE_TESTS for kind in DATES},
    "bought": (*BOUGHT_WHAT, *WINDOW_KEYS, "at_least", "at_most", "eq"),
    "stage": ("eq", "in"),
    "churn_risk": ("eq", "in"),
    **{kind: ("at_least", "at_most") for kind in PREDICTED},
    **{kind: ("eq", "in") for kind in TEXTS},
    "tags": ("contains",),
    **{kind: COMPARISONS for kind in COUNTS},
    "birthday": ("within_next",),
    "attribute": ("name", *COMPARISONS),
}
# Each condition's groups of keys of which at least one must be given, with the message.
REQUIRED_KEYS: dict[str, tuple[tuple[tuple[str, ...], str], ...]] = {
    **{kind: ((COMPARISONS, "give a comparison: eq, in, at_least or at_most"),)
       for kind in (*PURCHASE, *COUNTS)},
    **{kind: ((DATE_TESTS, "give more_than_ago, less_than_ago, before or after"),)
       for kind in DATES},
    "bought": ((BOUGHT_WHAT, "give category, sku or product"),),
    "stage": ((("eq", "in"), "give eq or in"),),
    "churn_risk": ((("eq", "in"), "give eq or in"),),
    **{kind: ((("at_least", "at_most"), "give at_least or at_most"),) for kind in PREDICTED},
    **{kind: ((("eq", "in"), "give eq or in"),) for kind in TEXTS},
    "tags": ((("contains",), "give contains"),),
    "birthday": ((("within_next",), "give within_next, like 7d"),),
    "attribute": ((("name",), "give the attribute's name"),
                  (COMPARISONS, "give a comparison: eq, in, at_least or at_most")),
}

# What each condition means, with an example, for the reference (docs/reference.md).
CONDITION_DOCS: dict[str, tuple[str, str]] = {
    "orders": ("Paid orders placed (in the window, if one is given).",
               "orders: {at_least: 3, within: 365d}"),
    "spent": ("The sum of paid order totals in `store.currency` (in the window), compared "
              "exactly in minor units.", "spent: {at_least: 400, during: this_year}"),
    "average_order": ("`spent` divided by the orders in `store.currency`; a customer "
                      "without orders matches none.", "average_order: {at_least: 50}"),
    "first_order": ("When the first paid order was placed; a customer without orders "
                    "matches none.", "first_order: {less_than_ago: 30d}"),
    "last_order": ("When the latest paid order was placed; a customer without orders "
                   "matches none.", "last_order: {more_than_ago: 60d}"),
    "signed_up": ("When the customer signed up.", "signed_up: {less_than_ago: 30d}"),
    "bought": ("Paid orders with a line of this `category`, `sku` or `product` (at least "
               "one unless compared; orders are counted, not units).",
               "bought: {category: coffee, at_least: 2, within: 90d}"),
    "stage": ("The relationship stage as of now (docs/customers.md): `awareness`, "
              "`exploration`, `expansion`, `commitment` or `termination`, by the rules of "
              "`stages:` in mailer.yaml.", "stage: {in: [expansion, commitment]}"),
    "churn_risk": ("From the latest `mailer predict` (docs/customers.md): `low` when `p_alive` "
                   "is at least 2/3, `high` below 1/3, else `medium`; a customer without a "
                   "prediction matches none.", "churn_risk: {in: [medium, high]}"),
    "p_alive": ("The probability from the latest `mailer predict` that the customer is still "
                "a customer, from 0 to 1; a customer without a prediction matches none.",
                "p_alive: {at_most: 0.3}"),
    "predicted_clv": ("The predicted value of the next 365 days' orders in `store.currency` "
                      "(latest `mailer predict`), in major units like `spent`; a customer "
                      "without a prediction matches none.", "predicted_clv: {at_least: 500}"),
    "country": ("The customer's country, case-insensitive.", "country: {in: [DE, AT]}"),
    "locale": ("The customer's locale, case-insensitive.", "locale: de-DE"),
    "city": ("The customer's city, case-insensitive (`MÜNCHEN` finds München).",
             "city: {in: [Berlin, Hamburg]}"),
    "email_domain": ("The domain of the address, in its Unicode form.",
                     "email_domain: staff.shop.example"),
    "tags": ("Has at least one of the tags, case-insensitive.", "tags: {contains: vip}"),
    "age": ("Whole years in the workspace zone (29 February counts on 28 February).",
            "age: {at_least: 18, at_most: 30}"),
    "referrals": ("How many customers they referred.", "referrals: {at_least: 1}"),
    "subscribed": ("`true`: the consent is `subscribed`; `false`: any other consent.",
                   "subscribed: true"),
    "birthday": ("The next birthday falls in [today, today + within_next), across the "
                 "new year.", "birthday: {within_next: 7d}"),
    "attribute": ("A custom attribute from the import: numbers compare as numbers, other "
                  "values as text; `at_least`/`at_most` skip values that are not numbers.",
                  "attribute: {name: tier, in: [gold, silver]}"),
    "in_segment": ("The members of another segment (its file stem); cycles are errors.",
                   "in_segment: test-accounts"),
}
# What each key inside a condition means.
KEY_DOCS: dict[str, str] = {
    "eq": "Equal to the value.",
    "in": "Equal to one of the listed values.",
    "at_least": "At least the value (inclusive).",
    "at_most": "At most the value (inclusive).",
    "within": f"Orders placed in [now − D, now], D up to {MAX_SPAN.days}d.",
    "since": "Orders placed from that day, 00:00 in the workspace zone.",
    "during": "Orders in a calendar period of the workspace zone: `this_month`, "
              "`last_month`, `this_year` or `last_year`.",
    "more_than_ago": f"Before now − D, D up to {MAX_SPAN.days}d.",
    "less_than_ago": f"At or after now − D, D up to {MAX_SPAN.days}d.",
    "before": "Before that day, 00:00 in the workspace zone.",
    "after": "From the day after, 00:00 in the workspace zone.",
    "category": "Order lines of this category, case-insensitive.",
    "sku": "Order lines of this SKU, case-insensitive.",
    "product": "Order lines of this product, case-insensitive.",
    "contains": "One tag or a list of tags: the customer has at least one of them.",
    "within_next": "A duration from 1d to 366d.",
    "name": "The attribute's name.",
}


def _text(raw: Any) -> str:
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)) or str(raw).strip() == "":
        raise InvalidValue(f"expected text, got {flow(raw)!r}")
    return str(raw).strip()


def _texts(raw: Any) -> tuple[str, ...]:
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise InvalidValue("expected at least one value")
    return tuple(_text(item) for item in items)


def _number(raw: Any, *, whole: bool) -> Decimal:
    wanted = "a whole number" if whole else "a number"
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise InvalidValue(f"expected {wanted}, got {flow(raw)!r}")
    try:
        number = Decimal(str(raw).strip())
    except InvalidOperation:
        raise InvalidValue(f"expected {wanted}, got {flow(raw)!r}") from None
    if not number.is_finite() or number < 0 or (whole and number != number.to_integral_value()):
        raise InvalidValue(f"expected {wanted} of at least 0, got {flow(raw)!r}")
    if number > MAX_NUMBER:
        raise InvalidValue(f"expected {wanted} of at most 10^15, got {flow(raw)!r}")
    return number


def _comparison_value(kind: str, op: str, raw: Any) -> Any:
    """Counts are whole numbers, money is a Decimal in major units, text is text."""
    if op == "in":
        if not isinstance(raw, list) or not raw:
            raise InvalidValue(f"expected a list, got {flow(raw)!r}")
        if kind == "average_order" and len(raw) > MAX_EACH:
            raise InvalidValue(f"at most {MAX_EACH} values, got {len(raw)}")
        return tuple(_comparison_value(kind, "eq", item) for item in raw)
    if kind == "age":
        age = int(_number(raw, whole=True))
        if age > MAX_AGE:
            raise InvalidValue(f"expected an age from 0 to {MAX_AGE}, got {flow(raw)!r}")
        return age
    if kind in ("orders", "bought", *COUNTS):
        return int(_number(raw, whole=True))
    if kind in ("spent", "average_order"):
        return _number(raw, whole=False)
    if kind in TEXTS:
        return _text(raw)
    if kind == "predicted_clv":
        return _number(raw, whole=False)
    if kind == "p_alive":
        probability = _number(raw, whole=False)
        if probability > 1:
            raise InvalidValue(f"expected a probability from 0 to 1, got {flow(raw)!r}")
        return probability
    if kind == "churn_risk":
        if raw not in CHURN_RISKS:
            raise InvalidValue(f"expected a churn risk: {', '.join(CHURN_RISKS)}, got "
                               f"{flow(raw)!r}" + did_you_mean(str(raw), CHURN_RISKS))
        return str(raw)
    if kind == "stage":
        if raw not in STAGE_NAMES:
            raise InvalidValue(f"expected a stage: {', '.join(STAGE_NAMES)}, got {flow(raw)!r}"
                               + did_you_mean(str(raw), STAGE_NAMES))
        return str(raw)
    # attribute: numbers compare as numbers, anything else as text
    if op in ("at_least", "at_most"):
        return _number(raw, whole=False) if not isinstance(raw, (int, float)) else Decimal(
            str(raw))
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, (int, float)):
        return Decimal(str(raw))
    return _text(raw)


def _span(raw: Any) -> timedelta:
    """A duration that `now` minus it is a date (a million days back is year -800)."""
    span = parse_duration(raw)
    if span > MAX_SPAN:
        raise InvalidValue(f"expected at most {MAX_SPAN.days}d, got {flow(raw)!r}")
    return span


def _window_value(key: str, raw: Any) -> Any:
    if key == "within":
        return _span(raw)
    if key == "since":
        return _date(raw)
    if raw not in DURING:
        raise InvalidValue(f"expected one of {', '.join(DURING)}, got {flow(raw)!r}"
                           + did_you_mean(str(raw), DURING))
    return raw


def _date(raw: Any) -> date:
    if isinstance(raw, datetime):
        day = raw.date()
    elif isinstance(raw, date):
        day = raw
    else:
        try:
            day = date.fromisoformat(str(raw))
        except ValueError:
            raise InvalidValue(f"expected a date like 2026-01-31, got {flow(raw)!r}") from None
    if not 1900 <= day.year <= 2999:  # midnight of year 1 in Berlin is before year 1 in UTC
        raise InvalidValue(f"expected a date from 1900 to 2999, got {flow(raw)!r}")
    return day


def _date_test_value(key: str, raw: Any) -> Any:
    return _span(raw) if key.endswith("_ago") else _date(raw)


def parse_segment(name: str, path: str, data: Any) -> Parsed:
    """A segment file's spec, or every problem in it."""
    parser = _Parser(path)
    if not isinstance(data, dict):
        parser.problem(getattr(data, "line", 1), "",
                       "expected a mapping with description and one of all, any, not")
        return Parsed(name, path, None, parser.problems, parser.references)
    description = data.get("description", "")
    if not isinstance(description, str):
        parser.problem(data.key_lines.get("description") if isinstance(data, YamlMap) else 1,
                       "description", "expected text")
    tree = {k: v for k, v in data.items() if k != "description"}
    if not tree:
        parser.problem(getattr(data, "line", 1), "",
                       "a segment needs one of all, any, not or a condition")
        return Parsed(name, path, None, parser.problems, parser.references)
    if len(tree) > 1:
        parser.problem(getattr(data, "line", 1), "",
                       f"expected one tree under all, any or not, got {', '.join(map(str, tree))}"
                       ": put them under all:")
        return Parsed(name, path, None, parser.problems, parser.references)
    rooted = YamlMap(tree)
    rooted.line = getattr(data, "line", 1)
    rooted.key_lines = {k: data.key_lines[k] for k in tree} if isinstance(data, YamlMap) else {}
    root = parser.node(rooted, "", rooted.line)
    if root is None or parser.problems:
        return Parsed(name, path, None, parser.problems, parser.references)
    spec = SegmentSpec(name, path, description if isinstance(description, str) else "", root)
    return Parsed(name, path, spec, [], parser.references)


