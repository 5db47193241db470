"""Segments (DESIGN §4.1) against answers worked out by hand on a small store, on both
databases. The store's clock: now = 2026-11-23 10:00 in Berlin (09:00Z)."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import Workspace

NOW = "2026-11-23T10:00"

CUSTOMERS = """\
id,email,first_name,country,city,birth_date,timezone,tags,signed_up_at,subscribed,referred_by,tier,shoe_size
A,anna@example.com,Anna,DE,Berlin,1990-11-25,Europe/Berlin,VIP;app,2024-01-10,true,,gold,42
B,bob@shop.example,Bob,AT,Wien,2000-02-29,,,2025-06-01,true,A,silver,n/a
C,chloe@example.org,Chloé,FR,Lyon,,,,2025-06-01,false,A,,
D,dmitry@example.com,Дмитрий,,München,1966-11-23,,,2025-06-01,true,B,,
E,emi@example.net,恵美,JP,東京,2008-12-01,Asia/Tokyo,,2025-06-01,true,,,
"""

# O2 sits exactly 365 days before now, O6 one second earlier; O11 exactly 60 days before.
# O9 is 31 October in UTC but 1 November in Berlin; O10 is 1 October in Berlin.
ORDERS = """\
order_id,customer_id,placed_at,status,currency,total,sku,product,category,quantity,price
O1,A,2026-11-23T08:00:00Z,paid,EUR,200.10,CO-1,Espresso,coffee,2,100.05
O2,A,2025-11-23T09:00:00Z,paid,EUR,199.90,BO-1,Field guide,books,1,199.90
O3,A,2026-06-01T10:00:00Z,refunded,EUR,1000,SH-1,Trail runner,shoes,1,1000
O4,A,2026-10-01T10:00:00Z,paid,USD,500,SH-1,Trail runner,shoes,1,500
O5,A,2026-11-24T10:00:00Z,paid,EUR,50,CO-1,Espresso,coffee,1,50
O6,B,2025-11-23T08:59:59Z,paid,EUR,0.10,SH-2,Wool slipper,shoes,1,0.10
O7,B,2026-10-15T12:00:00Z,paid,EUR,0.20,BO-2,Sourdough,books,1,0.20
O8,B,2026-11-20T12:00:00Z,cancelled,EUR,99,CO-1,Espresso,coffee,1,99
O9,C,2026-10-31T23:30:00Z,paid,EUR,30,CO-1,Espresso,coffee,1,20
O9,C,2026-10-31T23:30:00Z,paid,EUR,30,BO-2,Sourdough,books,1,10
O10,C,2026-09-30T22:30:00Z,paid,EUR,10,CO-2,Filter papers,Coffee,1,10
O11,D,2026-09-24T09:00:00Z,paid,EUR,5,SH-1,Trail runner,Shoes,1,5
"""


@pytest.fixture
def store(db: Workspace) -> Workspace:
    db.write("customers.csv", CUSTOMERS)
    db.write("orders.csv", ORDERS)
    assert db.run("import", "customers", "customers.csv", "--now", NOW).code == 0
    result = db.run("import", "orders", "orders.csv", "--now", NOW)
    assert result.code == 0, result.stderr
    return db


def members(store: Workspace, condition: str, now: str = NOW) -> list[str]:
    store.write("segments/probe.yaml", f"description: probe\n{condition}\n")
    result = store.run("segments", "show", "probe", "--now", now, "--json")
    assert result.code == 0, result.stderr
    document = result.json()
    assert document["count"] == len(document["members"])
    return [member["id"] for member in document["members"]]


CASES = [
    # purchase counts: paid only, orders after now do not exist, windows inclusive
    ("all: [{orders: {at_least: 3, within: 365d}}]", ["A"]),
    ("all: [{orders: {eq: 1, within: 365d}}]", ["B", "D"]),
    ("all: [{orders: {eq: 0}}]", ["E"]),
    ("all: [{orders: 2}]", ["B", "C"]),
    ("all: [{orders: {in: [1, 3]}}]", ["A", "D"]),
    ("all: [{orders: {at_least: 1, since: 2026-11-01}}]", ["A", "C"]),
    # money in the store currency, exact in minor units
    ("all: [{spent: {at_least: 400, within: 365d}}]", ["A"]),
    ("all: [{spent: {at_least: 400.01, within: 365d}}]", []),
    ("all: [{spent: {eq: 0.3}}]", ["B"]),
    ("all: [{spent: {at_most: 0}}]", ["E"]),
    ("all: [{spent: {at_least: 30, during: this_month}}]", ["A", "C"]),
    ("all: [{average_order: {at_least: 200}}]", ["A"]),
    ("all: [{average_order: {at_most: 0.15}}]", ["B"]),
    ("all: [{average_order: {eq: 20}}]", ["C"]),
    # dates: more_than_ago is strictly before now - D; customers without orders never match
    ("all: [{first_order: {before: 2025-11-24}}]", ["A", "B"]),
    ("all: [{last_order: {more_than_ago: 60d}}]", []),
    ("all: [{last_order: {more_than_ago: 59d}}]", ["D"]),
    ("all: [{last_order: {less_than_ago: 60d}}]", ["A", "B", "C", "D"]),
    ("all: [{last_order: {after: 2026-11-22}}]", ["A"]),
    ("all: [{signed_up: {before: 2024-02-01}}]", ["A"]),
    # bought: case-insensitive, counted in orders, calendar windows in Berlin
    ("all: [{bought: {category: coffee}}]", ["A", "C"]),
    ("all: [{bought: {category: COFFEE, at_least: 2}}]", ["C"]),
    ("all: [{bought: {category: coffee, during: last_month}}]", ["C"]),
    ("all: [{bought: {category: coffee, during: this_month}}]", ["A", "C"]),
    ("all: [{bought: {sku: sh-1}}]", ["A", "D"]),  # O4 is paid (in USD); O3 refunded
    ("all: [{bought: {product: trail runner, within: 55d}}]", ["A"]),
    # profile
    ("all: [{country: de}]", ["A"]),
    ("all: [{country: {in: [AT, fr]}}]", ["B", "C"]),
    ("all: [{not: {country: DE}}]", ["B", "C", "D", "E"]),
    ("all: [{city: MÜNCHEN}]", ["D"]),
    ("all: [{city: 東京}]", ["E"]),
    ("all: [{email_domain: SHOP.example}]", ["B"]),
    ("all: [{tags: {contains: vip}}]", ["A"]),
    ("all: [{tags: {contains: [nothing, APP]}}]", ["A"]),
    ("all: [{not: {tags: {contains: vip}}}]", ["B", "C", "D", "E"]),
    ("all: [{age: {at_least: 60}}]", ["D"]),
    ("all: [{age: {at_most: 17}}]", ["E"]),
    ("all: [{age: 26}]", ["B"]),
    ("all: [{not: {age: {at_least: 18}}}]", ["C", "E"]),
    ("all: [{subscribed: false}]", ["C"]),
    ("all: [{birthday: {within_next: 3d}}]", ["A", "D"]),
    ("all: [{birthday: {within_next: 2d}}]", ["D"]),
    ("all: [{referrals: {at_least: 2}}]", ["A"]),
    ("all: [{referrals: 1}]", ["B"]),
    ("all: [{referrals: 0}]", ["C", "D", "E"]),
    ("all: [{attribute: {name: tier, eq: GOLD}}]", ["A"]),
    ("all: [{attribute: {name: shoe_size, at_least: 40}}]", ["A"]),
    ("all: [{not: {attribute: {name: tier, in: [gold, silver]}}}]", ["C", "D", "E"]),
    # combinators
    ("any: [{country: DE}, {country: AT}]", ["A", "B"]),
    ("all: [{any: [{country: DE}, {city: münchen}]}, {orders: {at_least: 1}}]", ["A", "D"]),
    ("not: {orders: {at_least: 1}}", ["E"]),
    ("not: [{orders: {at_least: 1}}, {country: DE}]", ["B", "C", "D", "E"]),
]


@pytest.mark.parametrize(("condition", "expected"), CASES, ids=[c for c, _ in CASES])
def test_condition(store: Workspace, condition: str, expected: list[str]) -> None:
    assert members(store, condition) == expected


def test_calendar_windows_and_age_use_the_workspace_zone(store: Workspace) -> None:
    # 2026-11-22 23:30Z is already 23 November in Berlin: D turns 60 that day there.
    assert members(store, "all: [{age: {at_least: 60}}]", "2026-11-22T23:30:00Z") == ["D"]
    assert members(store, "all: [{age: {at_least: 60}}]", "2026-11-22T22:30:00Z") == []


def test_leap_day_birthday_on_28_february(store: Workspace) -> None:
    # B was born on 29 February; in 2027 the birthday counts on 28 February.
    assert members(store, "all: [{birthday: {within_next: 1d}}]", "2027-02-28T12:00") == ["B"]
    assert members(store, "all: [{age: 27}]", "2027-02-28T12:00") == ["B"]
    assert members(store, "all: [{age: 27}]", "2027-02-27T12:00") == []


def test_in_segment_is_inlined(store: Workspace) -> None:
    store.write("segments/germans.yaml", "description: DE\nall: [{country: DE}]\n")
    assert members(store, "any: [{in_segment: germans}, {city: Lyon}]") == ["A", "C"]
    assert members(store, "all: [{not: {in_segment: germans}}, {orders: {at_least: 1}}]") == [
        "B", "C", "D"]


def test_count_list_and_sql(store: Workspace) -> None:
    store.write("segments/big.yaml", "description: Big spenders\nall:\n"
                                     "  - spent: {at_least: 100}\n")
    assert store.run("segments", "count", "big", "--now", NOW, "--json").json() == {
        "segment": "big", "count": 1}
    assert store.run("segments", "list", "--now", NOW, "--json").json() == {
        "segments": [{"segment": "big", "description": "Big spenders", "count": 1}]}
    result = store.run("segments", "sql", "big", "--now", NOW, "--json").json()
    assert result["segment"] == "big"
    assert result["dialect"] in ("sqlite", "postgresql")
    assert "GROUP BY orders.customer_id" in result["sql"]
    assert "order_lines" not in result["sql"]  # no fan-out into order lines


def test_show_limits_members_but_counts_all(store: Workspace) -> None:
    store.write("segments/all.yaml", "description: everyone\nall: [{orders: {at_least: 0}}]\n")
    result = store.run("segments", "show", "all", "--limit", "2", "--now", NOW, "--json").json()
    assert result["count"] == 5
    assert [m["id"] for m in result["members"]] == ["A", "B"]
    assert result["members"][0]["email"] == "anna@example.com"


def test_funnel_counts_what_remains_after_each_condition(store: Workspace) -> None:
    store.write("segments/loyal.yaml", "description: loyal\nall:\n"
                                       "  - orders: {at_least: 1}\n"
                                       "  - spent: {at_least: 1}\n"
                                       "  - country: DE\n")
    result = store.run("segments", "funnel", "loyal", "--now", NOW, "--json")
    assert result.json() == {"segment": "loyal", "steps": [
        {"condition": "orders: {at_least: 1}", "line": 3, "remaining": 4},
        {"condition": "spent: {at_least: 1}", "line": 4, "remaining": 3},
        {"condition": "country: DE", "line": 5, "remaining": 1},
    ]}


def test_unknown_segment_suggests_a_name(store: Workspace) -> None:
    store.write("segments/germans.yaml", "description: DE\nall: [{country: DE}]\n")
    result = store.run("segments", "count", "german", "--json")
    assert result.code == 1
    assert result.json()["error"]["message"] == "unknown segment 'german' (did you mean germans?)"


def test_validation_lists_every_problem_with_its_line(ws: Workspace) -> None:
    ws.write("segments/broken.yaml", "description: broken\nall:\n"
                                     "  - order: {at_least: 3}\n"
                                     "  - orders: {at_leest: 3}\n"
                                     "  - orders: {at_least: 3, within: a year}\n"
                                     "  - spent: {at_least: lots}\n"
                                     "  - in_segment: test-acounts\n"
                                     "  - in_segment: loop-a\n")
    ws.write("segments/test-accounts.yaml", "description: t\nall: [{email_domain: shop.example}]\n")
    ws.write("segments/loop-a.yaml", "description: a\nall: [{in_segment: loop-b}]\n")
    ws.write("segments/loop-b.yaml", "description: b\nall: [{in_segment: loop-a}]\n")
    result = ws.run("validate")
    assert result.code == 1
    assert result.stderr.splitlines() == [
        "segments/broken.yaml:3: all.0.order: unknown condition 'order' (did you mean orders?)",
        "segments/broken.yaml:4: all.1.orders.at_leest: unknown key (did you mean at_least?)",
        "segments/broken.yaml:4: all.1.orders: give a comparison: eq, in, at_least or at_most",
        "segments/broken.yaml:5: all.2.orders.within: expected a duration like 7d, 12h or 90s, "
        "got 'a year'",
        "segments/broken.yaml:6: all.3.spent.at_least: expected a number, got 'lots'",
        "segments/broken.yaml:7: in_segment: unknown segment 'test-acounts' "
        "(did you mean test-accounts?)",
        "segments/loop-a.yaml:2: in_segment: segments refer to each other in a cycle: "
        "loop-a -> loop-b -> loop-a",
        "segments/loop-b.yaml:2: in_segment: segments refer to each other in a cycle: "
        "loop-b -> loop-a -> loop-b",
        "checked 5 files",
        "8 problems in 3 files",
    ]


def test_typed_attributes_from_json_lines(store: Workspace) -> None:
    store.write("more.jsonl", '{"id": "F", "email": "f@example.com", '
                              '"attributes": {"member": true, "points": 120}}\n')
    assert store.run("import", "customers", "more.jsonl", "--now", NOW).code == 0
    assert members(store, "all: [{attribute: {name: member, eq: true}}]") == ["F"]
    assert members(store, "all: [{attribute: {name: points, at_least: 100}}]") == ["F"]
    assert members(store, "all: [{attribute: {name: points, eq: 120}}]") == ["F"]


# --- limits (issue 15 item 7) ---------------------------------------------------------------

LOLS = "\n".join(
    [f'l0: &l0 [{", ".join(["lol"] * 9)}]']
    + [f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]" for n in range(1, 10)])  # 9^10


def test_an_alias_bomb_is_refused_by_the_loader_with_its_line(ws: Workspace) -> None:
    ws.write("segments/bomb.yaml", "description: bomb\n" + LOLS + "\nall: [{country: DE}]\n")
    ws.write("mailer.yaml", SETTINGS_WITH_BOMB)
    import time

    started = time.perf_counter()
    result = ws.run("validate")
    assert time.perf_counter() - started < 10
    assert result.code == 1
    assert result.stderr.splitlines() == [
        "mailer.yaml:10: aliases expand to more than 10,000 values; write the values out or "
        "use fewer aliases",
        "segments/bomb.yaml:6: aliases expand to more than 10,000 values; write the values out "
        "or use fewer aliases",
        "checked 2 files",
        "2 problems in 2 files",
    ]


SETTINGS_WITH_BOMB = """\
store: {name: Pine & Co, address: "1 Market St, Springfield", currency: EUR}
sender: {from: "Pine & Co <hello@shop.example>"}
timezone: Europe/Berlin
tracking: {base_url: https://mail.shop.example}
x-anchors:
""" + "\n".join("  " + line for line in LOLS.splitlines()) + "\n"


def test_the_daemons_reload_refuses_a_bomb_at_once(ws: Workspace) -> None:
    # The daemon reloads through the same loader: the reload fails fast, it never hangs.
    import time

    from mailer.core.errors import ConfigError
    from mailer.daemon.scheduler import load, problems_of

    ws.write("segments/bomb.yaml", "description: bomb\n" + LOLS + "\nall: [{country: DE}]\n")
    ws.write("segments/deep.yaml", "description: deep\nall: " + "[" * 5000 + "]" * 5000 + "\n")
    started = time.perf_counter()
    with pytest.raises(ConfigError) as raised:
        load(ws.root)
    assert time.perf_counter() - started < 5
    assert problems_of(raised.value) == [
        "segments/bomb.yaml:6: aliases expand to more than 10,000 values; write the values out "
        "or use fewer aliases",
        "segments/deep.yaml:2: nested deeper than 50 levels",
    ]


def test_yaml_recursion_and_nul_are_validate_errors(ws: Workspace) -> None:
    ws.write("segments/loop.yaml", "description: loop\nall: &a [{any: *a}]\n")
    ws.write("segments/nul.yaml", 'description: nul\nall:\n  - city: "Ber\\0lin"\n')
    result = ws.run("validate")
    assert result.stderr.splitlines() == [
        "segments/loop.yaml:2: the alias *a is inside the node it names",
        "segments/nul.yaml:3: a value holds a NUL character (\\0), which cannot be stored",
        "checked 3 files",
        "2 problems in 2 files",
    ]


def test_values_yaml_cannot_construct_are_validate_errors_with_their_line(
        ws: Workspace) -> None:
    # PyYAML's constructors raise ValueError for these; it escaped as a traceback
    ws.write("segments/date.yaml", "description: feb\nall:\n  - orders: {at_least: 1, "
                                   "since: 2026-02-30}\n")
    ws.write("segments/float.yaml", "description: x\nall:\n  - spent: {at_least: !!float x}\n")
    ws.write("segments/digits.yaml", f"description: x\nall:\n  - orders: {'9' * 5000}\n")
    result = ws.run("validate")
    assert result.code == 1
    assert result.stderr.splitlines() == [
        "segments/date.yaml:3: cannot read '2026-02-30': day is out of range for month",
        "segments/digits.yaml:3: cannot read '" + "9" * 40 + "': Exceeds the limit (4300 "
        "digits) for integer string conversion: value has 5000 digits",
        "segments/float.yaml:3: cannot read 'x': could not convert string to float: 'x'",
        "checked 4 files",
        "3 problems in 3 files",
    ]


def test_anchors_and_merge_keys_within_the_limit_still_load() -> None:
    from mailer.config.yamlsrc import load_yaml

    loaded = load_yaml("base: &b {at_least: 2}\nall: [{orders: {<<: *b, within: 30d}}, *b]\n",
                       "segments/merge.yaml")
    assert loaded["all"] == [{"orders": {"at_least": 2, "within": "30d"}}, {"at_least": 2}]


def _nested(levels: int) -> str:
    """LEVELS levels of all/any/not (the top all: counts) around {country: DE}."""
    tree = "{country: DE}"
    for level in range(levels - 1):
        kind = ("any", "all", "not")[level % 3]
        tree = f"{{not: {tree}}}" if kind == "not" else f"{{{kind}: [{tree}, {{city: Lyon}}]}}"
    return f"all: [{tree}]"


def test_segment_size_limits_are_validate_errors(ws: Workspace) -> None:
    many = ", ".join(f"{{city: c{n}}}" for n in range(101))
    ws.write("segments/deep.yaml", f"description: deep\n{_nested(11)}\n")
    ws.write("segments/wide.yaml", f"description: wide\nany: [{many}]\n")
    ws.write("segments/values.yaml", "description: values\nall:\n"
                                     "  - age: {at_least: 200}\n"
                                     "  - orders: {at_least: 100000000000000000000}\n"
                                     "  - last_order: {more_than_ago: 9999999d}\n"
                                     "  - signed_up: {before: 0001-01-01}\n")
    # Each part is within the limits; inlined, they are not.
    fifty = ", ".join(f"{{city: c{n}}}" for n in range(50))
    ws.write("segments/part.yaml", f"description: part\nany: [{fifty}]\n")
    ws.write("segments/level.yaml", f"description: level\n{_nested(9)}\n")
    parts = ", ".join("{in_segment: part}" for _ in range(11))
    ws.write("segments/whole.yaml", f"description: whole\nany: [{parts}]\n")
    ws.write("segments/deeper.yaml", "description: deeper\nall: [{not: {in_segment: level}}, "
                                     "{in_segment: level}]\n")
    result = ws.run("validate")
    assert result.code == 1
    assert result.stderr.splitlines() == [
        "segments/deep.yaml:2: all.0.any.0.not.all.0.any.0.not.all.0.any.0.not.all.0.any: "
        "nested deeper than 10 levels of all/any/not; flatten it or split it into segments",
        "segments/values.yaml:3: all.0.age.at_least: expected an age from 0 to 150, got '200'",
        "segments/values.yaml:4: all.1.orders.at_least: expected a whole number of at most "
        "10^15, got '100000000000000000000'",
        "segments/values.yaml:5: all.2.last_order.more_than_ago: expected at most 36600d, "
        "got '9999999d'",
        "segments/values.yaml:6: all.3.signed_up.before: expected a date from 1900 to 2999, "
        "got '0001-01-01'",
        "segments/wide.yaml:2: any: at most 100 conditions in one list, got 101 (for many "
        "values of one condition, use in:)",
        "segments/deeper.yaml:2: in_segment: with in_segment inlined, it nests 11 levels of "
        "all/any/not (at most 10)",
        "segments/whole.yaml:2: in_segment: with in_segment inlined, it holds 550 conditions "
        "(at most 500)",
        "checked 8 files",
        "8 problems in 5 files",
    ]


def test_the_largest_segments_within_the_limits_run_on_both_databases(store: Workspace) -> None:
    # Ten levels of nesting around a tags test (a subquery), and 500 conditions in
    # lists of 100: SQLite's parser stack and expression depth both hold.
    tree = "{tags: {contains: vip}}"
    for level in range(7):  # each level keeps the members of the one inside it
        tree = (f"{{any: [{tree}, {{city: nowhere}}]}}" if level % 2
                else f"{{all: [{tree}, {{orders: {{at_least: 0}}}}]}}")
    assert members(store, f"all: [{{not: {{not: {tree}}}}}]") == ["A"]  # ten levels
    hundred = ", ".join(["{city: nowhere}"] * 99 + ["{country: de}"])
    lists = ", ".join(f"{{any: [{hundred}]}}" for _ in range(5))
    assert members(store, f"any: [{lists}]") == ["A"]
    assert members(store, f"all: [{lists}]") == ["A"]


def test_in_lists_beyond_the_parameter_limit_of_postgresql(store: Workspace) -> None:
    # PostgreSQL takes at most 65,535 bound parameters a statement, SQLite 32,766.
    from mailer.config.conditions import parse_segment
    from mailer.segments.compiler import Scope
    from mailer.segments.runner import members as members_of
    from mailer.segments.runner import sql
    from mailer.store.db import database_url, open_database

    n = 70_000
    words = [f"place {i}" for i in range(n)]
    numbers = list(range(10, n + 10))
    cases = [
        ({"country": {"in": [*words, "de"]}}, ["A"]),
        ({"city": {"in": ["LYON", *words]}}, ["C"]),
        ({"tags": {"contains": [*words, "app"]}}, ["A"]),
        ({"email_domain": {"in": [*(f"{w}.example" for w in range(n)), "shop.example"]}},
         ["B"]),
        ({"orders": {"in": [*numbers, 3]}}, ["A"]),
        ({"referrals": {"in": [*numbers, 2]}}, ["A"]),
        ({"spent": {"in": [*(f"{i}.01" for i in numbers), 0.3]}}, ["B"]),
        ({"attribute": {"name": "tier", "in": [*words, "Silver"]}}, ["B"]),
        ({"not": {"country": {"in": [*words, "DE", "AT", "FR", "JP"]}}}, ["D"]),
    ]
    engine = open_database(database_url(env_url=store.database, configured=None,
                                        root=store.root))
    scope = Scope(now=datetime(2026, 11, 23, 9, tzinfo=UTC), tz=ZoneInfo("Europe/Berlin"),
                  currency="EUR", dialect=engine.dialect.name)
    try:
        for condition, expected in cases:
            parsed = parse_segment("big", "segments/big.yaml", {"all": [condition]})
            assert parsed.spec is not None, parsed.problems
            size, found = members_of(engine, {"big": parsed.spec}, "big", scope, limit=10)
            assert [m["id"] for m in found] == expected, condition
            assert size == len(expected)
        assert "place 69999" in sql(engine, {"big": parsed.spec}, "big", scope)
    finally:
        engine.dispose()
