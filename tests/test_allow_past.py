"""A `--now` before the store's latest planning run (issue 15, item 12).

The commands that write plans (`send`, `run --once`, `run`) refuse it unless
`--allow-past`: caps, cooldowns and due occurrences would be judged as if the
mails planned later had not been. The dry runs (`plan`, `send --dry-run`) are
not refused.
"""

from __future__ import annotations

from typing import Any

from tests.conftest import SETTINGS, Workspace
from tests.smtp_server import FaultServer

KEY = "test-secret-key-0123456789"
LATER, EARLIER = "2026-11-23T10:30", "2026-11-22T10:30"  # Berlin: 09:30Z on each day
REFUSED = ("--now 2026-11-22T09:30:00Z is before the latest planning run on this store "
           "(2026-11-23T09:30:")


def shop(db: Workspace, server: FaultServer) -> Workspace:
    db.write("mailer.yaml", SETTINGS)
    db.write("segments/everyone.yaml", "description: all\nall: [{orders: {at_least: 0}}]\n")
    db.write("templates/note.html", "<p>Hi. {{ store.address }} "
                                    "<a href=\"{{ links.unsubscribe }}\">unsubscribe</a></p>\n")
    db.write("campaigns/daily.yaml", "name: Daily\ntrigger: schedule\nschedule: '0 10 * * *'\n"
                                     "grace: 6h\nsegment: everyone\ntemplate: note.html\n"
                                     "subject: Daily note\n")
    db.write("customers.csv", "id,email\nC1,c1@example.com\nC2,c2@example.com\n")
    assert db.run("import", "customers", "customers.csv", "--now", "2026-01-01").code == 0
    db.env.update({"MAILER_SMTP_URL": server.url + "?timeout=10", "MAILER_SECRET_KEY": KEY})
    return db


def occurrences(db: Workspace) -> list[str]:
    return sorted(row[0] for row in db.query("SELECT occurrence FROM deliveries"))


def plan_runs(db: Workspace) -> int:
    return len(db.query("SELECT id FROM plan_runs"))


def refused(result: Any) -> None:
    assert result.code == 1, result.stdout + result.stderr
    message = result.json()["error"]["message"]
    assert message.startswith(REFUSED), message
    assert message.endswith("add --allow-past to plan in the past anyway")


def test_commands_that_write_plans_refuse_a_past_now(db: Workspace) -> None:
    with FaultServer() as server:
        shop(db, server)
        first = db.run("send", "daily", "--now", LATER, "--json")
        assert first.code == 0 and first.json()["sent"] == 2, first.stdout + first.stderr
        runs = plan_runs(db)
        refused(db.run("send", "daily", "--now", EARLIER, "--json"))
        refused(db.run("run", "--once", "--now", EARLIER, "--json"))
        refused(db.run("run", "--once", "--no-deliver", "--now", EARLIER, "--json"))
        refused(db.run("run", "--now", EARLIER, "--json"))  # the daemon does not start
        # nothing was planned, recorded or sent by the refused commands
        assert occurrences(db) == ["cron:2026-11-23T09:00:00Z"] * 2
        assert plan_runs(db) == runs
        assert len(server.caught) == 2
        # running again at the same --now is not the past: idempotent as ever
        again = db.run("send", "daily", "--now", LATER, "--json")
        assert again.code == 0 and again.json()["excluded"] == {"already_sent": 2}


def test_dry_runs_are_not_refused(db: Workspace) -> None:
    with FaultServer() as server:
        shop(db, server)
        assert db.run("send", "daily", "--now", LATER, "--json").code == 0
        plan = db.run("plan", "daily", "--now", EARLIER, "--json")
        assert plan.code == 0, plan.stdout + plan.stderr
        assert {r["occurrence"] for r in plan.json()["recipients"]} == {
            "cron:2026-11-22T09:00:00Z"}
        dry = db.run("send", "daily", "--dry-run", "--now", EARLIER, "--json",
                     "--out", str(db.root / "dry"))
        assert dry.code == 0, dry.stdout + dry.stderr
        assert len(server.caught) == 2


def test_allow_past_plans_and_sends_in_the_past(db: Workspace) -> None:
    with FaultServer() as server:
        shop(db, server)
        assert db.run("send", "daily", "--now", LATER, "--json").code == 0
        past = db.run("send", "daily", "--now", EARLIER, "--allow-past", "--json")
        assert past.code == 0, past.stdout + past.stderr
        assert past.json()["sent"] == 2
        once = db.run("run", "--once", "--no-deliver", "--now", "2026-11-21T10:30",
                      "--allow-past", "--json")
        assert once.code == 0, once.stdout + once.stderr
        assert once.json()["campaigns"]["daily"]["planned"] == 2
        assert occurrences(db) == sorted(
            [f"cron:2026-11-{day}T09:00:00Z" for day in (21, 22, 23)] * 2)
        assert sorted(c.recipient for c in server.caught) == [
            "c1@example.com", "c1@example.com", "c2@example.com", "c2@example.com"]
