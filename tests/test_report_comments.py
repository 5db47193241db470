"""`mailer report`: the comments left with ratings (newest first, capped) in its text and
JSON, and exclusions said to be summed per planning run; the ratings and comments go
through the real service after a real send."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

from mailer.store.events import add
from tests.conftest import Workspace
from tests.test_campaigns_overview import ONE_CLICK, link, send_mails, serving, store
from tests.test_serve import hrefs


def rating(mail: EmailMessage, score: int) -> str:
    """The link of MAIL that rates SCORE (the template lists 1 to 5 in order)."""
    return [h for h in hrefs(mail) if "/r/" in h][score - 1]


def test_comments_newest_first_and_exclusions_summed_per_planning_run(db: Workspace) -> None:
    store(db)
    assert db.run("unsubscribe", "chloe@example.com").code == 0
    mails = send_mails(db, "sale")
    assert sorted(mails) == ["anna@example.com", "bob@example.com"]
    send_mails(db, "sale", now="2026-11-24T10:00")  # a second run holds chloe back again
    anna, bob = mails["anna@example.com"], mails["bob@example.com"]
    with serving(db) as service:
        # the page records nothing (mail scanners follow links); its button does
        assert service.request("GET", rating(anna, 4))[0] == 200
        assert service.request("POST", rating(anna, 4), body="", headers=ONE_CLICK)[0] == 200
        assert service.request("GET", rating(bob, 5))[0] == 200
        assert service.request("POST", rating(bob, 5), body="comment=Great+boots",
                               headers=ONE_CLICK)[0] == 200
        # Anna changes her score later: her rating (and its comment) is now the newest.
        assert service.request("GET", rating(anna, 2))[0] == 200
        assert service.request("POST", rating(anna, 2), body="comment=Too+slow%0Afor+me",
                               headers=ONE_CLICK)[0] == 200
        assert service.request("GET", link(anna, "c"))[0] == 302

    found = db.run("report", "sale", "--json").json()
    comments = found["comments"]
    assert [(c["customer"], c["score"], c["text"]) for c in comments] == [
        ("C0", 2, "Too slow\nfor me"), ("C1", 5, "Great boots")]
    times = [datetime.fromisoformat(c["at"].replace("Z", "+00:00")) for c in comments]
    assert times[0] >= times[1] and all(c["at"].endswith("Z") for c in comments)
    assert found["excluded"]["unsubscribed"] == 2  # one customer, two planning runs
    assert found["ratings"]["count"] == 2

    shown = db.run("report", "sale")
    assert shown.code == 0, shown.stderr
    out = shown.stdout
    assert "excluded: summed per planning run" in out
    assert "latest comments, newest first" in out
    assert out.index("Too slow") < out.index("Great boots")
    assert "C0" in out and "C1" in out


def test_a_report_without_comments_has_an_empty_list_and_no_comment_table(
        db: Workspace) -> None:
    store(db)
    send_mails(db, "sale")
    found = db.run("report", "sale", "--json").json()
    assert found["comments"] == [] and found["excluded"] == {}
    shown = db.run("report", "sale").stdout
    assert "latest comments" not in shown and "summed per planning run" not in shown


def test_the_text_shows_the_ten_newest_and_the_json_the_hundred_newest(db: Workspace) -> None:
    """Past the caps the oldest comments are left out (rows written as the service does,
    through the store's own event writer)."""
    store(db)
    send_mails(db, "sale")
    anna = db.query("SELECT id FROM customers WHERE store_id = 'C0'")[0][0]
    engine = db.engine()
    start = datetime(2026, 11, 24, tzinfo=UTC)
    try:
        with engine.begin() as conn:
            for n in range(105):
                add(conn, "rating", customer_id=anna, campaign="sale", delivery_id=None,
                    at=start + timedelta(minutes=n), score=n % 5 + 1, comment=f"note {n}")
    finally:
        engine.dispose()
    comments = db.run("report", "sale", "--json").json()["comments"]
    assert len(comments) == 100
    assert comments[0] == {"at": "2026-11-24T01:44:00Z", "customer": "C0", "score": 5,
                           "text": "note 104"}
    assert comments[-1]["text"] == "note 5"
    shown = db.run("report", "sale").stdout
    assert "note 104" in shown and "note 95" in shown and "note 94" not in shown
    assert "the 10 newest comments shown; `mailer report sale --json` lists the 100 newest" \
        in shown
