"""`mailer import orders`: lines written together, money exact, bad rows (DESIGN §5)."""

from __future__ import annotations

import json

from tests.conftest import Workspace

NOW = ["--now", "2026-11-23T10:00"]
HEADER = ("order_id,customer_id,placed_at,status,currency,total,sku,product,category,quantity,"
          "price\n")


def with_customers(db: Workspace) -> None:
    db.write("c.csv", "id,email\nC1,c1@example.com\nC2,c2@example.com\n")
    assert db.run("import", "customers", "c.csv", *NOW).code == 0


def orders(db: Workspace) -> dict[str, tuple[object, ...]]:
    rows = db.query("SELECT o.store_id, c.store_id AS customer, o.placed_at, o.status, "
                    "o.currency, o.total_minor FROM orders o JOIN customers c "
                    "ON c.id = o.customer_id ORDER BY o.store_id")
    return {row.store_id: tuple(row)[1:] for row in rows}


def lines(db: Workspace, order: str) -> list[tuple[object, ...]]:
    return [tuple(row) for row in db.query(
        "SELECT l.position, l.sku, l.category, l.quantity, l.price_minor FROM order_lines l "
        "JOIN orders o ON o.id = l.order_id WHERE o.store_id = :order ORDER BY l.position",
        order=order)]


def test_lines_of_an_order_are_written_together(db: Workspace) -> None:
    with_customers(db)
    db.write("o.csv", HEADER +
             "O1,C1,2026-11-20T12:00,paid,EUR,59.90,SH-1,Runner,shoes,1,49.90\n"
             "O1,C1,2026-11-20T12:00,paid,EUR,59.90,SH-1,Runner,shoes,1,10.00\n"
             "O2,C2,2026-11-21T08:00Z,refunded,JPY,1500,BO-1,Book,books,3,500\n")
    result = db.run("import", "orders", "o.csv", "--json", *NOW)
    assert result.json() == {"file": "o.csv", "written": 3, "skipped": 0, "errors": []}
    stored = orders(db)
    assert stored["O1"][0] == "C1" and stored["O1"][2:] == ("paid", "EUR", 5990)
    assert str(stored["O1"][1]).startswith("2026-11-20 11:00")  # Berlin noon in UTC
    assert stored["O2"][2:] == ("refunded", "JPY", 1500)
    # The same sku twice is two lines, prices in minor units.
    assert lines(db, "O1") == [(1, "SH-1", "shoes", 1, 4990), (2, "SH-1", "shoes", 1, 1000)]
    assert lines(db, "O2") == [(1, "BO-1", "books", 3, 500)]


def test_a_line_whose_total_disagrees_skips_its_whole_order(db: Workspace) -> None:
    with_customers(db)
    db.write("o.csv", HEADER +
             "O1,C1,2026-11-20T12:00,paid,EUR,59.90,A,,,1,49.90\n"
             "O1,C1,2026-11-20T12:00,paid,EUR,49.90,B,,,1,10.00\n"
             "O1,C1,2026-11-20T12:00,paid,EUR,59.90,C,,,1,0\n"
             "O2,C2,2026-11-21T08:00,paid,EUR,5,D,,,1,5\n")
    result = db.run("import", "orders", "o.csv", *NOW)
    assert result.code == 1
    assert result.stderr.splitlines() == [
        "o.csv:2: order O1 not imported: line 3 is bad",
        "o.csv:3: total 49.90 disagrees with 59.90 on line 2 of order O1",
        "o.csv:4: order O1 not imported: line 3 is bad",
    ]
    assert list(orders(db)) == ["O2"]


def test_unknown_customer_and_bad_values(db: Workspace) -> None:
    with_customers(db)
    db.write("o.csv", HEADER +
             "O1,C9,2026-11-20T12:00,paid,EUR,10,A,,,1,10\n"
             "O2,C1,yesterday,paid,EUR,10,A,,,1,10\n"
             "O3,C1,2026-11-20T12:00,shipped,EUR,10,A,,,1,10\n"
             "O4,C1,2026-11-20T12:00,paid,EUR,10.999,A,,,1,10\n"
             "O5,C1,2026-11-20T12:00,paid,EUR,10,A,,,0,10\n"
             "O6,C1,2026-11-20T12:00,paid,EUR,10,A,,,1,10\n")
    result = db.run("import", "orders", "o.csv", "--json", *NOW)
    assert result.code == 1
    assert [(e["line"], e["reason"]) for e in result.json()["errors"]] == [
        (3, "placed_at: expected a date-time like 2026-11-27T08:00 or a date like 2026-11-27, "
            "got 'yesterday'"),
        (4, "status: expected paid, refunded or cancelled, got 'shipped'"),
        (5, "total: amount 10.999 has more than 2 decimals for EUR"),
        (6, "quantity: expected a whole number of at least 1, got '0'"),
        (2, "unknown customer 'C9': import customers first"),
    ]
    assert list(orders(db)) == ["O6"]


def test_every_problem_of_an_order_line_is_reported(db: Workspace) -> None:
    with_customers(db)
    db.write("o.csv", HEADER +
             "P1,C1,2026-02-30,shipped,EUR,10.999,A,,,0,x\n"
             "P2,C1,2026-11-20T12:00,paid,EUR,10,A,,,1,10\n")
    result = db.run("import", "orders", "o.csv", *NOW)
    assert result.code == 1
    assert result.stderr.splitlines() == [
        "o.csv:2: placed_at: 2026-02-30 is not a date",
        "o.csv:2: status: expected paid, refunded or cancelled, got 'shipped'",
        "o.csv:2: total: amount 10.999 has more than 2 decimals for EUR",
        "o.csv:2: quantity: expected a whole number of at least 1, got '0'",
        "o.csv:2: price: expected an amount like 12.34, got 'x'",
    ]
    assert result.stdout.splitlines()[0] == "o.csv: 1 order line written, 1 skipped"
    assert list(orders(db)) == ["P2"]


def test_every_bad_line_of_an_order_reports_its_own_problems(db: Workspace) -> None:
    with_customers(db)
    db.write("o.csv", HEADER +
             "Q1,C1,2026-11-20T12:00,paid,EUR,30,A,,,1,10\n"
             "Q1,C1,2026-11-20T12:00,paid,EUR,30,B,,,x,10\n"
             "Q1,C1,2026-11-20T12:00,paid,EUR,30,C,,,0,y\n")
    result = db.run("import", "orders", "o.csv", *NOW)
    assert result.code == 1
    assert result.stderr.splitlines() == [
        "o.csv:2: order Q1 not imported: line 3 is bad",
        "o.csv:3: quantity: expected a whole number of at least 1, got 'x'",
        "o.csv:4: quantity: expected a whole number of at least 1, got '0'",
        "o.csv:4: price: expected an amount like 12.34, got 'y'",
    ]
    assert result.stdout.splitlines()[0] == "o.csv: 0 order lines written, 3 skipped"
    assert orders(db) == {}


def test_reimport_replaces_lines_and_status(db: Workspace) -> None:
    with_customers(db)
    db.write("a.csv", HEADER + "O1,C1,2026-11-20T12:00,paid,EUR,30,A,,,1,10\n"
                               "O1,C1,2026-11-20T12:00,paid,EUR,30,B,,,1,20\n")
    db.write("b.csv", HEADER + "O1,C1,2026-11-20T12:00,refunded,EUR,30,C,,,1,30\n")
    assert db.run("import", "orders", "a.csv", *NOW).code == 0
    assert db.run("import", "orders", "b.csv", *NOW).code == 0
    assert orders(db)["O1"][2] == "refunded"
    assert lines(db, "O1") == [(1, "C", None, 1, 3000)]


def test_lines_of_one_order_must_be_adjacent(db: Workspace) -> None:
    with_customers(db)
    db.write("o.csv", HEADER + "O1,C1,2026-11-20T12:00,paid,EUR,30,A,,,1,10\n"
                               "O2,C2,2026-11-20T12:00,paid,EUR,5,B,,,1,5\n"
                               "O1,C1,2026-11-20T12:00,paid,EUR,30,C,,,1,20\n")
    result = db.run("import", "orders", "o.csv", *NOW)
    assert result.code == 1
    assert result.stderr.strip() == (
        "o.csv:4: order O1 already appeared at line 2: the lines of one order must be adjacent")
    assert lines(db, "O1") == [(1, "A", None, 1, 1000)]


def test_json_lines_order_with_items(db: Workspace) -> None:
    with_customers(db)
    order = {"order_id": "J1", "customer_id": "C2", "placed_at": "2026-11-01", "total": 12.5,
             "items": [{"sku": "X", "category": "Coffee", "quantity": 2, "price": "6.25"}]}
    db.write("o.jsonl", json.dumps(order) + "\n")
    result = db.run("import", "orders", "o.jsonl", *NOW)
    assert result.code == 0, result.stderr
    assert orders(db)["J1"][2:] == ("paid", "EUR", 1250)
    assert lines(db, "J1") == [(1, "X", "Coffee", 2, 625)]


def test_strict_orders_write_nothing(db: Workspace) -> None:
    with_customers(db)
    db.write("o.csv", HEADER + "O1,C1,2026-11-20T12:00,paid,EUR,30,A,,,1,10\n"
                               "O2,C9,2026-11-20T12:00,paid,EUR,5,B,,,1,5\n")
    result = db.run("import", "orders", "o.csv", "--strict", *NOW)
    assert result.code == 1
    assert orders(db) == {}


def test_the_file_stopping_inside_an_order_keeps_earlier_orders_only(db: Workspace) -> None:
    with_customers(db)
    db.write("o.csv", HEADER.encode() +
             b"O1,C1,2026-11-20T12:00,paid,EUR,5,A,,,1,5\n"
             b"O2,C1,2026-11-20T12:00,paid,EUR,30,A,,,1,10\n"
             b"O2,C1,2026-11-20T12:00,paid,EUR,30,B,Caf\xe9,,1,20\n")
    result = db.run("import", "orders", "o.csv", *NOW)
    assert result.code == 1
    assert result.stderr.splitlines() == [
        "o.csv:4: not UTF-8 text: byte 0xE9 at column 41; save the file as UTF-8 and import "
        "again",
        "o.csv:3: order O2 not imported: the file stops at line 4",
    ]
    assert list(orders(db)) == ["O1"]


def test_missing_columns_and_unused_columns(db: Workspace) -> None:
    with_customers(db)
    db.write("a.csv", "order_id,customer_id,placed_at\nO1,C1,2026-11-20\n")
    result = db.run("import", "orders", "a.csv", *NOW)
    assert result.code == 1
    assert result.stderr.strip() == "a.csv:1: required column 'total' is missing"
    db.write("b.csv", "order_id,customer_id,placed_at,total,shipping\nO1,C1,2026-11-20,5,DHL\n")
    result = db.run("import", "orders", "b.csv", *NOW)
    assert result.code == 0
    assert "b.csv:1: warning: column 'shipping' is not used" in result.stderr


# --- edge cases (issue 15, item 11): every one a row error, never a traceback -------------


def test_amounts_and_quantities_that_do_not_fit_are_row_errors(db: Workspace) -> None:
    with_customers(db)
    db.write("o.csv", HEADER +
             "O1,C1,2026-11-20T12:00,paid,EUR,1e400,A,,,1,5\n"
             "O2,C1,2026-11-20T12:00,paid,EUR,Infinity,A,,,1,5\n"
             "O3,C1,2026-11-20T12:00,paid,EUR,NaN,A,,,1,5\n"
             "O4,C1,2026-11-20T12:00,paid,EUR,99999999999999999999,A,,,1,5\n"
             "O5,C1,2026-11-20T12:00,paid,JPY,5,A,,,1,1e30\n"
             "O6,C1,2026-11-20T12:00,paid,EUR,5,A,,,99999999999999999999,5\n"
             "NaN,C1,2026-11-20T12:00,paid,EUR,5,A,,,1,5\n"
             "O8,1e400,2026-11-20T12:00,paid,EUR,5,A,,,1,5\n"
             "O9,C1,2026-11-20T12:00,paid,EUR,999999999999.99,A,,,1000000000,5\n")
    result = db.run("import", "orders", "o.csv", "--json", *NOW)
    assert result.code == 1
    assert [(e["line"], e["reason"]) for e in result.json()["errors"]] == [
        (2, "total: 1e400 is too large (at most 999999999999.99 EUR)"),
        (3, "total: expected an amount like 12.34, got 'Infinity'"),
        (4, "total: expected an amount like 12.34, got 'NaN'"),
        (5, "total: 99999999999999999999 is too large (at most 999999999999.99 EUR)"),
        (6, "price: 1e30 is too large (at most 999999999999 JPY)"),
        (7, "quantity: expected a whole number from 1 to 1000000000, "
            "got '99999999999999999999'"),
        (8, "order_id: 'NaN' is a placeholder for a missing number, not an id"),
        (9, "customer_id: '1e400' is a number in scientific notation, as a spreadsheet writes "
            "a long number it has rounded: export the column as text (or use JSON Lines)"),
    ]
    assert orders(db)["O9"][2:] == ("paid", "EUR", 99999999999999)
    assert list(orders(db)) == ["O9"]


def test_json_orders_with_numbers_that_do_not_fit(db: Workspace) -> None:
    with_customers(db)
    good = {"order_id": "J9", "customer_id": "C1", "placed_at": "2026-11-01", "total": 5,
            "items": [{"sku": "X", "quantity": 1, "price": 5}]}
    db.write("o.jsonl", "".join(line + "\n" for line in [
        '{"order_id": 1e400, "customer_id": "C1", "placed_at": "2026-11-01", "total": 5}',
        '{"order_id": "J2", "customer_id": "C1", "placed_at": "2026-11-01", "total": 1e400}',
        '{"order_id": "J3", "customer_id": "C1", "placed_at": "2026-11-01", "total": NaN}',
        '{"order_id": "J4", "customer_id": "C1", "placed_at": "2026-11-01", "total": 1e300}',
        '{"order_id": "J5", "customer_id": "C1", "placed_at": "2026-11-01", "total": 5, '
        '"items": [{"quantity": 12345678901234567890}]}',
        json.dumps(good),
    ]))
    result = db.run("import", "orders", "o.jsonl", "--json", *NOW)
    assert result.code == 1
    assert [(e["line"], e["reason"]) for e in result.json()["errors"]] == [
        (1, "not valid JSON: the number 1e400 is out of range"),
        (2, "not valid JSON: the number 1e400 is out of range"),
        (3, "not valid JSON: NaN is not a JSON number"),
        (4, "total: 1e+300 is too large (at most 999999999999.99 EUR)"),
        (5, "not valid JSON: the number 12345678901234567890 has more than 19 digits "
            "(write long ids as strings)"),
    ]
    assert list(orders(db)) == ["J9"]
