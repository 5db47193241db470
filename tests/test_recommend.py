"""`mailer recommend` (issue 18, item 5) through the real CLI on both databases.

A store small enough to work every list out by hand (the oracle below, in the comments):
co-purchase first, highest summed pair count, ties by sku; then the favourite category's
bestsellers (favourite by units, bestseller by paid orders), ties by sku; never a product
already bought; at most 6. A refunded order and an order placed after now count for
nothing; a customer without a paid order, or who bought everything the rules could offer,
gets none. A second run replaces the table as a whole. The bounds (an order too big to
count for pairs, the neighbours kept per product) are pinned on a store made for them.
"""

from __future__ import annotations

from datetime import UTC, datetime

from mailer.store.customers import id_of_address
from mailer.store.insight.recommendations import (
    MAX_BASKET,
    NEIGHBOURS,
    Recommended,
    recommendations_of,
)
from tests.conftest import Workspace

NOW = "2026-11-23T10:00"  # Berlin: 09:00Z
NOW_UTC = datetime(2026, 11, 23, 9, tzinfo=UTC)

CUSTOMERS = """\
id,email
A,a@example.com
B,b@example.com
C,c@example.com
D,d@example.com
E,e@example.com
F,f@example.com
G,g@example.com
H,h@example.com
I,i@example.com
"""

# Paid orders by now and their distinct skus: O1 {K1 K2}, O2 {K1 K2 K3} (and a line
# without sku), O3 {K1 K3}, O4 {K2 K4}, O5 {B1 B2}, O6 {B1 ×3}, O8 {S1 S2}, O10 {B3},
# O11 {K7}, O12 {K8}, O13 {K9}, O14 {K0}. O7 is refunded and O9 placed after now.
# Pairs (orders holding both): K1–K2 2, K1–K3 2, K2–K3 1, K2–K4 1, B1–B2 1, S1–S2 1.
# Paid orders per sku: K1 3, K2 3, K3 2, K0 K4 K7 K8 K9 1 each; B1 2, B2 1, B3 1.
# Coffee bestsellers, ties by sku: K1 K2 K3 K0 K4 K7 K8 K9; books: B1 B2 B3.
ORDERS = """\
order_id,customer_id,placed_at,status,currency,total,sku,product,category,quantity,price
O1,A,2026-10-01T10:00:00Z,paid,EUR,20,K1,Espresso,coffee,1,10
O1,A,2026-10-01T10:00:00Z,paid,EUR,20,K2,Grinder,coffee,1,10
O2,B,2026-10-05T10:00:00Z,paid,EUR,40,K1,Espresso,coffee,1,10
O2,B,2026-10-05T10:00:00Z,paid,EUR,40,K2,Grinder,coffee,1,10
O2,B,2026-10-05T10:00:00Z,paid,EUR,40,K3,Filter papers,coffee,1,10
O2,B,2026-10-05T10:00:00Z,paid,EUR,40,,Gift wrap,,1,10
O3,C,2026-11-01T10:00:00Z,paid,EUR,20,K1,Espresso beans,coffee,1,10
O3,C,2026-11-01T10:00:00Z,paid,EUR,20,K3,Filter papers,coffee,1,10
O4,D,2026-10-10T10:00:00Z,paid,EUR,20,K2,Grinder,coffee,1,10
O4,D,2026-10-10T10:00:00Z,paid,EUR,20,K4,Mug,coffee,1,10
O5,E,2026-09-01T10:00:00Z,paid,EUR,20,B1,Field guide,books,1,10
O5,E,2026-09-01T10:00:00Z,paid,EUR,20,B2,Atlas,books,1,10
O6,A,2026-10-20T10:00:00Z,paid,EUR,30,B1,Field guide,books,3,10
O7,G,2026-11-10T10:00:00Z,refunded,EUR,20,K1,Old name,coffee,1,10
O7,G,2026-11-10T10:00:00Z,refunded,EUR,20,K5,Kettle,coffee,1,10
O8,B,2026-10-15T10:00:00Z,paid,EUR,20,S1,Trail runner,shoes,1,10
O8,B,2026-10-15T10:00:00Z,paid,EUR,20,S2,Socks,shoes,1,10
O9,D,2026-11-30T10:00:00Z,paid,EUR,20,K1,Future name,coffee,1,10
O9,D,2026-11-30T10:00:00Z,paid,EUR,20,K6,Scale,coffee,1,10
O10,E,2026-09-15T10:00:00Z,paid,EUR,10,B3,Cookbook,books,1,10
O11,C,2026-10-25T10:00:00Z,paid,EUR,10,K7,Tamper,coffee,1,10
O12,H,2026-10-02T10:00:00Z,paid,EUR,10,K8,Dripper,coffee,1,10
O13,I,2026-10-03T10:00:00Z,paid,EUR,10,K9,Carafe,coffee,1,10
O14,H,2026-10-04T10:00:00Z,paid,EUR,10,K0,Cups,coffee,1,10
"""

# The oracle, worked out from the counts above.
EXPECTED = {
    # bought K1 K2 B1; favourite books (3 units against 2). Co-purchase: K3 2 (with K1)
    # + 1 (with K2) = 3, B2 1, K4 1 (tie: B2 first). Books not bought nor chosen: B3.
    "A": ["K3", "B2", "K4", "B3"],
    # bought K1 K2 K3 S1 S2; favourite coffee. Co-purchase: K4 (with K2); the rest of
    # every pair is bought. Then coffee: K0 K7 K8 K9.
    "B": ["K4", "K0", "K7", "K8", "K9"],
    # bought K1 K3 K7. Co-purchase: K2 2 + 1. Coffee: K0 K4 K8 K9.
    "C": ["K2", "K0", "K4", "K8", "K9"],
    # bought K2 K4 (O9 is after now: K6 exists nowhere). K1 2, K3 1; coffee K0 K7 K8 K9.
    "D": ["K1", "K3", "K0", "K7", "K8", "K9"],
    # E bought all three books (its only category): nothing is left. F has no order, G
    # only a refunded one (so K5 is no one's, and K1–K5 no pair).
    # bought K8 and K0 in two orders: no pair; the six other coffees.
    "H": ["K1", "K2", "K3", "K4", "K7", "K9"],
    # bought K9: coffee's first six not bought; K8 is seventh.
    "I": ["K1", "K2", "K3", "K0", "K4", "K7"],
}
PRODUCTS = {"K0": "Cups", "K1": "Espresso beans", "K2": "Grinder", "K3": "Filter papers",
            "K4": "Mug", "K7": "Tamper", "K8": "Dripper", "K9": "Carafe", "B2": "Atlas",
            "B3": "Cookbook"}


def _store(db: Workspace, orders: str = ORDERS, customers: str = CUSTOMERS) -> Workspace:
    db.write("customers.csv", customers)
    db.write("orders.csv", orders)
    assert db.run("import", "customers", "customers.csv", "--now", NOW).code == 0
    result = db.run("import", "orders", "orders.csv", "--now", NOW)
    assert result.code == 0, result.stderr
    return db


def _stored(db: Workspace) -> dict[str, list[tuple[int, str, str | None, str | None]]]:
    rows = db.query("SELECT c.store_id, r.rank, r.sku, r.product, r.category "
                    "FROM recommendations r JOIN customers c ON c.id = r.customer_id "
                    "ORDER BY c.store_id, r.rank")
    found: dict[str, list[tuple[int, str, str | None, str | None]]] = {}
    for store_id, rank, sku, product, category in rows:
        found.setdefault(store_id, []).append((rank, sku, product, category))
    return found


def test_recommendations_follow_the_hand_computed_oracle(db: Workspace) -> None:
    _store(db)
    result = db.run("recommend", "--now", NOW, "--json")
    assert result.code == 0, result.stderr
    assert result.json() == {
        "now": "2026-11-23T09:00:00Z", "customers": 6, "recommendations": 32,
        "from_co_purchase": 7, "from_category": 25,
        # K0–K4, K7–K9, B1–B3, S1, S2 (K5 only refunded, K6 only after now)
        "products": 13,
        # both directions of the six pairs
        "pairs": 12,
        "limits": {"per_customer": 6, "neighbours": NEIGHBOURS, "max_basket": MAX_BASKET}}
    stored = _stored(db)
    assert {customer: [sku for _, sku, _, _ in rows] for customer, rows in stored.items()} \
        == EXPECTED
    for rows in stored.values():
        assert [rank for rank, _, _, _ in rows] == list(range(1, len(rows) + 1))
        for _, sku, product, category in rows:
            # the name of the latest paid line (O3 renamed K1; O7 and O9 do not count)
            assert product == PRODUCTS[sku]
            assert category == ("books" if sku.startswith("B") else "coffee")
    computed = db.query("SELECT DISTINCT computed_at FROM recommendations")
    assert len(computed) == 1
    assert str(computed[0][0]).startswith("2026-11-23 09:00:00")


def test_the_text_output_sums_up_the_run(db: Workspace) -> None:
    _store(db)
    result = db.run("recommend", "--now", NOW)
    assert result.code == 0, result.stderr
    assert result.stdout.splitlines() == [
        "recommendations as of 2026-11-23T09:00:00Z: 32 for 6 customers (7 bought together "
        "with what they bought, 25 from their favourite category)",
        "13 products in paid orders, 12 co-purchase pairs kept"]


def test_a_second_run_replaces_every_row(db: Workspace) -> None:
    _store(db)
    assert db.run("recommend", "--now", NOW).code == 0
    # By 1 October 12:00 only O5, O10 (E's books) and O1 (A's K1 and K2) were paid: two
    # pairs, each bought by the one who holds it; coffee holds nothing else, E bought
    # every book.
    result = db.run("recommend", "--now", "2026-10-01T14:00", "--json")
    assert result.code == 0, result.stderr
    document = result.json()
    assert (document["customers"], document["recommendations"], document["products"],
            document["pairs"]) == (0, 0, 5, 4)
    assert db.query("SELECT count(*) FROM recommendations")[0][0] == 0


def test_recommendations_of_reads_them_ranked(db: Workspace) -> None:
    _store(db)
    assert db.run("recommend", "--now", NOW).code == 0
    engine = db.engine()
    try:
        ids = {name: id_of_address(engine, f"{name.lower()}@example.com") for name in "ADF"}
        with engine.connect() as conn:
            found = recommendations_of(conn, [i for i in ids.values() if i is not None],
                                       now=NOW_UTC)
    finally:
        engine.dispose()
    assert found == {
        ids["A"]: [Recommended("K3", "Filter papers", "coffee"),
                   Recommended("B2", "Atlas", "books"), Recommended("K4", "Mug", "coffee"),
                   Recommended("B3", "Cookbook", "books")],
        ids["D"]: [Recommended(sku, PRODUCTS[sku], "coffee") for sku in EXPECTED["D"]]}
    assert found[ids["A"]][0].as_json() == {"sku": "K3", "product": "Filter papers",
                                            "category": "coffee"}


def _basket(order: str, customer: str, skus: list[str], day: int) -> list[str]:
    return [f"{order},{customer},2026-10-{day:02d}T10:00:00Z,paid,EUR,{len(skus)},{sku},"
            f"Item {sku},bulk,1,1" for sku in skus]


def test_a_basket_too_big_adds_no_pair_and_each_product_keeps_its_neighbours(
        db: Workspace) -> None:
    big = [f"Z{n:02d}" for n in range(MAX_BASKET + 1)]
    lines = [ORDERS.splitlines()[0], *_basket("W1", "A", big, 1),
             *_basket("W2", "B", big[:MAX_BASKET], 2), *_basket("W3", "C", ["Z00"], 3)]
    _store(db, "\n".join(lines) + "\n")
    document = db.run("recommend", "--now", NOW, "--json").json()
    # W1 holds one product too many: only W2's pairs, NEIGHBOURS of them per product
    assert document["pairs"] == MAX_BASKET * min(NEIGHBOURS, MAX_BASKET - 1)
    stored = _stored(db)
    # C bought Z00: its neighbours, all together once (in W2), by sku
    assert [sku for _, sku, _, _ in stored["C"]] == ["Z01", "Z02", "Z03", "Z04", "Z05", "Z06"]
    # B bought Z00–Z49: the bulk bestseller left is Z50 (in W1 only)
    assert [sku for _, sku, _, _ in stored["B"]] == ["Z50"]
    assert "A" not in stored  # bought every bulk product


def test_computed_at_is_utc(db: Workspace) -> None:
    _store(db)
    assert db.run("recommend", "--now", NOW).code == 0
    engine = db.engine()
    try:
        from sqlalchemy import select

        from mailer.store.models import Recommendation

        with engine.connect() as conn:
            moments = set(conn.execute(select(Recommendation.computed_at)).scalars())
    finally:
        engine.dispose()
    assert moments == {datetime(2026, 11, 23, 9, tzinfo=UTC)}


def test_a_product_bought_after_the_computation_is_not_recommended(db: Workspace) -> None:
    """The table is a day old at most: D's order of K1 on the 30th (after the run, before
    the mail) takes K1 off D's list when read on the 30th, not when read on the 23rd."""
    _store(db)
    assert db.run("recommend", "--now", NOW).code == 0
    engine = db.engine()
    try:
        d = id_of_address(engine, "d@example.com")
        assert d is not None
        with engine.connect() as conn:
            before = recommendations_of(conn, [d], now=NOW_UTC)[d]
            after = recommendations_of(conn, [d], now=datetime(2026, 11, 30, 12, tzinfo=UTC))[d]
    finally:
        engine.dispose()
    assert [r.sku for r in before] == EXPECTED["D"] and "K1" in EXPECTED["D"]
    assert [r.sku for r in after] == [sku for sku in EXPECTED["D"] if sku != "K1"]
