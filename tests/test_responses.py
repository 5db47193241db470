"""`mailer responses`: scores against a hand-computed oracle on both databases, with the
answers written through their owner module (mailer.store.insight.responses; the survey
page comes next), the month boundaries in the workspace zone, --since/--until, the CSV.
"""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from fractions import Fraction

import pytest

from mailer.insight.scores import csat, csi, mean, nps, rounded
from mailer.store.insight.responses import Answer, record_answers
from tests.conftest import Workspace

SURVEY = """\
title: How was your order?
questions:
  - {id: overall,   ask: "How happy are you?",    kind: rating, weight: 2}
  - {id: delivery,  ask: "How was the delivery?", kind: rating}
  - {id: recommend, ask: "Recommend us?",         kind: nps}
  - {id: found_us,  ask: "How did you find us?",  kind: choice, options: [search, friend, ad]}
  - {id: comment,   ask: "Anything else?",        kind: text}
"""


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def shop(db: Workspace, customers: int = 4) -> dict[str, int]:
    """The survey and CUSTOMERS customers C1…; their ids by store id."""
    db.write("surveys/order.yaml", SURVEY)
    db.write("c.csv", "id,email\n" + "".join(f"C{n},c{n}@example.com\n"
                                            for n in range(1, customers + 1)))
    assert db.run("import", "customers", "c.csv").code == 0
    return {store_id: id_ for id_, store_id in db.query("SELECT id, store_id FROM customers")}


def answer(db: Workspace, customer_id: int, occurrence: str, at: str,
           **answers: int | str) -> None:
    """One POST of the survey page: these answers to one mail, recorded at AT (UTC)."""
    engine = db.engine()
    try:
        with engine.begin() as conn:
            record_answers(conn, customer_id=customer_id, campaign="feedback",
                           occurrence=occurrence, survey="order", version_hash="v1" * 32,
                           answers=[Answer(q, number=v) if isinstance(v, int) else
                                    Answer(q, text=v) for q, v in answers.items()],
                           at=utc(at))
    finally:
        engine.dispose()


def four_responses(db: Workspace) -> None:
    """The oracle's data (Europe/Berlin: 2026-03-31T22:00Z is 1 April, 00:00)."""
    ids = shop(db)
    answer(db, ids["C1"], "order:1", "2026-03-10T10:00", overall=5, delivery=4, recommend=10,
           found_us="search", comment="Great")
    answer(db, ids["C2"], "order:2", "2026-03-20T10:00", overall=4, delivery=2, recommend=7,
           found_us="friend")
    # a second press of the button: overall replaced, the rest kept
    answer(db, ids["C2"], "order:2", "2026-03-21T10:00", overall=5)
    answer(db, ids["C3"], "order:3", "2026-03-31T22:00", overall=1, recommend=3,
           comment="Slow")
    answer(db, ids["C4"], "order:4", "2026-04-15T10:00", overall=3, delivery=5, recommend=9,
           found_us="search")


def test_scores_match_the_hand_computed_oracle(db: Workspace) -> None:
    four_responses(db)
    result = db.run("responses", "order", "--json")
    assert result.code == 0, result.stderr
    # overall 5 5 1 3: mean 14/4 = 3.5, CSAT 2/4; delivery 4 2 5: mean 11/3, CSAT 2/3
    # CSI = 100 × (2·(3.5 − 1)/4 + 1·(11/3 − 1)/4) / 3 = 100 × 23/36 = 63.888…
    # NPS: 10 7 3 9 → promoters 2, detractors 1 of 4 = 25
    assert result.json() == {
        "survey": "order",
        "responses": 4,
        "questions": [
            {"id": "overall", "kind": "rating", "count": 4, "mean": 3.5, "csat": 50.0,
             "distribution": {"1": 1, "2": 0, "3": 1, "4": 0, "5": 2}},
            {"id": "delivery", "kind": "rating", "count": 3, "mean": 3.67, "csat": 66.67,
             "distribution": {"1": 0, "2": 1, "3": 0, "4": 1, "5": 1}},
            {"id": "recommend", "kind": "nps", "count": 4, "mean": 7.25, "csat": None,
             "distribution": {"0": 0, "1": 0, "2": 0, "3": 1, "4": 0, "5": 0, "6": 0,
                              "7": 1, "8": 0, "9": 1, "10": 1}},
            {"id": "found_us", "kind": "choice", "count": 3, "mean": None, "csat": None,
             "distribution": {"search": 2, "friend": 1, "ad": 0}},
            {"id": "comment", "kind": "text", "count": 2, "mean": None, "csat": None,
             "distribution": {}},
        ],
        "csi": 63.89,
        "nps": 25.0,
        # March: overall 5 5, delivery 4 2 → 100 × (2·1 + 0.5)/3 = 83.33; NPS 10 7 → 50
        # April (from 00:00 Berlin): overall 1 3, delivery 5 → 100 × (2·0.25 + 1)/3 = 50;
        # NPS 3 9 → 0
        "by_month": [{"month": "2026-03", "responses": 2, "csi": 83.33, "nps": 50.0},
                     {"month": "2026-04", "responses": 2, "csi": 50.0, "nps": 0.0}],
        "comments": [
            {"at": "2026-03-31T22:00:00Z", "customer": "C3", "question": "comment",
             "text": "Slow"},
            {"at": "2026-03-10T10:00:00Z", "customer": "C1", "question": "comment",
             "text": "Great"}],
    }
    assert db.query("SELECT count(*) FROM responses")[0][0] == 16  # 5 + 4 + 3 + 4 answers


def test_since_is_inclusive_and_until_exclusive_in_the_workspace_zone(db: Workspace) -> None:
    four_responses(db)
    before = db.run("responses", "order", "--until", "2026-04-01", "--json").json()
    assert (before["responses"], before["csi"], before["nps"]) == (2, 83.33, 50.0)
    assert [m["month"] for m in before["by_month"]] == ["2026-03"]
    after = db.run("responses", "order", "--since", "2026-04-01", "--json").json()
    assert (after["responses"], after["csi"], after["nps"]) == (2, 50.0, 0.0)
    assert [c["customer"] for c in after["comments"]] == ["C3"]  # at 00:00 exactly: in
    # the second of C2's presses alone: only its overall answer is in the window
    one = db.run("responses", "order", "--since", "2026-03-21T11:00+01:00", "--until",
                 "2026-03-21T11:00:01+01:00", "--json").json()
    assert one["responses"] == 1
    assert [(q["id"], q["count"]) for q in one["questions"]] == [
        ("overall", 1), ("delivery", 0), ("recommend", 0), ("found_us", 0), ("comment", 0)]
    assert (one["csi"], one["nps"]) == (100.0, None)
    empty = db.run("responses", "order", "--since", "2027-01-01", "--json").json()
    assert (empty["responses"], empty["csi"], empty["nps"], empty["by_month"]) == (
        0, None, None, [])
    assert empty["questions"][0] == {"id": "overall", "kind": "rating", "count": 0,
                                     "mean": None, "csat": None,
                                     "distribution": {"1": 0, "2": 0, "3": 0, "4": 0, "5": 0}}
    wrong = db.run("responses", "order", "--since", "2026-04-01", "--until", "2026-03-01")
    assert wrong.code == 1
    assert "--until 2026-02-28T23:00:00Z is not after --since 2026-03-31T22:00:00Z" in wrong.stderr


def test_a_mean_on_a_half_rounds_up_where_round_would_not(db: Workspace) -> None:
    ids = shop(db, customers=8)
    for n, score in enumerate([5, 5, 5, 4, 4, 3, 2, 1], start=1):
        answer(db, ids[f"C{n}"], f"order:{n}", "2026-03-10T10:00", overall=score)
    overall = db.run("responses", "order", "--json").json()["questions"][0]
    # 29/8 = 3.625 exactly (also in binary): Python's round() gives 3.62, half up 3.63
    assert round(29 / 8, 2) == 3.62
    assert (overall["mean"], overall["csat"]) == (3.63, 62.5)


def test_rounding_is_half_away_from_zero_on_the_exact_value() -> None:
    assert [rounded(Fraction(n, d)) for n, d in [(1, 8), (2, 3), (-12345, 1000), (-1, 3),
                                                 (1005, 1000), (0, 1)]] == [
        0.13, 0.67, -12.35, -0.33, 1.01, 0.0]  # round(1.005, 2) is 1.0 in floats
    assert rounded(None) is None


def test_the_score_formulas_on_counts() -> None:
    assert mean({}) is None and csat({}) is None and nps({}) is None and csi([]) is None
    assert csat({3: 1, 4: 1, 5: 2}) == 75
    assert nps({10: 3, 8: 5, 0: 2}) == 10
    assert csi([(Fraction(1), {1: 4})]) == 0 and csi([(Fraction(1), {5: 4})]) == 100
    # a question without answers does not weigh in
    assert csi([(Fraction(3), {}), (Fraction(1), {3: 1})]) == 50


def test_the_csv_has_one_row_per_answer_by_time(db: Workspace) -> None:
    ids = shop(db, customers=2)
    answer(db, ids["C1"], "order:1", "2026-03-10T10:00", overall=5, comment="=HYPERLINK(1)")
    answer(db, ids["C2"], "order:2", "2026-03-11T10:00", found_us="ad", comment="fine, thanks")
    result = db.run("responses", "order", "--csv", "out.csv")
    assert result.code == 0, result.stderr
    assert "wrote 4 answers to out.csv" in result.stdout
    with (db.root / "out.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    version = "v1" * 32
    assert rows == [
        ["at", "customer", "campaign", "occurrence", "version_hash", "question", "kind",
         "value"],
        ["2026-03-10T10:00:00Z", "C1", "feedback", "order:1", version, "overall", "rating", "5"],
        ["2026-03-10T10:00:00Z", "C1", "feedback", "order:1", version, "comment", "text",
         "'=HYPERLINK(1)"],
        ["2026-03-11T10:00:00Z", "C2", "feedback", "order:2", version, "found_us", "choice",
         "ad"],
        ["2026-03-11T10:00:00Z", "C2", "feedback", "order:2", version, "comment", "text",
         "fine, thanks"]]
    assert list(db.root.glob(".*partial")) == []
    cut = db.run("responses", "order", "--since", "2026-03-11", "--csv", "cut.csv", "--json")
    assert cut.json()["responses"] == 1
    assert len((db.root / "cut.csv").read_text().splitlines()) == 3


def test_the_text_output_shows_scores_months_and_the_latest_comments(db: Workspace) -> None:
    four_responses(db)
    result = db.run("responses", "order")
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "order: 4 responses, CSI 63.89, NPS 25"
    assert any("overall" in line and "3.5" in line and "50" in line for line in lines)
    assert any("2026-04" in line and "50" in line for line in lines)
    assert lines[-3:] == ["latest comments:", "  2026-03-31T22:00:00Z C3 (comment): Slow",
                          "  2026-03-10T10:00:00Z C1 (comment): Great"]


def test_an_unknown_survey_is_an_error_with_did_you_mean(db: Workspace) -> None:
    shop(db, customers=1)
    result = db.run("responses", "ordr", "--json")
    assert result.code == 1
    assert result.json()["error"]["message"] == "unknown survey 'ordr' (did you mean order?)"


@pytest.mark.parametrize("since", ["tomorrow", "2026-02-30"])
def test_an_unparsable_time_is_misuse(db: Workspace, since: str) -> None:
    shop(db, customers=1)
    result = db.run("responses", "order", "--since", since)
    assert result.code == 2
