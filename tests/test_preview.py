"""Campaign files, validate's rendering checks and mailer preview (DESIGN §4.2, §4.4, §5)."""

from __future__ import annotations

import shutil
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path

import pytest

from mailer.mail.links import PREVIEW_KEY, verify
from tests.conftest import Workspace

ROOT = Path(__file__).resolve().parent.parent
NOW = "2026-11-23T10:00"
CUSTOMERS = """\
id,email,first_name,last_name,country,tags,birth_date
C1,anna@example.com,Anna,Müller,DE,vip,1990-11-25
C2,bob@example.org,"Bob\r\nBcc: all@example.org",Smith,AT,,
C3,chloe@example.net,,,FR,,
"""
ORDERS = """\
order_id,customer_id,placed_at,total,sku,category,quantity,price
O1,C1,2026-11-01T10:00,120.00,CO-1,coffee,2,60.00
O2,C2,2026-10-01T10:00,15.50,BO-1,books,1,15.50
O3,C3,2025-01-01T10:00,10,SH-1,shoes,1,10
"""


@pytest.fixture
def shop(db: Workspace) -> Workspace:
    for part in ("campaigns", "segments", "surveys", "templates"):
        shutil.copytree(ROOT / part, db.root / part)
    db.write("customers.csv", CUSTOMERS.replace("\r\n", " "))
    db.write("orders.csv", ORDERS)
    assert db.run("import", "customers", "customers.csv", "--now", NOW).code == 0
    assert db.run("import", "orders", "orders.csv", "--now", NOW).code == 0
    return db


def parse(path: Path) -> EmailMessage:
    mail = message_from_bytes(path.read_bytes(), policy=default)
    assert isinstance(mail, EmailMessage)
    return mail


def test_the_demo_workspace_validates(shop: Workspace) -> None:
    result = shop.run("validate")
    assert result.code == 0, result.stderr
    assert result.stderr.strip().endswith("0 problems in 0 files")


def test_preview_writes_complete_mails(shop: Workspace, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = shop.run("preview", "black-friday", "--sample", "3", "--out", str(out),
                      "--now", NOW, "--json")
    assert result.code == 0, result.stderr
    document = result.json()
    assert [s["id"] for s in document["samples"]] == ["C1", "C2", "C3"]
    assert [s["intro"] for s in document["samples"]] == ["vip", "default", "default"]
    assert [s["variant"] for s in document["samples"]] == [1, 2, 1]
    assert document["samples"][0]["subject"] == "Anna, 48 hours only: 30% off"
    assert document["samples"][2]["subject"] == "Friends, 48 hours only: 30% off"
    assert (out / "index.html").read_text().count("<tr>") == 4
    mail = parse(out / "black-friday-01-C1.eml")
    assert mail["From"] == "Pine & Co <hello@shop.example>"
    assert mail["To"] == "Anna Müller <anna@example.com>"
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    https, mailto = (part.strip(" <>") for part in mail["List-Unsubscribe"].split(","))
    assert mailto == "mailto:unsubscribe@shop.example?subject=unsubscribe"
    claims = verify(https.rsplit("/", 1)[1], "unsubscribe", [PREVIEW_KEY])
    assert (claims.customer, claims.campaign) == ("C1", "black-friday")
    body = mail.get_body(("html",))
    assert body is not None
    html = body.get_content()
    assert "As one of our best customers, you get first pick." in html
    assert "1 Market St, Springfield" in html and https in html
    assert "new arrivals in coffee" in html  # stats.favourite_category from SQL
    text = mail.get_body(("plain",))
    assert text is not None and f"Unsubscribe ({https})" in text.get_content()


def test_a_name_that_looks_like_a_header_stays_in_to(shop: Workspace, tmp_path: Path) -> None:
    # (A real line break never gets this far: the import refuses it; test_message covers
    # what happens if one did.)
    result = shop.run("preview", "newsletter", "--customer", "BOB@example.org", "--out",
                      str(tmp_path), "--now", NOW)
    assert result.code == 0, result.stderr
    mail = parse(next(tmp_path.glob("*.eml")))
    assert mail.get_all("To") == ['"Bob Bcc: all@example.org Smith" <bob@example.org>']
    assert mail["Bcc"] is None


def test_unknown_campaign_and_customer(shop: Workspace) -> None:
    assert shop.run("preview", "black-fridey", "--json").json()["error"]["message"] == (
        "unknown campaign 'black-fridey' (did you mean black-friday?)")
    assert shop.run("preview", "newsletter", "--customer", "nobody@example.com",
                    "--json").json()["error"]["message"] == (
        "no customer with the address nobody@example.com")


def test_validate_reports_template_and_campaign_problems(shop: Workspace) -> None:
    (shop.root / "templates" / "win-back.html").write_text(
        (ROOT / "templates" / "win-back.html").read_text().replace(
            "{{ intro }}", "{{ intro }} {{ custmer.first_name }}"))
    (shop.root / "templates" / "footer.html").write_text("<p>{{ store.name }}</p>\n")
    shop.write("campaigns/black-friday.yaml",
               (ROOT / "campaigns" / "black-friday.yaml").read_text()
               .replace("ends: 2026-11-29T08:00", "ends: 2026-11-20T08:00"))
    shop.write("campaigns/newsletter.yaml",
               (ROOT / "campaigns" / "newsletter.yaml").read_text()
               .replace('"0 10 1 * *"', '"0 0 10 1 * *"'))
    result = shop.run("validate")
    assert result.code == 1
    lines = result.stderr.splitlines()
    assert "campaigns/black-friday.yaml:1: ends must be after starts" in lines
    shop.write("campaigns/black-friday.yaml",
               (ROOT / "campaigns" / "black-friday.yaml").read_text().replace("  vip:", "  vipp:"))
    assert ("campaigns/black-friday.yaml:12: intros.vipp: unknown segment 'vipp' "
            "(did you mean vip?)") in shop.run("validate").stderr.splitlines()
    assert ("campaigns/newsletter.yaml:3: schedule: a cron line has five fields "
            "(minute hour day month weekday), got 6: '0 0 10 1 * *'") in lines
    assert "templates/win-back.html:4: unknown variable custmer (did you mean customer?)" in lines
    assert ("campaigns/birthday.yaml:1: template: the rendered mail of birthday.html lacks "
            "the unsubscribe link ({{ links.unsubscribe }})") in lines
    assert ("campaigns/referral.yaml:1: template: the rendered mail of referral.html lacks "
            "the store's postal address ({{ store.address }})") in lines


def test_an_address_typed_into_the_template_in_any_script_passes_validate(
        shop: Workspace) -> None:
    address = "Königstraße 5 & Söhne, 10117 Berlin"
    shop.write("mailer.yaml", (ROOT / "mailer.yaml").read_text().replace(
        '"1 Market St, Springfield"', f'"{address}"'))
    (shop.root / "templates" / "footer.html").write_text(
        f"<p>{address.replace('&', '&amp;')} · "
        '<a href="{{ links.unsubscribe }}">Unsubscribe</a></p>\n')
    result = shop.run("validate")
    assert result.code == 0, result.stderr
    (shop.root / "templates" / "footer.html").write_text(
        '<p>Königstraße 5 · <a href="{{ links.unsubscribe }}">Unsubscribe</a></p>\n')
    assert "lacks the store's postal address" in shop.run("validate").stderr


def test_validate_reports_fallbacks_for_real_customers(shop: Workspace) -> None:
    result = shop.run("validate", "--json")
    assert result.code == 0, result.stderr
    warnings = {w["path"]: w for w in result.json()["warnings"]}
    assert warnings["campaigns/black-friday.yaml"] == {
        "path": "campaigns/black-friday.yaml", "line": None, "field": "subject",
        "message": "uses the default first_name for 33% of its segment (1 of 3 customers)"}
