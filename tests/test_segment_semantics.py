"""The example segments (the repository's segments/, what bench/segments.py times) and the
corners where their answers were once in doubt, on a store small enough to work out by
hand, written with the real importer, on both databases. Now = 2026-11-23 10:00 in Berlin
(09:00Z); this month starts 2026-10-31 23:00Z (1 November in Berlin)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import Workspace

NOW = "2026-11-23T10:00"
EXAMPLES = Path(__file__).resolve().parent.parent / "segments"

# T and S are test accounts, by a tag in another case and by an address at the staff
# domain in another case. K's subscription is off; F and N never bought (F's only order
# is placed after now).
CUSTOMERS = """\
id,email,country,birth_date,tags,signed_up_at,subscribed
F,f@example.com,DE,,,2025-01-01,true
K,k@example.com,DE,2012-01-01,,2025-01-01,false
N,n@example.com,DE,,,2025-01-01,true
S,s@Staff.Shop.Example,DE,1985-03-03,,2024-01-01,true
T,t@example.com,DE,1990-07-07,Test-Account,2024-01-01,true
V,v@example.com,AT,1980-05-05,VIP,2024-01-01,true
"""

# K: two paid coffee orders in the last year (categories in other cases), the later one
# exactly 14 days before now; a third coffee order was refunded. V's one order is older
# than a year but within two.
ORDERS = """\
order_id,customer_id,placed_at,status,currency,total,sku,product,category,quantity,price
O1,T,2026-11-01T10:00:00Z,paid,EUR,300,CO-1,Espresso,coffee,1,300
O2,S,2026-11-10T10:00:00Z,paid,EUR,200,SH-1,Trail runner,shoes,1,200
O3,V,2025-01-10T12:00:00Z,paid,EUR,20,BO-1,Field guide,books,1,20
O4,K,2026-03-01T12:00:00Z,paid,EUR,40,CO-1,Espresso,Coffee,1,40
O5,K,2026-06-01T12:00:00Z,refunded,EUR,90,CO-1,Espresso,coffee,1,90
O6,K,2026-11-09T09:00:00Z,paid,EUR,160,CO-2,Filter papers,COFFEE,1,160
O7,F,2026-11-23T09:30:00Z,paid,EUR,80,CO-1,Espresso,coffee,1,80
"""


@pytest.fixture
def store(db: Workspace) -> Workspace:
    shutil.copytree(EXAMPLES, db.root / "segments")
    db.write("customers.csv", CUSTOMERS)
    db.write("orders.csv", ORDERS)
    result = db.run("import", "customers", "customers.csv", "--now", NOW)
    assert result.code == 0, result.stderr
    result = db.run("import", "orders", "orders.csv", "--now", NOW)
    assert result.code == 0, result.stderr
    return db


def members(store: Workspace, segment: str) -> list[str]:
    result = store.run("segments", "show", segment, "--now", NOW, "--json")
    assert result.code == 0, result.stderr
    document = result.json()
    assert document["count"] == len(document["members"])
    return sorted(member["id"] for member in document["members"])


def probe(store: Workspace, condition: str) -> list[str]:
    store.write("segments/probe.yaml", f"description: probe\n{condition}\n")
    return members(store, "probe")


EXAMPLE_ANSWERS = [
    ("test-accounts", ["S", "T"]),  # tags and email domains fold case
    ("subscribers", ["F", "N", "V"]),
    ("birthday-club", ["V"]),  # K is 14; S and T are test accounts
    ("active-buyers", ["K", "V"]),  # F's order is after now
    ("big-spenders-this-month", ["K"]),  # T (300) and S (200) are test accounts
    ("coffee-fans", ["K"]),  # Coffee and COFFEE are coffee; O5 was refunded
    ("feedback-due", ["K"]),  # 14 days ago is "less than 14d ago" (at or after now - 14d)
    ("loyal-drifting", []),
    ("never-bought", ["F", "N"]),
    ("new-customers", []),  # T and S only
    ("referral-ready", ["K"]),
    ("rfm-champions", []),
    ("vip", ["V"]),  # tagged VIP
]


@pytest.mark.parametrize(("segment", "expected"), EXAMPLE_ANSWERS,
                         ids=[name for name, _ in EXAMPLE_ANSWERS])
def test_example_segment(store: Workspace, segment: str, expected: list[str]) -> None:
    assert members(store, segment) == expected


# A top-level "has an order" (or "bought X") is a semi-join; another order (or line)
# aggregation under any:/not: reads only its own rows, so a buyer with none of those
# rows is still a member when the rest of the tree holds.
PRESENCE_CASES = [
    ("all: [{orders: {at_least: 1}}, {any: [{spent: {at_least: 100, within: 30d}}, "
     "{country: AT}]}]", ["K", "S", "T", "V"]),
    ("all: [{orders: {at_least: 1}}, {not: {spent: {at_least: 100, within: 30d}}}]", ["V"]),
    ("all: [{orders: {at_least: 1, within: 730d}}, {not: {orders: {at_least: 2, "
     "within: 365d}}}]", ["S", "T", "V"]),
    ("all: [{bought: {category: coffee}}, {not: {bought: {category: books, at_least: 2}}}]",
     ["K", "T"]),
    ("all: [{bought: {category: coffee}}, {any: [{bought: {category: shoes, at_least: 2}}, "
     "{country: de}]}]", ["K", "T"]),
]


@pytest.mark.parametrize(("condition", "expected"), PRESENCE_CASES,
                         ids=[c for c, _ in PRESENCE_CASES])
def test_presence_beside_another_aggregation(store: Workspace, condition: str,
                                             expected: list[str]) -> None:
    assert probe(store, condition) == expected


def test_count_and_funnel_agree_beside_a_semi_join(store: Workspace) -> None:
    # The funnel outer-joins every aggregation; count and show join the required ones
    # inner: both must find V (an order, none of it in the last 30 days, in AT).
    store.write("segments/probe.yaml", "description: probe\nall:\n"
                                       "  - orders: {at_least: 1}\n"
                                       "  - any: [{spent: {at_least: 100, within: 30d}}, "
                                       "{country: AT}]\n")
    counted = store.run("segments", "count", "probe", "--now", NOW, "--json").json()
    funnel = store.run("segments", "funnel", "probe", "--now", NOW, "--json").json()
    assert counted["count"] == funnel["steps"][-1]["remaining"] == 4
