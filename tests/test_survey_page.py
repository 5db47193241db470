"""Answering a survey from the mail (issue 19, item 2; docs/surveys.md): the mail's
`links.survey` links, the survey page of `mailer serve` (GET records nothing, one POST
records every answer with the campaign version's hash, a later POST replaces answers
question by question), its 400s, forged links, and the frozen survey behind a mail
already sent; against the real service in a subprocess and mails that went through SMTP."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import pytest

from mailer.mail.links import Claims, sign, verify
from tests.conftest import SETTINGS, Workspace
from tests.smtp_server import FaultServer
from tests.test_delivery import KEY, send
from tests.test_serve import Service, hrefs, serving

BASE = "https://mail.shop.example"
SURVEY = """\
title: How was your order?
questions:
  - {id: overall,   ask: "How happy are you with your order?",  kind: rating, weight: 2}
  - {id: delivery,  ask: "How was the delivery?",               kind: rating}
  - {id: recommend, ask: "How likely are you to recommend us?", kind: nps}
  - {id: found_us,  ask: "How did you find us?",                kind: choice,
     options: [search, friend, social, ad, other]}
  - {id: comment,   ask: "Anything we could do better?",        kind: text}
alert: {question: overall, at_most: 2, to: care@shop.example}
"""
TEMPLATE = """<html><body><p>Hello {{ customer.first_name }}, how was it?</p>
<p>{% for score, url in links.survey.items() %}<a href="{{ url }}">{{ score }}</a>{% endfor %}</p>
<p>{{ store.address }} · <a href="{{ links.unsubscribe }}">unsubscribe</a></p></body></html>
"""
CAMPAIGN = ("name: Asked\ntrigger: once\nat: 2026-11-23T09:00\ngrace: 2d\nsegment: everyone\n"
            "template: asked.html\nsubject: How was it?\nsurvey: order\n")
ADDRESSES = ["anna@example.com", "bob@example.com"]
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def shop(db: Workspace, survey: str = SURVEY) -> None:
    db.write("mailer.yaml", SETTINGS + "policy: {frequency: []}\n")
    db.write("segments/everyone.yaml", "description: all\nall: [{orders: {at_least: 0}}]\n")
    db.write("templates/asked.html", TEMPLATE)
    db.write("surveys/order.yaml", survey)
    db.write("campaigns/asked.yaml", CAMPAIGN)
    rows = ["id,email,first_name"] + [f"C{n},{a},Name{n}" for n, a in enumerate(ADDRESSES)]
    db.write("customers.csv", "\n".join(rows) + "\n")
    assert db.run("import", "customers", "customers.csv", "--now", "2026-01-01").code == 0


def sent(db: Workspace) -> dict[str, EmailMessage]:
    with FaultServer() as server:
        assert send(db, server, "asked")["sent"] == len(ADDRESSES)
    return {c.recipient: c.message() for c in server.caught}


def survey_links(mail: EmailMessage) -> list[str]:
    return [h for h in hrefs(mail) if h.startswith(f"{BASE}/s/")]


@pytest.fixture
def served(db: Workspace) -> Iterator[tuple[Service, dict[str, EmailMessage]]]:
    shop(db)
    mails = sent(db)
    with serving(db) as service:
        yield service, mails


def answers(db: Workspace) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in db.query(
        "SELECT c.email, r.campaign, r.occurrence, r.survey, r.version_hash, r.question, "
        "r.value_number, r.value_text FROM responses r JOIN customers c ON c.id = "
        "r.customer_id ORDER BY c.email, r.question")]


def version_hash(db: Workspace) -> str:
    found = db.query("SELECT DISTINCT v.content_hash FROM deliveries d JOIN campaign_versions v "
                     "ON v.id = d.campaign_version_id")
    assert len(found) == 1
    return str(found[0][0])


def post(service: Service, url: str, body: str) -> tuple[int, str]:
    status, _, page = service.request("POST", url, body=body, headers=FORM)
    return status, page.decode()


def form(**fields: str) -> str:
    return urllib.parse.urlencode(fields)


# --- the mail's links --------------------------------------------------------------------


def test_the_mail_carries_one_signed_survey_link_per_first_answer(db: Workspace) -> None:
    shop(db)
    mails = sent(db)
    links = survey_links(mails["anna@example.com"])
    row = str(db.query("SELECT d.id FROM deliveries d JOIN customers c ON c.id = "
                       "d.customer_id WHERE c.email = 'anna@example.com'")[0][0])
    assert [verify(u.rsplit("/", 1)[1], "survey", [KEY]) for u in links] == [
        Claims("survey", "C0", "asked", row, str(n)) for n in range(1, 6)]
    assert not any("/c/" in h for h in hrefs(mails["anna@example.com"]))  # never tracked


def test_an_nps_first_question_gets_links_from_0_to_10(db: Workspace) -> None:
    nps_first = SURVEY.replace("questions:\n", "questions:\n  - {id: likely, ask: \"Tell a "
                               "friend?\", kind: nps}\n").replace(
        "  - {id: recommend, ask: \"How likely are you to recommend us?\", kind: nps}\n", "")
    shop(db, nps_first)
    links = survey_links(sent(db)["bob@example.com"])
    assert [verify(u.rsplit("/", 1)[1], "survey", [KEY]).extra for u in links] == [
        str(n) for n in range(11)]


def test_validate_refuses_links_survey_in_a_campaign_without_a_survey(db: Workspace) -> None:
    shop(db)
    db.write("campaigns/asked.yaml", CAMPAIGN.replace("survey: order\n", ""))
    result = db.run("validate", "--json")
    assert result.code == 1
    assert [p for p in result.json()["problems"] if p["path"] != "mailer.yaml"] == [{
        "path": "templates/asked.html", "line": 2, "field": None,
        "message": "links.survey is not set for this campaign: it names no survey "
                   "(survey: NAME)"}]


# --- the page ---------------------------------------------------------------------------


def test_get_shows_the_survey_with_the_first_answer_chosen_and_records_nothing(
        db: Workspace, served: tuple[Service, dict[str, EmailMessage]]) -> None:
    service, mails = served
    link = survey_links(mails["anna@example.com"])[3]  # "4"
    for _ in range(2):  # a mail scanner, then the reader
        status, headers, page = service.request("GET", link)
        assert status == 200
    text = page.decode()
    assert "<h1>How was your order?</h1>" in text
    assert re.search(r'id="overall-4" value="4" checked>', text)
    assert len(re.findall(r" checked>", text)) == 1
    assert "How likely are you to recommend us?" in text and 'value="friend"' in text
    assert 'maxlength="2000"' in text and "set-cookie" not in headers
    assert answers(db) == []


def test_post_records_every_answer_with_the_version_hash_and_a_second_post_replaces_one(
        db: Workspace, served: tuple[Service, dict[str, EmailMessage]]) -> None:
    service, mails = served
    anna = survey_links(mails["anna@example.com"])[3]
    status, page = post(service, anna, form(overall="4", delivery="5", recommend="9",
                                            found_us="friend", comment="Lovely <b>box</b>"))
    assert status == 200 and "Thank you!" in page and "your 5 answers" in page
    digest = version_hash(db)
    row = ("anna@example.com", "asked", "once", "order", digest)
    assert answers(db) == [(*row, "comment", None, "Lovely <b>box</b>"),
                           (*row, "delivery", 5, None), (*row, "found_us", None, "friend"),
                           (*row, "overall", 4, None), (*row, "recommend", 9, None)]
    assert db.query("SELECT count(*) FROM notices")[0][0] == 0  # 4 is no low score
    # later, from another of the mail's links: only what is sent again changes
    status, page = post(service, survey_links(mails["anna@example.com"])[1],
                        form(overall="2", delivery="", comment=""))
    assert status == 200 and "your 1 answer (of 5 questions)" in page
    assert answers(db) == [(*row, "comment", None, "Lovely <b>box</b>"),
                           (*row, "delivery", 5, None), (*row, "found_us", None, "friend"),
                           (*row, "overall", 2, None), (*row, "recommend", 9, None)]
    # overall 2 is at the alert's at_most: one alert, queued with the answer
    alerts = [tuple(r) for r in db.query("SELECT kind, \"to\", status FROM notices")]
    assert alerts == [("alert", "care@shop.example", "queued")]
    assert post(service, anna, form(overall="1"))[0] == 200
    assert db.query("SELECT count(*) FROM notices")[0][0] == 1  # once per mail
    # and the command counts it
    scores = db.run("responses", "order", "--json").json()
    assert scores["responses"] == 1 and scores["questions"][0]["mean"] == 1.0


@pytest.mark.parametrize(("fields", "message"), [
    ({"overall": "6"}, "overall: &#39;6&#39; is not an answer from 1 to 5"),
    ({"overall": "4", "recommend": "11"}, "recommend: &#39;11&#39; is not an answer from 0 "
                                          "to 10"),
    ({"overall": "-1"}, "overall: &#39;-1&#39; is not an answer from 1 to 5"),
    ({"found_us": "tv"}, "found_us: &#39;tv&#39; is not one of search, friend, social, ad, "
                         "other"),
    ({"comment": "x" * 2001}, "comment: 2,001 characters; a comment is at most 2,000"),
    ({"mood": "3"}, "&#39;mood&#39; is not a question of this survey"),
    ({"overall": ""}, "no question answered"),
])
def test_a_bad_answer_is_400_naming_the_question_and_records_nothing(
        db: Workspace, served: tuple[Service, dict[str, EmailMessage]],
        fields: dict[str, str], message: str) -> None:
    service, mails = served
    status, page = post(service, survey_links(mails["bob@example.com"])[0], form(**fields))
    assert status == 400 and message in page
    assert answers(db) == []


def test_a_comment_of_2000_characters_is_kept_whole(
        db: Workspace, served: tuple[Service, dict[str, EmailMessage]]) -> None:
    service, mails = served
    text = "é" * 1999 + "\U0001F600"  # 2,000 characters, ~24 kB form-encoded
    assert post(service, survey_links(mails["bob@example.com"])[0], form(comment=text))[0] == 200
    assert [a[-1] for a in answers(db)] == [text]


def test_forged_tampered_and_other_purpose_tokens_are_refused(
        db: Workspace, served: tuple[Service, dict[str, EmailMessage]]) -> None:
    service, mails = served
    link = survey_links(mails["anna@example.com"])[4]
    claims = verify(link.rsplit("/", 1)[1], "survey", [KEY])
    forged = sign(Claims("survey", "C0", "asked", claims.message, "5"), "not-our-key")
    other = sign(Claims("rating", "C0", "asked", claims.message, "5"), KEY)
    # bob's signature on anna's payload, a row that is not this customer's, no such row
    bob = verify(survey_links(mails["bob@example.com"])[0].rsplit("/", 1)[1], "survey", [KEY])
    not_hers = sign(Claims("survey", "C0", "asked", bob.message, "5"), KEY)
    no_row = sign(Claims("survey", "C0", "asked", "999999", "5"), KEY)
    out_of_range = sign(Claims("survey", "C0", "asked", claims.message, "9"), KEY)
    for token, status in [(forged, 400), (other, 400), (link.rsplit("/", 1)[1][:-2], 400),
                          (not_hers, 404), (no_row, 404), (out_of_range, 400)]:
        assert service.request("GET", f"/s/{token}")[0] == status, token
        assert post(service, f"/s/{token}", form(overall="5"))[0] == status, token
    assert answers(db) == []


def test_the_page_behind_a_sent_mail_keeps_the_frozen_question_after_the_file_changes(
        db: Workspace, served: tuple[Service, dict[str, EmailMessage]]) -> None:
    service, mails = served
    db.write("surveys/order.yaml", SURVEY.replace("How was the delivery?", "Was it quick?")
             .replace("search, friend", "search, neighbour"))
    link = survey_links(mails["anna@example.com"])[2]
    page = service.request("GET", link)[2].decode()
    assert "How was the delivery?" in page and "Was it quick?" not in page
    assert 'value="friend"' in page and "neighbour" not in page
    assert post(service, link, form(found_us="friend"))[0] == 200  # the frozen options
    assert answers(db)[0][3:] == ("order", version_hash(db), "found_us", None, "friend")


def test_old_rating_links_record_nothing_on_get_and_the_rating_on_post(
        db: Workspace, served: tuple[Service, dict[str, EmailMessage]]) -> None:
    service, _mails = served
    row = db.query("SELECT d.id FROM deliveries d JOIN customers c ON c.id = d.customer_id "
                   "WHERE c.email = 'bob@example.com'")[0][0]
    rating = f"/r/{sign(Claims('rating', 'C1', 'asked', str(row), '3'), KEY)}"
    status, _, page = service.request("GET", rating)
    assert status == 200 and b"3 of 5" in page and b'id="send"' in page
    assert db.query("SELECT count(*) FROM events WHERE kind = 'rating'")[0][0] == 0
    assert post(service, rating, "comment=")[0] == 200
    assert [tuple(r) for r in db.query("SELECT score, comment FROM events WHERE kind = "
                                       "'rating'")] == [(3, None)]
