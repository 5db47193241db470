"""trigger: signup (issue 20 step 2): due `after` a customer's signed_up_at, occurrence
`signup`, expiring 24 h after it is due, so a new welcome campaign on an old store mails
nobody old, and a customer arriving by webhook gets the welcome at the next plan; on
both databases, through the real CLI and a real `mailer serve`."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mailer.app.send import compile_versions
from mailer.config.settings import parse_settings
from mailer.config.workspace import load_valid_workspace
from mailer.core.clock import parse_local, zone
from mailer.planning import planner
from mailer.planning.planner import PlanResult, plan_due
from mailer.segments.runner import scope_for
from tests.conftest import SETTINGS, Workspace
from tests.test_hooks import SECRETS, sample, shopify
from tests.test_serve import serving

WELCOME = ("name: Welcome\ntrigger: signup\nafter: 0s\nsegment: everyone\n"
           "template: mail.html\nsubject: Welcome, {{ customer.first_name }}\n")
SECOND = WELCOME.replace("after: 0s", "after: 3d").replace("name: Welcome", "name: Tips")
TEMPLATE = ("<p>Hello {{ customer.first_name }}. {{ store.address }} "
            "<a href='{{ links.unsubscribe }}'>unsubscribe</a></p>\n")
# NOW is 2026-11-23T16:00 in Berlin: 15:00Z. DAY is signed up exactly 24 h before (its
# mail expired at NOW), HOUR an hour ago, SOON a minute after NOW.
CUSTOMERS = """\
id,email,first_name,signed_up_at,subscribed
OLD,old@example.com,Olaf,2024-03-01T10:00:00Z,true
WEEK,week@example.com,Wera,2026-11-16T15:00:00Z,true
DAY,day@example.com,Dana,2026-11-22T15:00:00Z,true
JUST,just@example.com,Jens,2026-11-22T15:00:01Z,true
HOUR,hour@example.com,Hana,2026-11-23T14:00:00Z,true
SOON,soon@example.com,Sam,2026-11-23T15:01:00Z,true
NONE,none@example.com,Nils,,true
"""
NOW = "2026-11-23T16:00"


def shop(db: Workspace) -> Workspace:
    db.write("mailer.yaml", SETTINGS + "policy: {frequency: []}\n")
    db.write("segments/everyone.yaml", "description: all\nall: [{orders: {at_least: 0}}]\n")
    db.write("templates/mail.html", TEMPLATE)
    db.write("customers.csv", CUSTOMERS)
    assert db.run("import", "customers", "customers.csv", "--now", "2026-11-23T16:00").code == 0
    db.write("campaigns/welcome.yaml", WELCOME)
    db.write("campaigns/tips.yaml", SECOND)
    return db


def planned(db: Workspace, slug: str, now: str) -> dict[str, dict[str, object]]:
    """`plan SLUG --now NOW --json`: each candidate's id → its row (reason None: planned)."""
    result = db.run("plan", slug, "--now", now, "--json")
    assert result.code == 0, result.stdout + result.stderr
    document = result.json()
    found = {r["id"]: {**r, "reason": None} for r in document["recipients"]}
    found.update({e["id"]: e for e in document["excluded"]})
    return found


def test_a_new_welcome_campaign_on_an_old_store_mails_nobody_old(db: Workspace) -> None:
    shop(db)
    fates = planned(db, "welcome", NOW)
    # only sign-ups of the last 24 h are candidates at all: OLD, WEEK and DAY (exactly
    # 24 h ago: expired at NOW) are not even excluded; SOON is not due yet
    assert sorted(fates) == ["HOUR", "JUST"]
    assert all(f["reason"] is None and f["occurrence"] == "signup" for f in fates.values())
    first = run_plan(db, "welcome", NOW)  # writes the ledger, as `send` does
    # each mail expires 24 h after it was due: its own sign-up + 24 h
    assert {(p.id, p.occurrence, p.expires) for p in first.planned} == {
        ("HOUR", "signup", datetime(2026, 11, 24, 14, tzinfo=UTC)),
        ("JUST", "signup", datetime(2026, 11, 23, 15, 0, 1, tzinfo=UTC))}
    # two minutes later SOON is due, HOUR is planned already (the ledger says so) and
    # JUST's due time is more than 24 h ago: no candidate any more
    later = planned(db, "welcome", "2026-11-23T16:02")
    assert {k: v["reason"] for k, v in later.items()} == {
        "HOUR": "already_sent", "SOON": None}
    # the series' second mail, 3 days on: nobody's is due at NOW; at 14:30Z three days
    # later those who signed up 3 d to 4 d before (DAY, JUST, HOUR; SOON not yet)
    assert planned(db, "tips", NOW) == {}
    assert sorted(planned(db, "tips", "2026-11-26T15:30")) == ["DAY", "HOUR", "JUST"]


def test_a_customer_arriving_by_webhook_gets_the_welcome_at_the_next_plan(
        db: Workspace) -> None:
    shop(db)
    # Shopify's customers/create: created_at 2026-11-23T09:12:44-05:00 (14:12:44Z)
    with serving(db, **SECRETS) as hooks:
        assert shopify(hooks, "customers/create", sample("shopify_customers_create.json"),
                       "signup-1")[0] == 200
    fates = planned(db, "welcome", NOW)
    ana = [row for row in fates.values() if row["email"] == "ana.lima@example.com"]
    assert len(ana) == 1 and ana[0]["reason"] is None and ana[0]["occurrence"] == "signup"
    assert sorted(store_id for store_id, row in fates.items()
                  if row["email"] != "ana.lima@example.com") == ["HOUR", "JUST"]
    # unplanned, her welcome expires 24 h after her sign-up: at 14:13Z the next day she
    # is no candidate any more (SOON still is), and by 15:02Z nobody is
    assert sorted(planned(db, "welcome", "2026-11-24T15:13")) == ["SOON"]
    assert planned(db, "welcome", "2026-11-24T16:02") == {}


def run_plan(db: Workspace, slug: str, now: str) -> PlanResult:
    """One planning run at NOW that writes the ledger, as `send` plans before it sends."""
    settings, _ = parse_settings(SETTINGS + "policy: {frequency: []}\n")
    specs, campaigns = load_valid_workspace(db.root)
    engine = db.engine()
    try:
        scope = scope_for(settings, parse_local(now, zone(settings.timezone)), engine)
        return plan_due(engine, specs, {slug: campaigns[slug]}, scope=scope,
                        settings=settings,
                        versions=compile_versions(db.root, {slug: campaigns[slug]}))[0]
    finally:
        engine.dispose()


def test_each_row_keeps_its_own_expiry_through_the_paged_candidates(
        db: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """More candidates than a page: the rows go through the temporary table, and each
    keeps its sign-up's expiry (the third column)."""
    shop(db)
    monkeypatch.setattr(planner, "BATCH", 1)
    result = run_plan(db, "welcome", NOW)
    assert {(p.id, p.expires) for p in result.planned} == {
        ("HOUR", datetime(2026, 11, 24, 14, tzinfo=UTC)),
        ("JUST", datetime(2026, 11, 23, 15, 0, 1, tzinfo=UTC))}
