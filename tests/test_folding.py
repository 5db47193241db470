"""One case fold on both databases (DESIGN §4.1, issue 15 item 6).

Text matches (country, city, locale, category, email_domain, tags) pick the same
customers on SQLite and PostgreSQL for every script: stored values and segment
values are folded by one Python function, never by the database's lower()
(SQLite's folds ASCII only; PostgreSQL's depends on the collation). The property
tests store generated text through the real import path, run a real segment, and
compare with the Python fold written out here.
"""

from __future__ import annotations

import csv
import io
import json
import unicodedata
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from mailer.config.conditions import parse_segment
from mailer.core.addresses import email_key, has_control_character, parse_address
from mailer.segments.compiler import Scope
from mailer.segments.runner import count, member_ids
from mailer.store.db import database_url, open_database
from mailer.store.importer import import_file
from mailer.store.records import Context
from tests.conftest import Workspace

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
TZ = ZoneInfo("Europe/Berlin")


def reference_fold(text: str) -> str:
    """What a reader means by "case-insensitive": NFC, full case folding, NFC."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", text).casefold())


@pytest.fixture
def engine(db: Workspace) -> Iterator[Engine]:
    engine = open_database(database_url(env_url=db.database, configured=None, root=db.root))
    yield engine
    engine.dispose()


def _csv(header: list[str], rows: list[list[str]]) -> io.BytesIO:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return io.BytesIO(out.getvalue().encode("utf-8"))


def _import(engine: Engine, kind: str, stream: io.BytesIO, fmt: str = "csv") -> None:
    errors: list[Any] = []
    report = import_file(engine, stream, kind=kind, name=f"{kind}.{fmt}", fmt=fmt,
                         ctx=Context(tz=TZ, currency="EUR", today=NOW.date()), now=NOW,
                         strict=False, on_error=errors.append)
    assert not errors, errors
    assert report.written


def store_customer(engine: Engine, *, city: str = "", country: str = "", tag: str = "",
                   email: str = "p@example.com", store_id: str = "P") -> None:
    _import(engine, "customers", _csv(["id", "email", "city", "country", "tags"],
                                      [[store_id, email, city, country, tag]]))


def store_category(engine: Engine, category: str) -> None:
    # JSON Lines: a category may hold anything, commas and quotes included.
    line = {"order_id": "O1", "customer_id": "P", "placed_at": "2026-11-01T10:00:00Z",
            "total": 1, "items": [{"sku": "S", "category": category}]}
    _import(engine, "orders", io.BytesIO(json.dumps(line).encode() + b"\n"), fmt="jsonl")


def matches(engine: Engine, condition: dict[str, Any]) -> bool:
    parsed = parse_segment("probe", "segments/probe.yaml", {"all": [condition]})
    assert parsed.spec is not None, parsed.problems
    scope = Scope(now=NOW, tz=TZ, currency="EUR", dialect=engine.dialect.name)
    return count(engine, {"probe": parsed.spec}, "probe", scope) == 1


def _storable(text: str) -> bool:
    # The importer refuses control characters and strips values; `tags` splits at ';'.
    return bool(text.strip()) and not has_control_character(text) and ";" not in text


# Letters whose case rules differ by script and by database: Greek sigma (final ς,
# σ, Σ), Turkish dotted and dotless i, German ß/SS/ẞ, the Kelvin and Ångström signs,
# ligatures, titlecase digraphs, and combining marks that NFC composes.
TRICKY = "ςσΣßẞSsİIıiKkKÅåﬁǅǆǄΐ\u0301\u0308\u0345ΆάΩωΩ " + "aeoöuüAÖÜ"
words = st.text(alphabet=st.sampled_from(TRICKY) | st.characters(codec="utf-8"),
                min_size=1, max_size=12).filter(_storable)
VARIANTS = {
    "upper": str.upper, "lower": str.lower, "casefold": str.casefold,
    "swapcase": str.swapcase, "title": str.title,
    "nfd": lambda s: unicodedata.normalize("NFD", s),
    "nfkc": lambda s: unicodedata.normalize("NFKC", s),
}
FOLDING = settings(max_examples=60, deadline=None, derandomize=True,
                   suppress_health_check=[HealthCheck.function_scoped_fixture])


@FOLDING
@given(stored=words, variant=st.sampled_from(sorted(VARIANTS)), other=words,
       use_other=st.booleans())
@example(stored="Σίσυφος", variant="upper", other="", use_other=False)  # ΣΊΣΥΦΟΣ
@example(stored="ΣΊΣΥΦΟΣ", variant="lower", other="", use_other=False)  # final σ, not ς
@example(stored="Straße", variant="upper", other="", use_other=False)  # STRASSE
@example(stored="STRAẞE", variant="lower", other="", use_other=False)
@example(stored="İstanbul", variant="lower", other="", use_other=False)  # i̇stanbul
@example(stored="İstanbul", variant="casefold", other="", use_other=False)
@example(stored="ıspanak", variant="upper", other="", use_other=False)  # ISPANAK
def test_city_matches_as_the_python_fold_says(engine: Engine, stored: str, variant: str,
                                              other: str, use_other: bool) -> None:
    wanted = other if use_other else VARIANTS[variant](stored)
    if not _storable(wanted):
        return
    store_customer(engine, city=stored)
    expected = reference_fold(stored.strip()) == reference_fold(wanted.strip())
    assert matches(engine, {"city": wanted}) is expected
    assert matches(engine, {"city": {"in": [wanted, "no such city"]}}) is expected


@FOLDING
@given(stored=words, variant=st.sampled_from(sorted(VARIANTS)))
@example(stored="ΟΔΟΣ", variant="lower")
@example(stored="maße", variant="upper")
def test_tags_and_countries_match_as_the_python_fold_says(engine: Engine, stored: str,
                                                          variant: str) -> None:
    wanted = VARIANTS[variant](stored)
    if not _storable(wanted):
        return
    store_customer(engine, tag=stored, country=stored)
    expected = reference_fold(stored.strip()) == reference_fold(wanted.strip())
    assert matches(engine, {"tags": {"contains": wanted}}) is expected
    assert matches(engine, {"country": wanted}) is expected


@FOLDING
@given(stored=words, variant=st.sampled_from(sorted(VARIANTS)))
@example(stored="Süßwaren", variant="upper")
@example(stored="ΚΑΦΈΣ", variant="lower")
def test_bought_category_matches_as_the_python_fold_says(engine: Engine, stored: str,
                                                        variant: str) -> None:
    wanted = VARIANTS[variant](stored)
    if not _storable(wanted):
        return
    store_customer(engine)
    store_category(engine, stored)
    expected = reference_fold(stored.strip()) == reference_fold(wanted.strip())
    assert matches(engine, {"bought": {"category": wanted}}) is expected


def test_the_same_audience_on_both_databases(engine: Engine) -> None:
    # One store, the same answers on SQLite and PostgreSQL (the db fixture runs both).
    people = [("G", "Σίσυφος", "gr"), ("D", "STRASSBURG", "de"), ("T", "İZMİR", "tr"),
              ("S", "Straßburg", "de"), ("I", "izmir", "tr")]
    _import(engine, "customers", _csv(
        ["id", "email", "city", "locale"],
        [[sid, f"{sid.lower()}@example.com", city, loc] for sid, city, loc in people]))
    scope = Scope(now=NOW, tz=TZ, currency="EUR", dialect=engine.dialect.name)

    def ids(condition: dict[str, Any]) -> list[str]:
        parsed = parse_segment("probe", "segments/probe.yaml", {"all": [condition]})
        assert parsed.spec is not None
        found = member_ids(engine, {"probe": parsed.spec}, "probe", scope, limit=10)
        by_id = {i: sid for i, (sid, _, _) in enumerate(people, 1)}
        return sorted(by_id[i] for i in found)

    assert ids({"city": "ΣΊΣΥΦΟΣ"}) == ["G"]
    assert ids({"city": "σίσυφοσ"}) == ["G"]  # final sigma folds to σ
    assert ids({"city": "straßburg"}) == ["D", "S"]  # ß is ss
    assert ids({"city": "İzmİr"}) == ["T"]
    assert ids({"city": "i\u0307zmi\u0307r"}) == ["T"]  # dotted İ folds to i + U+0307
    assert ids({"city": "IZMIR"}) == ["I"]
    assert ids({"locale": "DE"}) == ["D", "S"]


def test_an_idn_domain_and_its_punycode_are_one_person(engine: Engine) -> None:
    assert email_key("Info@XN--BCHER-KVA.example.com") == "info@bücher.example.com"
    assert parse_address("info@xn--bcher-kva.example.com").key == email_key(
        "INFO@Bücher.Example.com")
    store_customer(engine, email="info@bücher.example.com")
    assert matches(engine, {"email_domain": "xn--bcher-kva.example.com"})
    assert matches(engine, {"email_domain": "BÜCHER.example.com"})
    assert not matches(engine, {"email_domain": "example.com"})


def test_only_valid_a_labels_are_read_as_their_unicode_form() -> None:
    from mailer.core.folding import fold_domain

    assert fold_domain("XN--BCHER-KVA.example.com") == "bücher.example.com"
    # not IDNA 2008 A-labels: kept as written (punycode alone would make '' and controls)
    for domain in ("xn--.example.com", "xn--a-.example.com", "xn--abc.example.com"):
        assert fold_domain(domain) == domain
