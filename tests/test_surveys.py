"""Survey files as `mailer validate` reads them (every rule at its file and line, with
"did you mean"), and the survey frozen into the campaign version (docs/surveys.md)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailer.app.validation import validate_workspace
from mailer.config.workspace import init_workspace, load_valid_workspace
from mailer.core.errors import ConfigError
from mailer.mail.version import compile_version, definition, from_definition
from tests.conftest import SETTINGS, Workspace

NOW = datetime(2026, 4, 1, 12, tzinfo=UTC)

GOOD = """\
title: How was your order?
questions:
  - {id: overall,   ask: "How happy are you?",        kind: rating, weight: 2}
  - {id: delivery,  ask: "How was the delivery?",     kind: rating}
  - {id: recommend, ask: "Would you recommend us?",   kind: nps}
  - {id: found_us,  ask: "How did you find us?",      kind: choice, options: [search, friend]}
  - {id: comment,   ask: "Anything we could do better?", kind: text}
alert: {question: overall, at_most: 2}
"""


def demo(ws: Workspace) -> Workspace:
    init_workspace(ws.root, force=True)
    ws.write("mailer.yaml", SETTINGS)
    return ws


def problems(ws: Workspace, survey: str) -> list[str]:
    """What `mailer validate` prints about surveys/order.yaml holding SURVEY."""
    ws.write("surveys/order.yaml", survey)
    result = ws.run("validate")
    return [line for line in result.stderr.splitlines() if line.startswith("surveys/order")]


def test_a_good_survey_validates_clean(ws: Workspace) -> None:
    assert problems(demo(ws), GOOD) == []


def test_the_demo_survey_validates_clean(ws: Workspace) -> None:
    demo(ws)
    assert [str(p) for p in validate_workspace(ws.root, now=NOW)
            if p.path.startswith("surveys/")] == []


@pytest.mark.parametrize(("edit", "expected"), [
    (("kind: rating, weight: 2}", "kind: text}"),
     "surveys/order.yaml:3: questions.0.kind: the first question is text: it must be rating "
     "or nps (its answers are the mail's links)\n"
     "surveys/order.yaml:8: alert.question: text question 'overall': an alert watches a "
     "rating or nps question"),
    (("kind: rating}", "kind: nps}"),
     "surveys/order.yaml:5: questions.2.kind: a survey has at most one nps question"),
    (("id: delivery", "id: overall"),
     "surveys/order.yaml:4: questions.1.id: id 'overall' is used by question 0 already"),
    (("weight: 2", "weight: 0"),
     "surveys/order.yaml:3: questions.0.weight: Input should be greater than 0"),
    (("kind: nps}", "kind: nps, weight: 2}"),
     "surveys/order.yaml:5: questions.2: weight works with rating questions only (the CSI "
     "weighs ratings)"),
    (("kind: choice, options: [search, friend]}", "kind: choice}"),
     "surveys/order.yaml:6: questions.3: a choice question needs options: at least two"),
    (("kind: choice, options: [search, friend]}", "kind: choice, options: [a, a]}"),
     "surveys/order.yaml:6: questions.3: option 'a' is listed twice"),
    (("kind: text}", "kind: txt}"),
     "surveys/order.yaml:7: questions.4.kind: input should be 'rating', 'nps', 'choice' or "
     "'text', got 'txt'"),
    (("ask: \"How happy", "asks: \"How happy"),
     "surveys/order.yaml:3: questions.0.ask: required key is missing\n"
     "surveys/order.yaml:3: questions.0.asks: unknown key (did you mean ask?)"),
    (("question: overall", "question: overal"),
     "surveys/order.yaml:8: alert.question: unknown question 'overal': an alert watches a "
     "rating or nps question (did you mean overall?)"),
    (("question: overall", "question: found_us"),
     "surveys/order.yaml:8: alert.question: choice question 'found_us': an alert watches a "
     "rating or nps question"),
    (("at_most: 2", "at_most: 5"),
     "surveys/order.yaml:8: alert.at_most: expected 1 to 4 for a rating question (1–5), got 5"),
    (("at_most: 2}", "at_most: 2, to: not-an-address}"),
     "surveys/order.yaml:8: alert.to: invalid email 'not-an-address': An email address must "
     "have an @-sign."),
    (("weight: 2", "weight: .inf"),
     "surveys/order.yaml:3: questions.0.weight: Input should be a finite number"),
])
def test_each_rule_is_an_error_at_its_line(ws: Workspace, edit: tuple[str, str],
                                           expected: str) -> None:
    old, new = edit
    assert old in GOOD
    assert problems(demo(ws), GOOD.replace(old, new, 1)) == expected.split("\n")


def test_six_questions_warn_and_seven_are_an_error(ws: Workspace) -> None:
    demo(ws)
    six = GOOD.replace("alert:", '  - {id: easy, ask: "Was it easy?", kind: rating}\nalert:')
    assert problems(ws, six) == [
        "surveys/order.yaml:2: warning: questions: 6 questions: more than 5 and fewer readers "
        "finish"]
    seven = six.replace("alert:", '  - {id: again, ask: "Again?", kind: rating}\nalert:')
    assert problems(ws, seven) == [
        "surveys/order.yaml:9: questions: 7 questions: a survey asks at most 6"]
    assert ws.run("validate").code == 1


def name_survey(path: Path, survey: str | None) -> None:
    """The campaign file at PATH naming SURVEY (None: no survey), as its last line."""
    kept = [line for line in path.read_text().splitlines() if not line.startswith("survey:")]
    path.write_text("\n".join(kept + ([f"survey: {survey}"] if survey else [])) + "\n")


def test_an_unknown_survey_in_a_campaign_is_an_error_with_did_you_mean(ws: Workspace) -> None:
    demo(ws)
    path = ws.root / "campaigns" / "feedback.yaml"
    name_survey(path, "feedbak")
    line = len(path.read_text().splitlines())
    result = ws.run("validate", "--json")
    assert result.code == 1
    assert result.json()["problems"] == [{
        "path": "campaigns/feedback.yaml", "line": line, "field": "survey",
        "message": "unknown survey 'feedbak' (did you mean feedback?)"}]


def test_a_campaign_naming_a_broken_survey_says_so_and_commands_refuse(ws: Workspace) -> None:
    demo(ws)
    path = ws.root / "campaigns" / "feedback.yaml"
    name_survey(path, "feedback")
    ws.write("surveys/feedback.yaml", GOOD.replace("kind: nps}", "kind: rating, weight: -1}"))
    messages = [str(p) for p in validate_workspace(ws.root, now=NOW) if not p.warning]
    assert messages == [
        "surveys/feedback.yaml:5: questions.2.weight: Input should be greater than 0",
        f"campaigns/feedback.yaml:{len(path.read_text().splitlines())}: survey: survey "
        "'feedback' has problems of its own (surveys/feedback.yaml)"]
    with pytest.raises(ConfigError):
        load_valid_workspace(ws.root)


def _digest(stored: dict[str, object]) -> str:
    """The content hash campaign_versions keys a definition by (mailer.store.versions)."""
    return hashlib.sha256(json.dumps(stored, sort_keys=True).encode()).hexdigest()


def test_the_survey_is_frozen_into_the_version_and_its_hash_follows_the_text(
        ws: Workspace) -> None:
    demo(ws)
    name_survey(ws.root / "campaigns" / "feedback.yaml", None)
    _, campaigns = load_valid_workspace(ws.root)
    plain = definition(compile_version("feedback", campaigns["feedback"], ws.root / "templates"),
                       ws.root)
    assert "survey" not in plain  # a campaign without a survey keeps the hash it had

    path = ws.root / "campaigns" / "feedback.yaml"
    name_survey(path, "feedback")
    ws.write("surveys/feedback.yaml", GOOD)
    _, campaigns = load_valid_workspace(ws.root)
    spec = campaigns["feedback"]
    before = definition(compile_version("feedback", spec, ws.root / "templates"), ws.root)
    assert before["survey"] == {"name": "feedback", "source": GOOD}
    again = definition(compile_version("feedback", spec, ws.root / "templates"), ws.root)
    assert _digest(again) == _digest(before)

    ws.write("surveys/feedback.yaml", GOOD.replace("How happy are you?", "How happy are you now?"))
    after = definition(compile_version("feedback", spec, ws.root / "templates"), ws.root)
    assert _digest(after) != _digest(before)

    # a worker renders from what was stored: the question as it was when planned
    version, _ = from_definition(before)
    assert version.survey is not None
    assert version.survey.questions[0].ask == "How happy are you?"
    assert [q.id for q in version.survey.questions] == [
        "overall", "delivery", "recommend", "found_us", "comment"]


def test_an_alert_goes_to_the_bare_address_of_a_named_recipient() -> None:
    """`Care Team <care@shop.example>` is fine in mailer.yaml and in the survey file; the
    SMTP envelope takes only the address (a display name there fails the notice for good)."""
    from mailer.config.survey import Alert, alert_recipient

    named = Alert(question="overall", at_most=2, to="Care Team <care@shop.example>")
    assert alert_recipient(named, reply_to=None, sender="x@shop.example") == "care@shop.example"
    bare = Alert(question="overall", at_most=2)
    assert alert_recipient(bare, reply_to="Help <help@shop.example>",
                           sender="Pine <hello@shop.example>") == "help@shop.example"
    assert alert_recipient(bare, reply_to=None,
                           sender="Pine & Co <hello@shop.example>") == "hello@shop.example"
