"""Segments compiled to one SQL query each (DESIGN §4.1), run in the database.

The compiler turns a condition tree into SQLAlchemy Core: one conditional
aggregation over orders grouped by customer and, only when `bought` is used,
one over order lines; lines are never joined into order totals (a fan-out would
multiply `spent`). Every leaf is two-valued (a missing value is false, never
NULL), so `not:` is the complement over all customers. `in_segment` is inlined;
a cycle is an error. Pure: `now`, the zone and the currency are passed in.

Text matches compare folded shadow columns with literals folded by the same
Python function (mailer.core.folding.fold; the shadows are written by mailer.store.models.folded),
never the database's lower(): SQLite's folds ASCII only and PostgreSQL's follows
the collation, so the two would pick different audiences.
"""

from __future__ import annotations

import calendar
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from functools import cache
from typing import Any, cast, overload
from zoneinfo import ZoneInfo

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Float,
    Select,
    Table,
    and_,
    bindparam,
    case,
    distinct,
    exists,
    false,
    func,
    literal,
    literal_column,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy import Text as TextType
from sqlalchemy import cast as sa_cast
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.elements import True_
from sqlalchemy.sql.expression import Subquery

from mailer.config.conditions import (
    MAX_CONDITIONS,
    MAX_NESTING,
    All,
    AnyOf,
    Compare,
    Condition,
    Node,
    Not,
    Parsed,
    SegmentSpec,
    Window,
)
from mailer.config.settings import StageSettings
from mailer.core.clock import localize
from mailer.core.errors import Problem
from mailer.core.folding import fold, fold_domain
from mailer.core.money import exponent
from mailer.core.suggest import did_you_mean
from mailer.store.events import last_signs_query
from mailer.store.feeds.apply import ordered_since_checkout
from mailer.store.insight.stages import AWARENESS, stage_case
from mailer.store.ledger import mailed_after, nth_latest_sent_query
from mailer.store.models import (
    Checkout,
    Customer,
    Delivery,
    Order,
    OrderLine,
    Prediction,
    StockAlert,
)

CUSTOMERS = cast(Table, Customer.__table__)
ORDERS = cast(Table, Order.__table__)
LINES = cast(Table, OrderLine.__table__)
PREDICTIONS = cast(Table, Prediction.__table__)  # one row per customer: joined, no fan-out
PREDICTED = ("churn_risk", "p_alive", "predicted_clv")

# Lists longer than this go to the database as one JSON array parameter, read by
# jsonb_array_elements_text on PostgreSQL and json_each on SQLite: PostgreSQL takes at
# most 65,535 bound parameters a statement and SQLite 32,766, and a long IN list costs
# more to plan than to run. (JSON, not a PostgreSQL array: psycopg took 0.4 s to send
# an array of 70,000 texts, the same values as JSON 0.02 s.)
INLINE_VALUES = 100
DEFAULT_STAGES = StageSettings()  # mailer.yaml's defaults


@dataclass(frozen=True)
class Scope:
    """What a segment is evaluated against: now (UTC), the workspace zone and currency,
    and the rules of the relationship stages."""

    now: datetime
    tz: ZoneInfo
    currency: str
    dialect: str  # "sqlite" or "postgresql": tags and non-ASCII case folding differ
    stages: StageSettings = DEFAULT_STAGES

    @property
    def today(self) -> date:
        return self.now.astimezone(self.tz).date()

    def midnight(self, day: date) -> datetime:
        """00:00 of DAY in the workspace zone, as UTC."""
        return localize(datetime.combine(day, datetime.min.time()), self.tz)


def check_references(parsed: list[Parsed]) -> list[Problem]:
    """Unknown segments in in_segment, cycles, and segments over the size limits once
    their in_segment references are inlined, as problems."""
    names = {p.name for p in parsed}
    graph = {p.name: [name for name, _ in p.references] for p in parsed}
    problems = []
    cyclic: set[str] = set()
    for segment in parsed:
        for name, line in segment.references:
            if name not in names:
                problems.append(Problem(segment.path, line, "in_segment",
                                        f"unknown segment {name!r}"
                                        + did_you_mean(name, sorted(names))))
        cycle = _cycle(segment.name, graph)
        if cycle is not None:
            cyclic.add(segment.name)
            line = next(ln for name, ln in segment.references if name == cycle[1])
            problems.append(Problem(segment.path, line, "in_segment",
                                    "segments refer to each other in a cycle: "
                                    + " -> ".join(cycle)))
    specs = {p.name: p.spec for p in parsed if p.spec is not None}
    sizes: dict[str, tuple[int, int]] = {}
    for segment in parsed:
        if segment.spec is None or _reaches(segment.name, graph, cyclic):
            continue
        depth, conditions = _inlined_size(segment.spec.root, specs, sizes)
        where = getattr(segment.spec.root, "line", 1)
        field, inlined = ("in_segment", "with in_segment inlined, ") if segment.references \
            else ("", "")
        if depth > MAX_NESTING:  # only references can do this: the parser counts its own
            problems.append(Problem(segment.path, where, field,
                                    f"{inlined}it nests {depth} levels of all/any/not "
                                    f"(at most {MAX_NESTING})"))
        if conditions > MAX_CONDITIONS:
            problems.append(Problem(segment.path, where, field,
                                    f"{inlined}it holds {conditions:,} conditions "
                                    f"(at most {MAX_CONDITIONS})"))
    return problems


def _cycle(start: str, graph: dict[str, list[str]]) -> list[str] | None:
    """A path START -> ... -> START through in_segment references, or None. Each segment is
    visited once (following every path of a diamond-shaped workspace is exponential)."""
    parents: dict[str, str] = {}
    stack = [(start, iter(graph.get(start, ())))]
    while stack:
        name, children = stack[-1]
        child = next(children, None)
        if child is None:
            stack.pop()
        elif child == start:
            path = [name]
            while path[-1] != start:
                path.append(parents[path[-1]])
            return [*reversed(path), start]
        elif child not in parents and child in graph:
            parents[child] = name
            stack.append((child, iter(graph[child])))
    return None


def _reaches(start: str, graph: dict[str, list[str]], targets: set[str]) -> bool:
    """Whether START is in TARGETS or refers to one of them, directly or not."""
    seen, todo = {start}, [start]
    while todo:
        name = todo.pop()
        if name in targets:
            return True
        fresh = [n for n in graph.get(name, ()) if n not in seen]
        seen.update(fresh)
        todo.extend(fresh)
    return False


def _inlined_size(node: Node, specs: dict[str, SegmentSpec],
                  sizes: dict[str, tuple[int, int]]) -> tuple[int, int]:
    """(levels of all/any/not, conditions) of NODE with in_segment inlined (acyclic)."""
    if isinstance(node, (All, AnyOf)):
        parts = [_inlined_size(item, specs, sizes) for item in node.items]
        return 1 + max(d for d, _ in parts), sum(n for _, n in parts)
    if isinstance(node, Not):
        depth, count = _inlined_size(node.item, specs, sizes)
        return depth + 1, count
    if node.kind != "in_segment" or node.name not in specs:
        return 0, 1
    name = node.name
    if name not in sizes:
        sizes[name] = _inlined_size(specs[name].root, specs, sizes)
    return sizes[name]


Build = Callable[["_Refs"], ColumnElement[bool]]


@dataclass
class _Refs:
    orders: Subquery | None = None
    lines: Subquery | None = None
    referrals: Subquery | None = None


@dataclass
class _Compiler:
    specs: dict[str, SegmentSpec]
    scope: Scope
    order_aggs: dict[str, ColumnElement[Any]] = field(default_factory=dict)
    line_aggs: dict[str, ColumnElement[Any]] = field(default_factory=dict)
    line_labels: dict[tuple[str, str, str], str] = field(default_factory=dict)
    # The rows each aggregate reads: a row no aggregate reads is filtered out before
    # grouping (a customer left with no rows gets NULL, read as 0, the same answer).
    order_rows: list[ColumnElement[bool]] = field(default_factory=list)
    line_rows: list[ColumnElement[bool]] = field(default_factory=list)
    referrals: bool = False
    predictions: bool = False
    # Aggregations every member must have rows in (a top-level condition that 0 fails):
    # the member query joins those with an inner join.
    required: set[str] = field(default_factory=set)

    # --- the tree ------------------------------------------------------------------

    def node(self, node: Node, stack: tuple[str, ...], top: bool = False) -> Build:
        """Compile a node; `top` while every enclosing node is an all: (a conjunction)."""
        if isinstance(node, All):
            parts = [self.node(item, stack, top) for item in node.items]
            return lambda refs: and_(*(part(refs) for part in parts))
        if isinstance(node, AnyOf):
            parts = [self.node(item, stack) for item in node.items]
            return lambda refs: or_(*(part(refs) for part in parts))
        if isinstance(node, Not):
            inner = self.node(node.item, stack)
            return lambda refs: not_(inner(refs))
        return self.condition(node, stack, top)

    def condition(self, c: Condition, stack: tuple[str, ...], top: bool) -> Build:
        kind = c.kind
        if kind == "in_segment":
            assert c.name is not None
            if c.name in stack:
                raise ValueError("segment cycle: " + " -> ".join((*stack, c.name)))
            return self.node(self.specs[c.name].root, (*stack, c.name), top)
        presence = _presence(c.compares or (Compare("at_least", 1),))
        if kind in ("orders", "bought", "referrals") and presence is not None:
            # "none" or "any" is a semi-join on an index, not an aggregation of every row.
            # It requires no aggregation: those read only their own conditions' rows, and
            # a buyer with none of them is still a member when the rest holds.
            found = self.exists(c)
            return lambda refs: found if presence else not_(found)
        if top and _needs_rows(c):
            # C reads its own rows, so every member has rows in this aggregation.
            self.required.add("lines" if kind == "bought" else "orders")
        if kind == "orders":
            label = self.order_agg("n", c.window)
            return lambda refs: _compare(_agg(refs.orders, label), c.compares, self.among)
        if kind == "spent":
            label = self.order_agg("s", c.window)
            places = exponent(self.scope.currency)
            return lambda refs: _compare_money(_agg(refs.orders, label), c.compares, places,
                                                self.among)
        if kind == "average_order":
            total, count = self.order_agg("s", c.window), self.order_agg("nc", c.window)
            places = exponent(self.scope.currency)
            return lambda refs: _compare_average(_agg(refs.orders, total),
                                                 _agg(refs.orders, count), c.compares, places)
        if kind == "stage":
            return self.stage(c)
        if kind in PREDICTED:
            return self.predicted(c, top)
        if kind in ("first_order", "last_order"):
            label = self.order_agg("first" if kind == "first_order" else "last", None)
            return lambda refs: self.dates(_column(refs.orders, label), c)
        if kind == "signed_up":
            return lambda refs: self.dates(CUSTOMERS.c.signed_up_at, c)
        if kind == "bought":
            label = self.line_agg(c)
            compares = c.compares or (Compare("at_least", 1),)
            return lambda refs: _compare(_agg(refs.lines, label), compares, self.among)
        if kind in ("country", "locale", "city"):
            column = CUSTOMERS.c[f"{kind}_folded"]
            return lambda refs: self.text(column, c.compares)
        if kind == "email_domain":
            # email_key is folded with the Unicode form of its domain: fold the same way.
            domains = [fold_domain(str(v)) for v in _values(c.compares)]
            return lambda refs: self.among(self.domain(), domains)
        if kind == "tags":
            return lambda refs: self.tags(_values(c.compares))
        if kind == "age":
            return lambda refs: self.age(c.compares)
        if kind == "subscribed":
            is_subscribed = CUSTOMERS.c.consent == "subscribed"
            return lambda refs: is_subscribed if c.flag else not_(is_subscribed)
        if kind == "birthday":
            assert c.span is not None
            days = birthday_days(self.scope.today, c.span.days)
            return lambda refs: _known(CUSTOMERS.c.birth_md, CUSTOMERS.c.birth_md.in_(days))
        if kind == "referrals":
            self.referrals = True
            return lambda refs: _compare(_agg(refs.referrals, "referrals"), c.compares,
                                         self.among)
        if kind == "attribute":
            assert c.name is not None
            return lambda refs: self.attribute(c.name or "", c.compares)
        raise AssertionError(f"no compiler for {kind}")

    def stage(self, c: Condition) -> Build:
        """The stage from the orders aggregation's count, latest time and count within
        committed_within (mailer.store.insight.stages.stage_case: the rules in SQL)."""
        rules = self.scope.stages
        orders, last = self.order_agg("n", None), self.order_agg("last", None)
        recent = self.order_agg("n", Window("within", rules.committed_within))
        return lambda refs: self.among(
            stage_case(_agg(refs.orders, orders), _column(refs.orders, last),
                       _agg(refs.orders, recent), now=self.scope.now, rules=rules),
            _values(c.compares))

    def predicted(self, c: Condition, top: bool) -> Build:
        """A column of the customer's stored prediction (LEFT JOINed): a customer without
        one matches none of these conditions."""
        self.predictions = True
        if top:  # every member has a prediction
            self.required.add("predictions")
        if c.kind == "churn_risk":
            risk = PREDICTIONS.c.churn_risk
            return lambda refs: _known(risk, self.among(risk, _values(c.compares)))
        if c.kind == "p_alive":
            alive = PREDICTIONS.c.p_alive
            compares = tuple(Compare(k.op, float(k.value)) for k in c.compares)
            return lambda refs: _known(alive, _compare(alive, compares, self.among))
        clv = PREDICTIONS.c.predicted_clv_365d
        places = exponent(self.scope.currency)
        return lambda refs: _known(clv, _compare_money(clv, c.compares, places, self.among))

    # --- aggregations --------------------------------------------------------------------

    def exists(self, c: Condition) -> ColumnElement[bool]:
        """Whether the customer has any paid order (with a matching line) or any referral."""
        if c.kind == "referrals":
            referred = CUSTOMERS.alias("referred")
            return exists().where(referred.c.referred_by == CUSTOMERS.c.store_id)
        _, inside = self.window(c.window)
        found = (exists().where(ORDERS.c.customer_id == CUSTOMERS.c.id,
                                ORDERS.c.status == "paid", ORDERS.c.placed_at <= self.scope.now,
                                inside))
        if c.kind == "bought":
            assert c.what is not None
            what, value = c.what
            found = found.where(LINES.c.order_id == ORDERS.c.id,
                                LINES.c[f"{what}_folded"] == fold(value))
        return found

    def window(self, window: Window | None) -> tuple[str, ColumnElement[bool]]:
        """A key naming the window, and its condition on orders.placed_at."""
        placed = ORDERS.c.placed_at
        if window is None:
            return "all", true()
        if window.kind == "within":
            span = cast(timedelta, window.value)
            return f"w{int(span.total_seconds())}", placed >= self.scope.now - span
        if window.kind == "since":
            return f"s{window.value:%Y%m%d}", placed >= self.scope.midnight(window.value)
        start, end = calendar_window(window.value, self.scope.today)
        lower = placed >= self.scope.midnight(start)
        if end is None:
            return str(window.value), lower
        return str(window.value), and_(lower, placed < self.scope.midnight(end))

    def order_agg(self, metric: str, window: Window | None) -> str:
        key, inside = self.window(window)
        label = f"{metric}_{key}"
        if label in self.order_aggs:
            return label
        in_currency = and_(ORDERS.c.currency == self.scope.currency, inside)
        aggregate: ColumnElement[Any]
        if metric == "n":  # orders count in any currency
            aggregate = func.sum(case((inside, 1), else_=0))
        elif metric == "nc":  # orders in the store currency (the average's divisor)
            aggregate = func.sum(case((in_currency, 1), else_=0))
        elif metric == "s":  # money in the store currency only, in minor units
            aggregate = func.sum(case((in_currency, ORDERS.c.total_minor), else_=0))
        elif metric == "first":
            aggregate = func.min(ORDERS.c.placed_at)
        else:
            aggregate = func.max(ORDERS.c.placed_at)
        self.order_aggs[label] = aggregate.label(label)
        self.order_rows.append({"n": inside, "nc": in_currency, "s": in_currency}.get(
            metric, true()))
        return label

    def line_agg(self, c: Condition) -> str:
        assert c.what is not None
        what, value = c.what
        key, inside = self.window(c.window)
        wanted = (what, fold(value), key)
        if wanted in self.line_labels:
            return self.line_labels[wanted]
        label = self.line_labels[wanted] = f"b{len(self.line_aggs)}_{key}"
        match = LINES.c[f"{what}_folded"] == fold(value)
        self.line_aggs[label] = func.count(distinct(case((and_(match, inside),
                                                          LINES.c.order_id)))).label(label)
        self.line_rows.append(and_(match, inside))
        return label

    # --- leaves -------------------------------------------------------------------------------

    def among(self, column: ColumnElement[Any], values: list[Any]) -> ColumnElement[bool]:
        """column IN values, for lists of any length (see INLINE_VALUES)."""
        unique = list(dict.fromkeys(values))
        if len(unique) == 1:
            return cast(ColumnElement[bool], column == unique[0])
        if len(unique) <= INLINE_VALUES:
            return column.in_(unique)
        listed_json = bindparam(None, json.dumps(unique), type_=TextType())
        if self.scope.dialect == "postgresql":
            whole = all(isinstance(v, int) and not isinstance(v, bool) for v in unique)
            listed = func.jsonb_array_elements_text(sa_cast(listed_json, JSONB)) \
                .table_valued("value")
            value = sa_cast(listed.c.value, BigInteger() if whole else TextType())
            return column.in_(select(value))
        listed = func.json_each(listed_json).table_valued("value")
        return column.in_(select(listed.c.value))

    def domain(self) -> ColumnElement[Any]:
        """The domain of email_key (an address has one @: email-validator refuses quoted
        local parts)."""
        key = CUSTOMERS.c.email_key
        if self.scope.dialect == "postgresql":
            return func.split_part(key, "@", 2)
        return func.substr(key, func.instr(key, "@") + 1)

    def text(self, folded_column: ColumnElement[Any], compares: tuple[Compare, ...]) -> \
            ColumnElement[bool]:
        folded = [fold(str(v)) for v in _values(compares)]
        return _known(folded_column, self.among(folded_column, folded))

    def tags(self, values: list[Any]) -> ColumnElement[bool]:
        folded = [fold(str(v)) for v in values]
        tags = CUSTOMERS.c.tags_folded
        if self.scope.dialect == "postgresql":
            element = func.jsonb_array_elements_text(tags).table_valued("value")
        else:
            element = func.json_each(tags).table_valued("value")
        return _known(tags, exists(select(literal_column("1"))
                                   .select_from(element)
                                   .where(self.among(element.c.value, folded))))

    def age(self, compares: tuple[Compare, ...]) -> ColumnElement[bool]:
        born = CUSTOMERS.c.birth_date
        tests: list[ColumnElement[bool]] = []
        for compare in compares:
            ages = compare.value if compare.op == "in" else (compare.value,)
            if compare.op == "at_least":
                tests.append(born <= age_cutoff(self.scope.today, int(compare.value)))
            elif compare.op == "at_most":
                tests.append(born > age_cutoff(self.scope.today, int(compare.value) + 1))
            else:
                tests.append(or_(*(and_(born <= age_cutoff(self.scope.today, int(a)),
                                        born > age_cutoff(self.scope.today, int(a) + 1))
                                   for a in ages)))
        return _known(born, and_(*tests))

    def dates(self, moment: ColumnElement[Any], c: Condition) -> ColumnElement[bool]:
        tests: list[ColumnElement[bool]] = []
        for test in c.dates:
            if test.op == "more_than_ago":
                tests.append(moment < self.scope.now - test.value)
            elif test.op == "less_than_ago":
                tests.append(moment >= self.scope.now - test.value)
            elif test.op == "before":
                tests.append(moment < self.scope.midnight(test.value))
            else:
                tests.append(moment >= self.scope.midnight(test.value + timedelta(days=1)))
        return _known(moment, and_(*tests))

    def attribute(self, name: str, compares: tuple[Compare, ...]) -> ColumnElement[bool]:
        raw = CUSTOMERS.c.attributes[name].as_string()
        folded_raw = CUSTOMERS.c.attributes_folded[name].as_string()
        tests: list[ColumnElement[bool]] = []
        for compare in compares:
            if compare.op in ("at_least", "at_most"):
                number = self._number(raw)
                limit = float(compare.value)
                tests.append(_known(number, number >= limit if compare.op == "at_least"
                                    else number <= limit))
                continue
            texts = [fold(text) for v in _values((compare,)) for text in _attribute_texts(v)]
            tests.append(_known(folded_raw, self.among(folded_raw, texts)))
        return and_(*tests)

    def _number(self, raw: ColumnElement[Any]) -> ColumnElement[Any]:
        """The attribute as a number, NULL when it is not one (never a cast error):
        PostgreSQL checks the text first; SQLite calls mailer_number() (see mailer.store.db)."""
        if self.scope.dialect == "postgresql":
            return case((raw.regexp_match(r"^\s*-?[0-9]+(\.[0-9]+)?\s*$"), raw.cast(Float)),
                        else_=None)
        return func.mailer_number(raw)


def _attribute_texts(value: Any) -> list[str]:
    """The texts an attribute value may read as: a JSON true reads 'true' on PostgreSQL
    and '1' on SQLite."""
    if isinstance(value, bool):
        return ["true", "1"] if value else ["false", "0"]
    if isinstance(value, Decimal):
        whole = value == value.to_integral_value()
        return [format(value.normalize(), "f") if whole else str(value)]
    return [str(value)]


def _needs_rows(c: Condition) -> bool:
    """Whether a customer without orders (or matching lines) can never meet C."""
    if c.kind in ("average_order", "first_order", "last_order"):
        return True
    if c.kind == "stage":  # every stage but awareness has a paid order
        return AWARENESS not in _values(c.compares)
    if c.kind not in ("orders", "spent", "bought"):
        return False
    compares = c.compares or (Compare("at_least", 1),)
    return any(
        (compare.op == "eq" and compare.value != 0)
        or (compare.op == "in" and 0 not in compare.value)
        or (compare.op == "at_least" and compare.value > 0)
        for compare in compares)


def _presence(compares: tuple[Compare, ...]) -> bool | None:
    """True for "at least one", False for "none", None for any other count test."""
    if len(compares) != 1:
        return None
    op, value = compares[0].op, compares[0].value
    if (op, value) in (("eq", 0), ("at_most", 0)):
        return False
    if (op, value) == ("at_least", 1):
        return True
    return None


def _any_row(conditions: list[ColumnElement[bool]]) -> ColumnElement[bool]:
    """Rows that at least one aggregate reads (true when one of them reads every row)."""
    if not conditions or any(isinstance(c, True_) for c in conditions):
        return true()
    return or_(*conditions)


def _values(compares: tuple[Compare, ...]) -> list[Any]:
    values: list[Any] = []
    for compare in compares:
        values.extend(compare.value if compare.op == "in" else (compare.value,))
    return values


def _known(value: ColumnElement[Any], test: ColumnElement[bool]) -> ColumnElement[bool]:
    """A test that is false, never NULL, when the value is missing."""
    return and_(value.is_not(None), test)


def _column(sub: Subquery | None, label: str) -> ColumnElement[Any]:
    assert sub is not None
    return sub.c[label]


def _agg(sub: Subquery | None, label: str) -> ColumnElement[Any]:
    """A count or sum: zero for customers without rows (a customer without orders has 0)."""
    return func.coalesce(_column(sub, label), 0)


Among = Callable[[ColumnElement[Any], list[Any]], ColumnElement[bool]]


def _compare(value: ColumnElement[Any], compares: tuple[Compare, ...],
             among: Among) -> ColumnElement[bool]:
    tests: list[ColumnElement[bool]] = []
    for compare in compares:
        if compare.op == "eq":
            tests.append(value == compare.value)
        elif compare.op == "in":
            tests.append(among(value, list(compare.value)))
        elif compare.op == "at_least":
            tests.append(value >= compare.value)
        else:
            tests.append(value <= compare.value)
    return and_(*tests)


def _compare_money(total: ColumnElement[Any], compares: tuple[Compare, ...],
                   places: int, among: Among) -> ColumnElement[bool]:
    """Compare a sum of minor units with amounts in major units, exactly."""
    tests: list[ColumnElement[bool]] = []
    for compare in compares:
        amounts = compare.value if compare.op == "in" else (compare.value,)
        minor = [Decimal(a).scaleb(places) for a in amounts]
        if compare.op == "at_least":
            tests.append(total >= int(minor[0].to_integral_value(ROUND_CEILING)))
        elif compare.op == "at_most":
            tests.append(total <= int(minor[0].to_integral_value(ROUND_FLOOR)))
        else:
            exact = [int(m) for m in minor if m == m.to_integral_value()]
            tests.append(among(total, exact) if exact else false())
    return and_(*tests)


def _compare_average(total: ColumnElement[Any], count: ColumnElement[Any],
                     compares: tuple[Compare, ...], places: int) -> ColumnElement[bool]:
    """average = total / count, compared without division: total * q OP amount * q * count."""
    tests: list[ColumnElement[bool]] = [count > 0]
    for compare in compares:
        amounts = compare.value if compare.op == "in" else (compare.value,)
        options = []
        for amount in amounts:
            minor = Decimal(amount).scaleb(places)
            exponent_ = cast(int, minor.normalize().as_tuple().exponent)
            scale = 10 ** max(0, -exponent_)
            numerator = int(minor * scale)
            left, right = total * scale, count * numerator
            options.append({"at_least": left >= right, "at_most": left <= right}.get(
                compare.op, left == right))
        tests.append(or_(*options))
    return and_(*tests)


def calendar_window(period: str, today: date) -> tuple[date, date | None]:
    """[start, end) of this_month, last_month, this_year, last_year (end None = now)."""
    first = today.replace(day=1)
    if period == "this_month":
        return first, None
    if period == "last_month":
        previous = (first - timedelta(days=1)).replace(day=1)
        return previous, first
    if period == "this_year":
        return date(today.year, 1, 1), None
    return date(today.year - 1, 1, 1), date(today.year, 1, 1)


def age_cutoff(today: date, years: int) -> date:
    """The latest birth date of someone at least YEARS old today (29 February
    counts as 28 February in other years)."""
    year = today.year - years
    if (today.month, today.day) == (2, 29) and not calendar.isleap(year):
        return date(year, 2, 28)
    if (today.month, today.day) == (2, 28) and not calendar.isleap(today.year) \
            and calendar.isleap(year):
        return date(year, 2, 29)
    return date(year, today.month, today.day)


def birthday_days(today: date, days: int) -> list[str]:
    """The "MM-DD" birthdays whose next occurrence falls in [today, today + days);
    29 February counts as 28 February in other years."""
    found: list[str] = []
    for offset in range(days):
        day = today + timedelta(days=offset)
        found.append(f"{day:%m-%d}")
        if (day.month, day.day) == (2, 28) and not calendar.isleap(day.year):
            found.append("02-29")
    return sorted(set(found))


# --- queries ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CompiledSegment:
    """A segment's membership test, and the FROM clauses that feed it."""

    where: ColumnElement[bool]
    source: Any  # customers outer-joined with every aggregation it needs (for the funnel)
    members_source: Any  # the same, inner-joined where every member must have rows
    steps: tuple[ColumnElement[bool], ...]  # cumulative tests of a top-level all:


def compile_segment(spec: SegmentSpec, specs: dict[str, SegmentSpec], scope: Scope, *,
                    among: Sequence[int] | None = None) -> CompiledSegment:
    """Compile a segment; every aggregation it needs is built once and joined once.

    With AMONG (customer ids) the segment is asked about those customers only, and the
    restriction goes into every aggregation too: the orders and lines are then read
    through the customer-led index ix_orders_customer_placed for those customers alone,
    where a filter on the outer query only would leave both databases aggregating every
    order of the store first (the customer card asks about one customer)."""
    compiler = _Compiler(specs, scope)
    items = spec.root.items if isinstance(spec.root, All) else (spec.root,)
    step_builds = [compiler.node(item, (spec.name,), top=True) for item in items]
    refs = _Refs()
    paid = and_(ORDERS.c.status == "paid", ORDERS.c.placed_at <= scope.now)
    chosen: ColumnElement[bool] = true()
    if among is not None:
        chosen = CUSTOMERS.c.id.in_(list(among))
        paid = and_(ORDERS.c.customer_id.in_(list(among)), paid)
    joins: list[tuple[str, Subquery | Table, ColumnElement[bool]]] = []
    if compiler.order_aggs:
        refs.orders = (select(ORDERS.c.customer_id, *compiler.order_aggs.values())
                       .where(paid, _any_row(compiler.order_rows))
                       .group_by(ORDERS.c.customer_id).subquery("agg_orders"))
        joins.append(("orders", refs.orders, refs.orders.c.customer_id == CUSTOMERS.c.id))
    if compiler.line_aggs:
        refs.lines = (select(ORDERS.c.customer_id, *compiler.line_aggs.values())
                      .select_from(LINES.join(ORDERS, ORDERS.c.id == LINES.c.order_id))
                      .where(paid, _any_row(compiler.line_rows))
                      .group_by(ORDERS.c.customer_id).subquery("agg_lines"))
        joins.append(("lines", refs.lines, refs.lines.c.customer_id == CUSTOMERS.c.id))
    if compiler.referrals:
        referrer = CUSTOMERS.alias("referred")
        referred = select(referrer.c.referred_by, func.count().label("referrals")).where(
            referrer.c.referred_by.is_not(None))
        if among is not None:  # the referrals of these customers alone (ix on referred_by)
            referred = referred.where(referrer.c.referred_by.in_(
                select(CUSTOMERS.c.store_id).where(chosen).correlate(None)))
        refs.referrals = (referred.group_by(referrer.c.referred_by)
                          .subquery("agg_referrals"))
        joins.append(("referrals", refs.referrals,
                      refs.referrals.c.referred_by == CUSTOMERS.c.store_id))
    if compiler.predictions:
        joins.append(("predictions", PREDICTIONS,
                      PREDICTIONS.c.customer_id == CUSTOMERS.c.id))
    source: Any = CUSTOMERS
    members_source: Any = CUSTOMERS
    for name, sub, on in joins:
        source = source.outerjoin(sub, on)
        members_source = (members_source.join(sub, on) if name in compiler.required
                          else members_source.outerjoin(sub, on))
    parts = [step(refs) for step in step_builds]
    if among is not None:
        parts[0] = and_(chosen, parts[0])
    steps = tuple(and_(*parts[:count]) for count in range(1, len(parts) + 1))
    return CompiledSegment(where=steps[-1], source=source, members_source=members_source,
                           steps=steps)


def members_query(compiled: CompiledSegment, *columns: Any) -> Select[Any]:
    return select(*columns).select_from(compiled.members_source).where(compiled.where)


def count_query(compiled: CompiledSegment) -> Select[Any]:
    return select(func.count()).select_from(compiled.members_source).where(compiled.where)


def funnel_query(compiled: CompiledSegment) -> Select[Any]:
    """One pass: how many customers remain after each step."""
    return select(*(func.sum(case((step, 1), else_=0)) for step in compiled.steps)) \
        .select_from(compiled.source)


# --- a trigger's candidates: (customer id, occurrence) rows for the planner -------------------

CandidateQuery = Select[int, str]  # what the planner pages through (mailer.store.customers)
# A candidate query with a third column: the moment the row's expiry counts from (signup's
# signed_up_at: one expiry per row where the others have one per query).
TimedCandidateQuery = Select[int, str, datetime]


def due_members(compiled: CompiledSegment, occurrence: str) -> CandidateQuery:
    """Every member, for one occurrence (schedule, once, promotion)."""
    return members_query(compiled, CUSTOMERS.c.id).add_columns(literal(occurrence))


def _living_in(zone_name: str, default_zone: str) -> Select[Any]:
    """The ids of customers living in ZONE_NAME (those without a zone live in
    DEFAULT_ZONE)."""
    return select(Customer.id).where(func.coalesce(Customer.timezone, default_zone) == zone_name)


def birthday_members(compiled: CompiledSegment, zone_name: str, default_zone: str,
                     birthdays: list[str], occurrence: str) -> CandidateQuery:
    """The members living in one zone whose "MM-DD" birthday is among BIRTHDAYS."""
    return (members_query(compiled, CUSTOMERS.c.id)
            .where(CUSTOMERS.c.id.in_(_living_in(zone_name, default_zone)),
                   CUSTOMERS.c.birth_md.in_(birthdays))
            .add_columns(literal(occurrence)))


def holiday_members(compiled: CompiledSegment, zone_names: list[str], default_zone: str, *,
                    known: tuple[str, ...], countries: tuple[str, ...], holiday: date,
                    others: str | None) -> CandidateQuery:
    """The members living in ZONE_NAMES who have an occasion on HOLIDAY: those whose
    folded country is among COUNTRIES get `holiday:<CC>:<date>`; the rest (no country,
    or one not among KNOWN, the folded codes of the holidays package) get OTHERS, or
    are left out when it is None."""
    country = CUSTOMERS.c.country_folded
    unknown = _unknown_country(known)
    branches: list[tuple[ColumnElement[bool], Any]] = []
    if countries:
        # folded codes are two ASCII letters: upper() agrees on both databases
        branches.append((country.in_(countries), literal("holiday:") + func.upper(country)
                         + literal(f":{holiday.isoformat()}")))
    if others is not None:
        branches.append((unknown, literal(others)))
    if not branches:
        return members_query(compiled, CUSTOMERS.c.id).where(false()) \
            .add_columns(literal(""))
    occurrence = case(*branches, else_=None)
    return (members_query(compiled, CUSTOMERS.c.id)
            .where(CUSTOMERS.c.id.in_(
                select(Customer.id).where(func.coalesce(Customer.timezone, default_zone)
                                          .in_(zone_names))),
                   occurrence.is_not(None))
            .add_columns(occurrence))


@cache
def _unknown_country(known: tuple[str, ...]) -> ColumnElement[bool]:
    """No country, or one not among KNOWN: built once, a sweep builds many queries."""
    country = CUSTOMERS.c.country_folded
    return or_(country.is_(None), country.not_in(known))


def timestamp_date_members(compiled: CompiledSegment, zone_name: str, default_zone: str, *,
                           field: str, windows: list[tuple[datetime, datetime]],
                           occurrence: str, now: datetime) -> CandidateQuery:
    """`date` on a timestamp: the members living in one zone whose FIELD (signed_up_at, or
    first_order_at: the first paid order's placed_at, by NOW) falls in one of WINDOWS
    (their local days, as UTC), with OCCURRENCE."""
    members = members_query(compiled, CUSTOMERS.c.id)
    if not windows:
        return members.where(false()).add_columns(literal(occurrence))

    def within(moment: Any) -> ColumnElement[bool]:
        return or_(*(and_(moment >= start, moment < end) for start, end in windows))

    if field == "signed_up_at":
        marked = CUSTOMERS.c.id.in_(select(Customer.id).where(
            func.coalesce(Customer.timezone, default_zone) == zone_name,
            within(Customer.signed_up_at)))
    else:  # first_order_at, aggregated over the zone's customers' orders only
        marked = CUSTOMERS.c.id.in_(
            select(Order.customer_id)
            .where(Order.status == "paid", Order.placed_at <= now,
                   Order.customer_id.in_(_living_in(zone_name, default_zone)))
            .group_by(Order.customer_id)
            .having(within(func.min(Order.placed_at))))
    return members.where(marked).add_columns(literal(occurrence))


def attribute_date_members(compiled: CompiledSegment, zone_names: list[str], default_zone: str,
                           *, name: str, marked: date, month_days: list[str] | None,
                           occurrence: str, dated: bool = True) -> CandidateQuery:
    """`date` on attributes.NAME (text "YYYY-MM-DD", or an ISO date-time whose first ten
    characters are the date, read as written): the members living in ZONE_NAMES whose
    date is MARKED (with MONTH_DAYS, yearly: whose "MM-DD" is among them and whose year
    is before MARKED's: an anniversary, from year 1). DATED false: instead
    those whose NAME holds something that is not a date (`no_date`); a missing key or a
    JSON null is neither."""
    text = CUSTOMERS.c.attributes[name].as_string()
    if not dated:
        test: ColumnElement[bool] = and_(text.is_not(None), not_(date_text(text)))
    elif month_days is not None:
        test = and_(date_text(text), func.substr(text, 6, 5).in_(month_days),
                    func.substr(text, 1, 4) < f"{marked.year:04d}")
    else:  # equal to a real date: a date already
        test = and_(func.substr(text, 1, 10) == marked.isoformat(), _date_tail(text))
    return (members_query(compiled, CUSTOMERS.c.id)
            .where(CUSTOMERS.c.id.in_(
                select(Customer.id).where(func.coalesce(Customer.timezone, default_zone)
                                          .in_(zone_names))), test)
            .add_columns(literal(occurrence)))


_DIGITS = tuple("0123456789")
_TWO = tuple(f"{n:02d}" for n in range(100))
_LEAP_TAILS = tuple(f"{n:02d}" for n in range(0, 100, 4))  # 2-digit multiples of 4


def date_text(text: ColumnElement[Any]) -> ColumnElement[bool]:
    """Whether TEXT starts with a real calendar date YYYY-MM-DD and ends there or goes on
    with a time (T or a space). Compared character by character, the same on both
    databases and never a cast error; a JSON number or true on SQLite is no date either."""
    def part(start: int, length: int) -> ColumnElement[Any]:
        return func.substr(text, start, length)

    month, day = part(6, 2), part(9, 2)
    leap = and_(part(3, 2).in_(_LEAP_TAILS),
                or_(part(3, 2) != "00", part(1, 2).in_(_LEAP_TAILS)))  # 2000, not 1900
    return and_(*(part(i, 1).in_(_DIGITS) for i in (1, 2, 3, 4)),
                part(1, 4) != "0000",  # no year 0 (Python's date has none either)
                part(5, 1) == "-", part(8, 1) == "-",
                month.in_(_TWO[1:13]), day.in_(_TWO[1:32]), _date_tail(text),
                not_(and_(month.in_(("04", "06", "09", "11")), day == "31")),
                not_(and_(month == "02", day.in_(("30", "31")))),
                or_(month != "02", day != "29", leap))


def _date_tail(text: ColumnElement[Any]) -> ColumnElement[bool]:
    """After the ten characters of the date: nothing, or a time."""
    return or_(func.length(text) == 10,
               and_(func.length(text) > 10, func.substr(text, 11, 1).in_(("T", " "))))


def after_order_members(compiled: CompiledSegment, zone_name: str, default_zone: str,
                        start: datetime, end: datetime) -> CandidateQuery:
    """(customer id, "order:" + its store id) of the paid orders placed in [START, END)
    by members living in one zone."""
    return (select(Order.customer_id, literal("order:") + Order.store_id)
            .join(Customer, Customer.id == Order.customer_id)
            .where(Order.status == "paid", Order.placed_at >= start,
                   Order.placed_at < end,
                   Order.customer_id.in_(members_query(compiled, CUSTOMERS.c.id)),
                   Order.customer_id.in_(_living_in(zone_name, default_zone))))


def sunset_members(compiled: CompiledSegment, campaign: str, *, now: datetime,
                   after: timedelta, min_mails: int, occurrence: str) -> CandidateQuery:
    """(customer id, OCCURRENCE) of the members who meet policy.sunset at NOW (last sign
    of life before now − AFTER, at least MIN_MAILS marketing mails sent since) and whom
    CAMPAIGN (a `trigger: sunset` one) has not mailed since that sign of life."""
    signs = last_signs_query(now).subquery("last_signs")
    nth = nth_latest_sent_query(min_mails, now).subquery("nth_sent")
    return (members_query(compiled, CUSTOMERS.c.id)
            .join(signs, signs.c.customer_id == CUSTOMERS.c.id)
            .join(nth, nth.c.customer_id == CUSTOMERS.c.id)
            .where(signs.c.last_sign < now - after, nth.c.at > signs.c.last_sign,
                   not_(mailed_after(campaign, CUSTOMERS.c.id, signs.c.last_sign)))
            .add_columns(literal(occurrence)))


def signup_members(compiled: CompiledSegment, start: datetime, end: datetime,
                   occurrence: str) -> TimedCandidateQuery:
    """(customer id, OCCURRENCE, signed_up_at) of the members who signed up in (START,
    END]: the third column is the moment each mail's expiry counts from."""
    return (members_query(compiled, CUSTOMERS.c.id)
            .where(CUSTOMERS.c.signed_up_at > start, CUSTOMERS.c.signed_up_at <= end)
            .add_columns(literal(occurrence), CUSTOMERS.c.signed_up_at))


def checkout_members(compiled: CompiledSegment, *, created_by: datetime,
                     created_after: datetime, now: datetime, ordered: bool = False
                     ) -> TimedCandidateQuery:
    """(customer id, "checkout:" + its store id, created_at) of the members' checkouts
    created in (CREATED_AFTER, CREATED_BY]: those not completed and without a paid order
    since (ORDERED true: instead those with one, reason `ordered`); the third column is
    the moment each mail's expiry counts from."""
    test = ordered_since_checkout(now)
    return (select(Customer.id, literal("checkout:") + Checkout.store_id,
                   Checkout.created_at)
            .join(Customer, Customer.id == Checkout.customer_id)
            .where(Checkout.created_at > created_after, Checkout.created_at <= created_by,
                   Checkout.customer_id.in_(members_query(compiled, CUSTOMERS.c.id)),
                   test if ordered else not_(test)))


def checkout_reminder_members(campaign: str, *, sent_by: datetime, created_after: datetime,
                              now: datetime, ordered: bool = False) -> TimedCandidateQuery:
    """(customer id, "checkout-reminder:" + its store id, created_at) of the checkouts
    created after CREATED_AFTER whose first mail (`checkout:<id>`) of CAMPAIGN was sent
    at or before SENT_BY: those not completed and without a paid order since (ORDERED
    true: instead those with one, reason `ordered`). Only a mail that was sent counts (not
    `unknown`: a reminder never follows a first mail that may not have gone)."""
    test = ordered_since_checkout(now)
    return (select(Customer.id, literal("checkout-reminder:") + Checkout.store_id,
                   Checkout.created_at)
            .join(Customer, Customer.id == Checkout.customer_id)
            .join(Delivery, and_(Delivery.customer_id == Checkout.customer_id,
                                 Delivery.campaign == campaign,
                                 Delivery.occurrence == literal("checkout:") + Checkout.store_id))
            .where(Delivery.status == "sent", Delivery.sent_at <= sent_by,
                   Checkout.created_at > created_after,
                   test if ordered else not_(test)))


def stock_alert_members(compiled: CompiledSegment, sku: str, occurrence: str
                        ) -> CandidateQuery:
    """(customer id, OCCURRENCE) of the members with an open stock alert for SKU."""
    return (members_query(compiled, CUSTOMERS.c.id)
            .where(CUSTOMERS.c.id.in_(select(StockAlert.customer_id).where(
                StockAlert.sku == sku, StockAlert.notified_at.is_(None))))
            .add_columns(literal(occurrence)))


@overload
def in_plan_order(query: CandidateQuery) -> CandidateQuery: ...
@overload
def in_plan_order(query: TimedCandidateQuery) -> TimedCandidateQuery: ...
def in_plan_order(query: CandidateQuery | TimedCandidateQuery
                  ) -> CandidateQuery | TimedCandidateQuery:
    """QUERY ordered by store id, then occurrence: the planner's order, in which the
    subject variants go round-robin."""
    return query.order_by(Customer.store_id, query.selected_columns[1])
