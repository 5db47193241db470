"""Frequency caps per topic (issue 21 item 3): `{max: 1, per: 7d, topic: promotions}`
counts only the mails of that topic's campaigns, on both databases."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from mailer.config.settings import parse_settings
from mailer.config.workspace import load_valid_workspace
from mailer.core.clock import parse_local, zone
from mailer.planning.planner import PlanResult, plan_due
from mailer.segments.runner import scope_for
from mailer.store.db import create, current_revision, database_url, head_revision, upgrade
from tests.conftest import SETTINGS, Workspace

CUSTOMERS = """\
id,email,first_name,timezone,subscribed
A,anna@example.com,Anna,Europe/Berlin,true
B,bob@example.org,Bob,America/New_York,true
C,chloe@example.net,Chloe,Asia/Tokyo,false
"""
ONCE = """\
name: {slug}
trigger: once
at: {at}
grace: {grace}
segment: everyone
template: mail.html
subject: "Hello {{{{ customer.first_name }}}}"
topic: {topic}
priority: {priority}
"""
# Roomy general caps, so only the topic cap can hold a mail back.
TOPIC_CAPS = SETTINGS + ("policy: {frequency: [{max: 10, per: 1d}, "
                         "{max: 1, per: 7d, topic: promotions}]}\n")
PROMOTIONS = "1 per 7d (promotions)"


@pytest.fixture
def shop(db: Workspace) -> Workspace:
    db.write("mailer.yaml", TOPIC_CAPS)
    db.write("segments/everyone.yaml", "description: all\nall: [{orders: {at_least: 0}}]\n")
    db.write("templates/mail.html", "<p>{{ store.address }} <a href='{{ links.unsubscribe }}'>"
                                    "unsubscribe</a></p>\n")
    db.write("customers.csv", CUSTOMERS)
    assert db.run("import", "customers", "customers.csv", "--now", "2026-01-01").code == 0
    return db


def once(shop: Workspace, slug: str, at: str, *, topic: str, grace: str = "6h",
         priority: int = 0) -> None:
    shop.write(f"campaigns/{slug}.yaml", ONCE.format(slug=slug, at=at, grace=grace,
                                                     topic=topic, priority=priority))


def run_plan(shop: Workspace, slugs: list[str], now: str, *,
             write: bool = True) -> dict[str, PlanResult]:
    """One planning run of SLUGS at NOW (workspace time), writing rows unless WRITE is off."""
    settings, _ = parse_settings((shop.root / "mailer.yaml").read_text())
    specs, campaigns = load_valid_workspace(shop.root)
    engine = shop.engine()
    try:
        upgrade(engine)
        scope = scope_for(settings, parse_local(now, zone(settings.timezone)), engine)
        chosen = {slug: campaigns[slug] for slug in slugs}
        versions = {slug: {"campaign": slug} for slug in chosen} if write else None
        return {r.campaign: r for r in plan_due(engine, specs, chosen, scope=scope,
                                                settings=settings, versions=versions)}
    finally:
        engine.dispose()


def planned(result: PlanResult) -> list[str]:
    return [p.id for p in result.planned]


def capped(result: PlanResult) -> list[tuple[str, str]]:
    return [(e.id, e.cap) for e in result.excluded if e.reason == "frequency_cap"]


def test_a_topic_cap_frees_exactly_per_after_the_last_mail(shop: Workspace) -> None:
    once(shop, "autumn-sale", "2026-12-01T10:00", topic="promotions")
    once(shop, "winter-sale", "2026-12-08T09:59", topic="promotions", grace="2h")
    assert planned(run_plan(shop, ["autumn-sale"], "2026-12-01T10:00")["autumn-sale"]) == \
        ["A", "B"]
    # The same edge as every cap: (now - 7d, now]. One second before 7 days the first
    # promotion still counts; at exactly 7 days it no longer does.
    held = run_plan(shop, ["winter-sale"], "2026-12-08T09:59:59")["winter-sale"]
    assert planned(held) == []
    assert capped(held) == [("A", PROMOTIONS), ("B", PROMOTIONS)]
    freed = run_plan(shop, ["winter-sale"], "2026-12-08T10:00:00")["winter-sale"]
    assert planned(freed) == ["A", "B"]
    # each row keeps the topic its campaign had when it was planned
    assert shop.query("SELECT campaign, topic FROM deliveries ORDER BY id") == [
        ("autumn-sale", "promotions"), ("autumn-sale", "promotions"),
        ("winter-sale", "promotions"), ("winter-sale", "promotions")]


def test_a_topic_cap_does_not_count_other_topics(shop: Workspace) -> None:
    once(shop, "newsletter", "2026-12-01T10:00", topic="newsletter")
    once(shop, "feedback", "2026-12-01T10:00", topic="general")
    once(shop, "sale", "2026-12-01T12:00", topic="promotions")
    first = run_plan(shop, ["newsletter", "feedback"], "2026-12-01T10:00")
    assert [planned(first[s]) for s in ("feedback", "newsletter")] == [["A", "B"], ["A", "B"]]
    # two mails of other topics two hours ago: the promotions cap still has room
    assert planned(run_plan(shop, ["sale"], "2026-12-01T12:00")["sale"]) == ["A", "B"]


def test_mails_planned_earlier_in_the_same_run_count_toward_their_topic(
        shop: Workspace) -> None:
    once(shop, "flash-sale", "2026-12-01T10:00", topic="promotions", priority=90)
    once(shop, "clearance", "2026-12-01T10:00", topic="promotions", priority=10)
    once(shop, "newsletter", "2026-12-01T10:00", topic="newsletter", priority=50)
    for write in (False, True):  # the dry run decides as the written run does
        results = run_plan(shop, ["clearance", "flash-sale", "newsletter"],
                           "2026-12-01T10:30", write=write)
        assert planned(results["flash-sale"]) == ["A", "B"]
        assert planned(results["newsletter"]) == ["A", "B"]
        assert planned(results["clearance"]) == []
        assert capped(results["clearance"]) == [("A", PROMOTIONS), ("B", PROMOTIONS)]


def test_a_cap_without_a_topic_still_counts_every_topic(shop: Workspace) -> None:
    shop.write("mailer.yaml", SETTINGS + ("policy: {frequency: [{max: 1, per: 24h}, "
                                          "{max: 1, per: 7d, topic: promotions}]}\n"))
    once(shop, "newsletter", "2026-12-01T10:00", topic="newsletter")
    once(shop, "sale", "2026-12-01T12:00", topic="promotions")
    run_plan(shop, ["newsletter"], "2026-12-01T10:00")
    held = run_plan(shop, ["sale"], "2026-12-01T12:00")["sale"]
    assert capped(held) == [("A", "1 per 1d"), ("B", "1 per 1d")]


def test_plan_json_names_the_cap(shop: Workspace) -> None:
    once(shop, "autumn-sale", "2026-12-01T10:00", topic="promotions")
    once(shop, "winter-sale", "2026-12-03T10:00", topic="promotions")
    run_plan(shop, ["autumn-sale"], "2026-12-01T10:00")
    result = shop.run("plan", "winter-sale", "--now", "2026-12-03T10:00", "--json")
    assert result.code == 0, result.stderr
    assert result.json()["excluded"] == [
        {"id": "A", "email": "anna@example.com", "occurrence": "once",
         "reason": "frequency_cap", "cap": PROMOTIONS},
        {"id": "B", "email": "bob@example.org", "occurrence": "once",
         "reason": "frequency_cap", "cap": PROMOTIONS},
        # other reasons keep their four keys
        {"id": "C", "email": "chloe@example.net", "occurrence": "once",
         "reason": "not_subscribed"}]


def test_forecast_honours_topic_caps(shop: Workspace) -> None:
    # Promotions on day 1 and day 3 (the second waits a week: past the forecast), a
    # newsletter on day 2 that the promotions cap does not hold back.
    once(shop, "autumn-sale", "2026-12-01T10:00", topic="promotions")
    once(shop, "winter-sale", "2026-12-03T10:00", topic="promotions", grace="48h")
    once(shop, "newsletter", "2026-12-02T10:00", topic="newsletter")
    result = shop.run("forecast", "--days", "4", "--from", "2026-12-01", "--json")
    assert result.code == 0, result.stderr
    document = result.json()
    assert [d["campaigns"] for d in document["days"]] == [
        {"autumn-sale": 2, "newsletter": 0, "winter-sale": 0},
        {"autumn-sale": 0, "newsletter": 2, "winter-sale": 0},
        {"autumn-sale": 0, "newsletter": 0, "winter-sale": 0},
        {"autumn-sale": 0, "newsletter": 0, "winter-sale": 0}]
    assert document["caps_hit"] == {PROMOTIONS: 2}
    assert shop.query("SELECT count(*) FROM deliveries")[0][0] == 0


def test_validate_warns_of_a_topic_no_campaign_has(shop: Workspace) -> None:
    shop.write("mailer.yaml", SETTINGS + "policy:\n  frequency:\n    - {max: 1, per: 24h}\n"
                                         "    - {max: 1, per: 7d, topic: promotion}\n")
    once(shop, "sale", "2026-12-01T10:00", topic="promotions")
    once(shop, "newsletter", "2026-12-01T10:00", topic="newsletter")
    result = shop.run("validate", "--json")
    assert result.code == 0, result.stderr  # a warning, not an error
    warning = ("mailer.yaml:8: warning: policy.frequency.1.topic: no campaign has topic "
               "'promotion', so this cap counts no mail (did you mean promotions?)")
    assert warning in result.stderr.splitlines()
    assert result.json()["problems"] == []
    # nothing close: the campaigns' topics are listed instead
    shop.write("mailer.yaml", SETTINGS + "policy: {frequency: [{max: 1, per: 7d, "
                                         "topic: birthdays}]}\n")
    lines = shop.run("validate").stderr.splitlines()
    assert ("mailer.yaml:5: warning: policy.frequency.0.topic: no campaign has topic "
            "'birthdays', so this cap counts no mail (the campaigns' topics: newsletter, "
            "promotions)") in lines
    # a topic some campaign has is no warning
    shop.write("mailer.yaml", TOPIC_CAPS)
    assert "topic" not in shop.run("validate").stderr


def test_validate_explain_states_the_caps_quiet_hours_and_sunset_in_words(
        shop: Workspace) -> None:
    shop.write("mailer.yaml", SETTINGS + (
        "policy:\n  frequency:\n    - {max: 1, per: 24h}\n"
        "    - {max: 2, per: 7d, topic: promotions}\n  quiet_hours: '21:00-08:00'\n"
        "  sunset: {after: 180d, min_mails: 5}\n"))
    once(shop, "sale", "2026-12-01T10:00", topic="promotions")
    result = shop.run("validate", "--explain")
    assert result.code == 0, result.stderr
    assert result.stdout.splitlines() == [
        "cap 1 per 1d: at most 1 mail of any campaign to one customer in any 24 hours",
        "cap 2 per 7d (promotions): at most 2 mails of topic promotions to one customer in "
        "any 7 days",
        "quiet hours 21:00-08:00: no mail leaves in those hours of the customer's own zone; "
        "it waits for their end",
        "sunset: a customer with no sign of life for 180 days and 5 or more marketing mails "
        "since gets only the trigger: sunset campaign's mail"]
    as_json = shop.run("validate", "--explain", "--json").json()
    assert as_json["explain"] == result.stdout.splitlines()
    assert "explain" not in shop.run("validate", "--json").json()  # only when asked
    shop.write("mailer.yaml", SETTINGS + "policy: {frequency: []}\n")
    assert shop.run("validate", "--explain").stdout.splitlines() == [
        "no frequency cap: a customer may get every mail that is due"]


def test_the_reference_states_the_topic_form(shop: Workspace) -> None:
    result = shop.run("schema", "--markdown")
    assert result.code == 0
    row = next(line for line in result.stdout.splitlines()
               if line.startswith("| `policy.frequency[].topic`"))
    assert "Count only the mails of campaigns with this `topic:`" in row
    assert "without it the cap counts every campaign" in row


def test_a_bad_topic_is_an_error_with_its_line(shop: Workspace) -> None:
    shop.write("mailer.yaml", SETTINGS + "policy: {frequency: [{max: 1, per: 7d, topic: ''}]}\n")
    result = shop.run("validate")
    assert result.code == 1
    assert any(line.startswith("mailer.yaml:5: policy.frequency.0.topic:")
               for line in result.stderr.splitlines()), result.stderr


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migration_0014_gives_earlier_rows_their_campaign_versions_topic(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    from tests.test_db import _migrate_to

    url = None if backend == "sqlite" else request.getfixturevalue("fresh_postgres")
    engine = create(database_url(env_url=url, configured=None, root=tmp_path))
    try:
        _migrate_to(engine, "0013")
        now = datetime(2026, 11, 1, tzinfo=UTC).replace(tzinfo=None)
        sources = {1: "name: Sale\ntopic: promotions\n", 2: "name: Hello\n",  # default topic
                   3: "name: [broken\n"}
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO customers (id, store_id, email, email_key, consent, created_at, "
                "updated_at) VALUES (1, 'A', 'a@example.com', 'a@example.com', 'subscribed', "
                ":now, :now)"), {"now": now})
            for number, source in sources.items():
                conn.execute(text(
                    "INSERT INTO campaign_versions (id, campaign, content_hash, definition, "
                    "created_at) VALUES (:id, :campaign, :hash, :definition, :now)"),
                    {"id": number, "campaign": f"c{number}", "hash": f"h{number}", "now": now,
                     "definition": json.dumps({"campaign_source": source})})
                conn.execute(text(
                    "INSERT INTO deliveries (campaign, campaign_version_id, occurrence, "
                    "customer_id, email, subject_variant, status, attempts, planned_at, "
                    "send_after, expires_at) VALUES (:campaign, :id, 'once', 1, "
                    "'a@example.com', 0, 'sent', 1, :now, :now, :now)"),
                    {"campaign": f"c{number}", "id": number, "now": now})
        upgrade(engine)
        assert current_revision(engine) == head_revision()
        with engine.connect() as conn:
            rows = [tuple(r) for r in conn.execute(text(
                "SELECT campaign, topic FROM deliveries ORDER BY campaign"))]
        assert rows == [("c1", "promotions"), ("c2", "general"), ("c3", None)]
    finally:
        engine.dispose()


def test_preview_says_a_topic_cap_holds_a_customer_back(shop: Workspace) -> None:
    once(shop, "sale", "2026-12-01T10:00", topic="promotions")
    once(shop, "flash", "2026-12-01T12:00", topic="promotions")
    once(shop, "news", "2026-12-01T12:00", topic="newsletter")
    assert planned(run_plan(shop, ["sale"], "2026-12-01T10:00")["sale"]) == ["A", "B"]
    samples = {}
    for slug in ("flash", "news"):
        result = shop.run("preview", slug, "--customer", "A", "--now", "2026-12-01T12:00",
                          "--json")
        assert result.code == 0, result.stderr
        samples[slug] = [(s["mailable"], s["reason"]) for s in result.json()["samples"]]
    assert samples == {"flash": [(False, "frequency_cap")], "news": [(True, None)]}
