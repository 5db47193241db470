"""`mailer import customers`: formats, upsert, consent, identity, bad rows (DESIGN §5)."""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from mailer.store.db import database_url, open_database
from mailer.store.importer import ImportReport, import_file
from mailer.store.records import Context
from tests.conftest import Workspace

NOW = ["--now", "2026-11-23T10:00"]


def customers(db: Workspace) -> dict[str, dict[str, object]]:
    rows = db.query("SELECT store_id, email, email_key, first_name, last_name, birth_date, "
                    "birth_md, timezone, city, tags, attributes, consent, consent_source, "
                    "signed_up_at FROM customers ORDER BY store_id")
    return {row.store_id: row._asdict() for row in rows}


def test_import_writes_customers_with_their_columns(db: Workspace) -> None:
    db.write("c.csv", "id,email,first_name,last_name,birth_date,timezone,city,tags,signed_up_at\n"
                      "C1,Anna@Example.com,Anna,Müller,1990-02-28,Europe/Berlin,Köln,vip; app ,"
                      "2026-01-05T09:30\n"
                      "C2,li@example.org,伟,王,,Asia/Shanghai,,,\n")
    result = db.run("import", "customers", "c.csv", "--json", *NOW)
    assert result.code == 0, result.stderr
    assert result.json() == {"file": "c.csv", "written": 2, "skipped": 0, "errors": []}
    stored = customers(db)
    assert stored["C1"]["email"] == "Anna@example.com"
    assert stored["C1"]["email_key"] == "anna@example.com"
    assert str(stored["C1"]["birth_date"]) == "1990-02-28"
    assert stored["C1"]["birth_md"] == "02-28"
    assert stored["C1"]["consent"] == "subscribed"
    assert stored["C1"]["consent_source"] == "import"
    tags = stored["C1"]["tags"]
    assert (json.loads(tags) if isinstance(tags, str) else tags) == ["vip", "app"]
    # 09:30 in Berlin (no offset = workspace zone) is 08:30 UTC.
    assert str(stored["C1"]["signed_up_at"]).startswith("2026-01-05 08:30")
    assert stored["C2"]["first_name"] == "伟" and stored["C2"]["birth_date"] is None


def test_upsert_keeps_absent_columns_and_clears_empty_cells(db: Workspace) -> None:
    db.write("a.csv", "id,email,first_name,city,loyalty\nC1,a@example.com,Anna,Berlin,gold\n")
    db.write("b.csv", "id,email,city,loyalty\nC1,a@example.com,,\n")
    assert db.run("import", "customers", "a.csv", *NOW).code == 0
    assert db.run("import", "customers", "b.csv", *NOW).code == 0
    row = customers(db)["C1"]
    assert row["first_name"] == "Anna"  # absent from b.csv: kept
    assert row["city"] is None  # empty cell: cleared
    attributes = row["attributes"]
    assert (json.loads(attributes) if isinstance(attributes, str) else attributes) is None


def test_custom_columns_become_attributes(db: Workspace) -> None:
    db.write("a.csv", "id,email,loyalty_tier,shoe_size\nC1,a@example.com,gold,42\n")
    assert db.run("import", "customers", "a.csv", *NOW).code == 0
    attributes = customers(db)["C1"]["attributes"]
    parsed = json.loads(attributes) if isinstance(attributes, str) else attributes
    assert parsed == {"loyalty_tier": "gold", "shoe_size": "42"}


def test_consent_rules_on_import(db: Workspace) -> None:
    db.write("a.csv", "id,email,subscribed\nN1,n1@example.com,\nN2,n2@example.com,false\n"
                      "N3,n3@example.com,true\nN4,n4@example.com,\n")
    assert db.run("import", "customers", "a.csv", *NOW).code == 0
    assert db.run("unsubscribe", "n4@example.com", *NOW).code == 0
    db.write("b.csv", "id,email,subscribed\nN1,n1@example.com,false\nN2,n2@example.com,true\n"
                      "N3,n3@example.com,\nN4,n4@example.com,true\n")
    assert db.run("import", "customers", "b.csv", *NOW).code == 0
    consent = {key: row["consent"] for key, row in customers(db).items()}
    assert consent == {"N1": "not_subscribed", "N2": "subscribed", "N3": "subscribed",
                       "N4": "unsubscribed"}


def test_case_and_unicode_variants_are_one_person(db: Workspace) -> None:
    db.write("a.csv", "id,email\nC1,John@Example.com\nC2,JOHN@example.COM\n")
    result = db.run("import", "customers", "a.csv", "--json", *NOW)
    assert result.code == 1
    assert result.json()["errors"] == [
        {"line": 3, "reason": "email JOHN@example.com is already used by customer C1"}]
    assert list(customers(db)) == ["C1"]


def test_duplicate_email_under_another_id_in_a_later_file(db: Workspace) -> None:
    db.write("a.csv", "id,email\nC1,same@example.com\n")
    db.write("b.csv", "id,email\nC2,Same@example.com\nC3,other@example.com\n")
    db.run("import", "customers", "a.csv", *NOW)
    result = db.run("import", "customers", "b.csv", *NOW)
    assert result.code == 1
    assert result.stderr.splitlines()[0] == (
        "b.csv:2: email Same@example.com is already used by customer C1")
    assert list(customers(db)) == ["C1", "C3"]


def test_bad_rows_are_reported_with_their_line_and_skipped(db: Workspace) -> None:
    db.write("a.csv", "id,email,first_name,birth_date,timezone\n"
                      "B1,no-at-sign,A,,\n"
                      "B2,b2@example.com,\"Evil\r\nName\",,\n"
                      "B3,b3@example.com,C,12/03/1990,\n"
                      "B4,b4@example.com,D,,Europe/Berln\n"
                      ",b5@example.com,E,,\n"
                      "B6,b6@example.com,F,1992-02-29,Pacific/Kiritimati\n")
    result = db.run("import", "customers", "a.csv", *NOW)
    assert result.code == 1
    assert result.stderr.splitlines() == [
        "a.csv:2: invalid email 'no-at-sign': An email address must have an @-sign.",
        "a.csv:3: first_name: contains a control character",
        "a.csv:5: birth_date: expected YYYY-MM-DD, got '12/03/1990'",
        "a.csv:6: timezone: unknown time zone 'Europe/Berln' (did you mean Europe/Berlin?)",
        "a.csv:7: id is missing",
    ]
    assert result.stdout.splitlines()[0] == "a.csv: 1 row written, 5 skipped"
    assert list(customers(db)) == ["B6"]


def test_every_problem_of_a_row_is_reported_in_column_order(db: Workspace) -> None:
    db.write("a.csv", "id,email,birth_date,timezone,subscribed\n"
                      "M1,m1@example.com,1990-02-30,Europe/Berln,perhaps\n"
                      "M2,no-at-sign,1991-13-01,,\n"
                      ",m3@example.com,,,yes\n"
                      "M4,m4@example.com,1990-02-28,,\n")
    result = db.run("import", "customers", "a.csv", *NOW)
    assert result.code == 1
    assert result.stderr.splitlines() == [
        "a.csv:2: birth_date: 1990-02-30 is not a date",
        "a.csv:2: timezone: unknown time zone 'Europe/Berln' (did you mean Europe/Berlin?)",
        "a.csv:2: subscribed: expected true or false, got 'perhaps'",
        "a.csv:3: invalid email 'no-at-sign': An email address must have an @-sign.",
        "a.csv:3: birth_date: 1991-13-01 is not a date",
        "a.csv:4: id is missing",
    ]
    assert result.stdout.splitlines()[0] == "a.csv: 1 row written, 3 skipped"
    assert list(customers(db)) == ["M4"]
    as_json = db.run("import", "customers", "a.csv", "--json", *NOW).json()
    assert as_json["skipped"] == 3
    assert [e["line"] for e in as_json["errors"]] == [2, 2, 2, 3, 3, 4]


def test_strict_writes_nothing_when_a_row_is_bad(db: Workspace) -> None:
    db.write("a.csv", "id,email\nS1,s1@example.com\nS2,broken\nS3,s3@example.com\n")
    result = db.run("import", "customers", "a.csv", "--strict", "--json", *NOW)
    assert result.code == 1
    assert result.json() == {"file": "a.csv", "written": 0, "skipped": 1,
                             "errors": [{"line": 3, "reason": "invalid email 'broken': "
                                         "An email address must have an @-sign."}]}
    assert customers(db) == {}


def test_misspelt_column_stops_the_file_before_anything_is_written(db: Workspace) -> None:
    db.write("a.csv", "id,email,birth_dat\nC1,a@example.com,1990-01-01\n")
    result = db.run("import", "customers", "a.csv", "--json", *NOW)
    assert result.code == 1
    assert result.json()["error"] == {
        "message": "unknown column 'birth_dat': did you mean birth_date?",
        "path": "a.csv", "line": 1}
    assert customers(db) == {}


def test_missing_required_column(db: Workspace) -> None:
    db.write("a.csv", "id,first_name\nC1,Anna\n")
    result = db.run("import", "customers", "a.csv", *NOW)
    assert result.code == 1
    assert "a.csv:1: required column 'email' is missing" in result.stderr
    assert customers(db) == {}


def test_short_custom_columns_are_not_taken_for_typos(db: Workspace) -> None:
    db.write("a.csv", "id,email,vip,tier\nC1,a@example.com,yes,gold\n")
    assert db.run("import", "customers", "a.csv", *NOW).code == 0


def test_unclosed_quote_stops_the_import_and_keeps_rows_before_it(db: Workspace) -> None:
    db.write("a.csv", 'id,email\nQ1,q1@example.com\nQ2,"q2@example.com\nQ3,q3@example.com\n')
    result = db.run("import", "customers", "a.csv", *NOW)
    assert result.code == 1
    assert "a.csv:3: broken CSV: a quoted value is never closed" in result.stderr
    assert list(customers(db)) == ["Q1"]


def test_a_byte_that_is_not_utf8_stops_the_import_at_its_line(db: Workspace) -> None:
    db.write("a.csv", b"id,email,city\nU1,u1@example.com,Berlin\nU2,u2@example.com,K\xf6ln\n"
                      b"U3,u3@example.com,Bonn\n")
    result = db.run("import", "customers", "a.csv", *NOW)
    assert result.code == 1
    assert result.stderr.splitlines()[0] == (
        "a.csv:3: not UTF-8 text: byte 0xF6 at column 20; save the file as UTF-8 and import again")
    assert list(customers(db)) == ["U1"]


def test_bom_and_quoted_multiline_values_keep_physical_line_numbers(db: Workspace) -> None:
    db.write("a.csv", "\ufeffid,email,city\nM1,m1@example.com,\"Two\nLines\"\nM2,bad,X\n"
                      "M3,m3@example.com,Bonn\n")
    result = db.run("import", "customers", "a.csv", *NOW)
    # A line break inside a name or city could reach a mail header: refused.
    assert result.stderr.splitlines() == [
        "a.csv:2: city: contains a control character",
        "a.csv:4: invalid email 'bad': An email address must have an @-sign.",
    ]
    assert list(customers(db)) == ["M3"]


def test_json_lines_with_typed_attributes(db: Workspace) -> None:
    db.write("a.jsonl", "\n".join([
        json.dumps({"id": "J1", "email": "j1@example.com", "tags": ["vip", "app"],
                    "subscribed": False, "attributes": {"shoe_size": 42, "member": True}}),
        json.dumps({"id": "J2", "email": "j2@example.com", "birth_dat": "1990-01-01"}),
        "{not json",
    ]) + "\n")
    result = db.run("import", "customers", "a.jsonl", "--json", *NOW)
    assert result.json()["errors"] == [
        {"line": 2, "reason": "unknown field 'birth_dat': did you mean birth_date?"},
        {"line": 3, "reason": "not valid JSON: Expecting property name enclosed in double quotes"},
    ]
    row = customers(db)["J1"]
    attributes = row["attributes"]
    assert (json.loads(attributes) if isinstance(attributes, str) else attributes) == {
        "shoe_size": 42, "member": True}
    assert row["consent"] == "not_subscribed"


def test_standard_input_with_format(db: Workspace) -> None:
    line = json.dumps({"id": "P1", "email": "p1@example.com"})
    result = db.run("import", "customers", "-", "--format", "jsonl", *NOW, stdin=line + "\n")
    assert result.code == 0, result.stderr
    assert list(customers(db)) == ["P1"]


def test_missing_file_is_a_user_error(ws: Workspace) -> None:
    result = ws.run("import", "customers", "nope.csv", "--json")
    assert result.code == 1
    assert result.json() == {"error": {"message": "nope.csv: no such file", "path": None,
                                       "line": None}}


def test_many_rows_stream_in_batches(db: Workspace) -> None:
    rows = "".join(f"C{i:05d},c{i}@example.com,Name{i}\n" for i in range(2500))
    db.write("a.csv", "id,email,first_name\n" + rows + "C00007,dup@example.com,Again\n")
    result = db.run("import", "customers", "a.csv", "--json", *NOW)
    assert result.json()["written"] == 2501
    assert len(customers(db)) == 2500
    assert customers(db)["C00007"]["email"] == "dup@example.com"  # the later row wins


def test_strict_and_a_file_that_stops_write_nothing(db: Workspace) -> None:
    db.write("a.csv", b"id,email\nS1,s1@example.com\nS2,s2@exam\xffple.com\n")
    result = db.run("import", "customers", "a.csv", "--strict", *NOW)
    assert result.code == 1
    assert result.stdout.strip() == "a.csv: 0 rows written, 1 skipped (--strict: nothing written)"
    assert customers(db) == {}


# --- edge cases (issue 15, item 11): every one a row error, never a traceback -------------


def test_json_numbers_that_do_not_fit_are_row_errors(db: Workspace) -> None:
    db.write("a.jsonl", "".join(line + "\n" for line in [
        '{"id": 1e400, "email": "a@example.com"}',
        '{"id": Infinity, "email": "b@example.com"}',
        '{"id": "N1", "email": "c@example.com", "attributes": {"score": NaN}}',
        '{"id": -Infinity, "email": "d@example.com"}',
        '{"id": 123456789012345678901234567890, "email": "e@example.com"}',
        '{"id": "N2", "email": "f@example.com", "attributes": {"n": ' + "9" * 5000 + "}}",
        '{"id": 12.5, "email": "g@example.com"}',
        '{"id": 42, "email": "h@example.com", "attributes": {"ratio": 2.5e-3, "n": -7}}',
    ]))
    result = db.run("import", "customers", "a.jsonl", "--json", *NOW)
    assert result.code == 1
    assert [(e["line"], e["reason"]) for e in result.json()["errors"]] == [
        (1, "not valid JSON: the number 1e400 is out of range"),
        (2, "not valid JSON: Infinity is not a JSON number"),
        (3, "not valid JSON: NaN is not a JSON number"),
        (4, "not valid JSON: -Infinity is not a JSON number"),
        (5, "not valid JSON: the number 12345678901234567890… has more than 19 digits "
            "(write long ids as strings)"),
        (6, "not valid JSON: the number 99999999999999999999… has more than 19 digits "
            "(write long ids as strings)"),
        (7, "id: 12.5 is not a whole number (write ids as strings)"),
    ]
    attributes = customers(db)["42"]["attributes"]
    assert (json.loads(attributes) if isinstance(attributes, str) else attributes) == {
        "ratio": 0.0025, "n": -7}
    assert list(customers(db)) == ["42"]


def test_spreadsheet_numbers_as_csv_ids_are_row_errors(db: Workspace) -> None:
    # Two long ids a spreadsheet rounded to 1.23457E+17 would be one customer overwritten.
    db.write("a.csv", "id,email,referred_by\n1.23457E+17,a@example.com,\n1e400,b@example.com,\n"
                      "NaN,c@example.com,\nR1,d@example.com,Infinity\nR2,e@example.com,\n"
                      "1E5X,f@example.com,\n")
    result = db.run("import", "customers", "a.csv", *NOW)
    assert result.code == 1
    assert result.stderr.splitlines() == [
        "a.csv:2: id: '1.23457E+17' is a number in scientific notation, as a spreadsheet "
        "writes a long number it has rounded: export the column as text (or use JSON Lines)",
        "a.csv:3: id: '1e400' is a number in scientific notation, as a spreadsheet "
        "writes a long number it has rounded: export the column as text (or use JSON Lines)",
        "a.csv:4: id: 'NaN' is a placeholder for a missing number, not an id",
        "a.csv:5: referred_by: 'Infinity' is a placeholder for a missing number, not an id",
    ]
    assert list(customers(db)) == ["1E5X", "R2"]


def test_json_nested_too_deep_is_a_row_error(db: Workspace) -> None:
    deep = "[" * 40 + "]" * 40
    abyss = "[" * 100_000 + "]" * 100_000  # deeper than Python's recursion limit
    db.write("a.jsonl", "".join(line + "\n" for line in [
        '{"id": "D1", "email": "a@example.com", "attributes": {"x": ' + deep + "}}",
        '{"id": "D2", "email": "b@example.com", "attributes": {"x": ' + abyss + "}}",
        '{"id": "D3", "email": "c@example.com", "attributes": {"x": [[1, 2], {"y": [3]}]}}',
    ]))
    result = db.run("import", "customers", "a.jsonl", "--json", *NOW)
    assert result.code == 1
    assert result.json()["errors"] == [
        {"line": 1, "reason": "not valid JSON: nested deeper than 16 levels"},
        {"line": 2, "reason": "not valid JSON: nested deeper than 16 levels"}]
    assert list(customers(db)) == ["D3"]


def test_absurd_column_counts_are_refused(db: Workspace) -> None:
    header = "id,email," + ",".join(f"x{i}" for i in range(2000))
    db.write("wide.csv", header + "\nW1,w1@example.com," + ",".join("1" * 2000) + "\n")
    result = db.run("import", "customers", "wide.csv", "--json", *NOW)
    assert result.code == 1
    assert result.json()["error"] == {
        "message": "the header has 2002 columns; an import reads at most 500 (the known "
                   "columns and custom attributes)", "path": "wide.csv", "line": 1}
    many = json.dumps({f"a{i}": i for i in range(501)})
    db.write("wide.jsonl", '{"id": "W2", "email": "w2@example.com", "attributes": ' + many + "}\n"
             '{"id": "W3", "email": "w3@example.com"}\n')
    result = db.run("import", "customers", "wide.jsonl", "--json", *NOW)
    assert result.json()["errors"] == [
        {"line": 1, "reason": "attributes: 501 fields; a customer has at most 500"}]
    # a line of a megabyte is no record: the file stops there, what came before stays
    db.write("long.csv", "id,email\nL1,l1@example.com\nL2,l2@example.com" + "," * 2**20 +
             "\nL3,l3@example.com\n")
    result = db.run("import", "customers", "long.csv", *NOW)
    assert result.code == 1
    assert result.stderr.splitlines() == [
        "long.csv:3: a line longer than 1 MiB is not a record; the import stops here"]
    assert list(customers(db)) == ["L1", "W3"]


def test_a_byte_order_mark_mid_file_is_a_row_error(db: Workspace) -> None:
    # `cat a.csv b.csv`: the second export's BOM and header land in the middle
    db.write("a.csv", "\ufeffid,email\nB1,b1@example.com\n\ufeffid,email\n\ufeffB2,b2@example.com\n"
                      "B3,b3@example.com\n")
    result = db.run("import", "customers", "a.csv", *NOW)
    assert result.code == 1
    reason = ("a byte-order mark (U+FEFF) in the middle of the file, where two files were "
              "joined: remove it and import again")
    assert result.stderr.splitlines() == [f"a.csv:3: {reason}", f"a.csv:4: {reason}"]
    db.write("b.jsonl", '{"id": "J1", "email": "j1@example.com"}\n'
                        '\ufeff{"id": "J2", "email": "j2@example.com"}\n')
    result = db.run("import", "customers", "b.jsonl", *NOW)
    assert result.stderr.splitlines() == [f"b.jsonl:2: {reason}"]
    assert list(customers(db)) == ["B1", "B3", "J1"]


def test_a_second_import_while_one_runs_exits_3_and_writes_nothing(db: Workspace) -> None:
    # The first import reads from a pipe that the test keeps open, so it is provably still
    # running (it has read its first record) when the second one starts.
    engine = open_database(database_url(env_url=db.database, configured=None, root=db.root))
    read_fd, write_fd = os.pipe()
    started, outcome = threading.Event(), {}

    def first() -> None:
        with os.fdopen(read_fd, "rb") as stream:
            outcome["report"] = import_file(
                engine, stream, kind="customers", name="first.csv", fmt="csv",
                ctx=Context(tz=ZoneInfo("Europe/Berlin"), currency="EUR",
                            today=date(2026, 11, 23)),
                now=datetime(2026, 11, 23, 9, tzinfo=UTC), strict=False,
                on_error=lambda error: None, on_progress=lambda done: started.set())

    writer = os.fdopen(write_fd, "wb")
    writer.write(b"id,email,first_name\nC1,c1@example.com,First\n")
    writer.flush()
    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert started.wait(30), "the first import never read its first record"
        db.write("second.csv", "id,email,first_name\nC1,c1@example.com,Second\n"
                               "C3,c3@example.com,Third\n")
        result = db.run("import", "customers", "second.csv", "--json", *NOW)
    finally:
        writer.write(b"C2,c2@example.com,Also first\n")
        writer.close()
        thread.join(30)
        engine.dispose()
    assert result.code == 3, result.stderr
    error: dict[str, Any] = result.json()["error"]
    assert error["message"].startswith("another mailer ")
    assert "import" in error["message"] and "try again when it has finished" in error["message"]
    assert "Traceback" not in result.stderr
    report: ImportReport = outcome["report"]
    assert (report.written, report.skipped) == (2, 0)
    stored = customers(db)
    assert {key: row["first_name"] for key, row in stored.items()} == {
        "C1": "First", "C2": "Also first"}
    # once the first has finished, the same file goes in
    assert db.run("import", "customers", "second.csv", *NOW).code == 0
    assert customers(db)["C1"]["first_name"] == "Second"
