"""mailer.yaml (DESIGN §4.0): required keys, defaults, secrets, every problem with its line."""

from __future__ import annotations

from datetime import timedelta

import pytest

from mailer.config.settings import Environment, parse_settings
from mailer.core.errors import ConfigError
from tests.conftest import Workspace

MINIMAL = 'store: {name: Shop, address: "1 Road"}\nsender: {from: "Shop <hi@shop.example>"}\n'


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_settings(text)
    return [str(p) for p in caught.value.problems]


def test_defaults() -> None:
    settings, warnings = parse_settings(MINIMAL)
    assert settings.timezone == "UTC"
    assert settings.store.currency == "EUR"
    assert [(c.max, c.per) for c in settings.policy.frequency] == [
        (1, timedelta(hours=24)), (3, timedelta(days=7))]
    assert settings.policy.quiet_hours is None
    assert (settings.delivery.concurrency, settings.delivery.rate_per_second,
            settings.delivery.retry_for) == (10, 100, timedelta(days=2))
    assert settings.tracking.base_url == "http://127.0.0.1:8080"
    assert settings.sender.unsubscribe_address == "unsubscribe@shop.example"
    assert settings.dkim is None
    assert [str(w) for w in warnings] == [
        "mailer.yaml: warning: tracking.base_url: not set: links in mails point at "
        "http://127.0.0.1:8080, which only works on this machine"]


def test_no_caps_when_frequency_is_empty() -> None:
    settings, _ = parse_settings(MINIMAL + "policy: {frequency: []}\n")
    assert settings.policy.frequency == ()


def test_every_problem_with_its_line_and_a_hint() -> None:
    assert problems(
        "store: {name: X, adress: y}\n"
        "sender: {from: nope}\n"
        "timezone: Europe/Berln\n"
        "policy:\n"
        "  frequency:\n"
        "    - {max: 1, per: seven}\n"
        "  quiet_hours: 25:00-08:00\n"
        "delivery: {concurency: 3}\n"
    ) == [
        "mailer.yaml:1: store.address: required key is missing",
        "mailer.yaml:1: store.adress: unknown key (did you mean address?)",
        "mailer.yaml:2: sender.from: invalid email 'nope': An email address must have an @-sign.",
        "mailer.yaml:3: timezone: unknown time zone 'Europe/Berln' (did you mean Europe/Berlin?)",
        "mailer.yaml:6: policy.frequency.0.per: expected a duration like 7d, 12h or 90s, "
        "got 'seven'",
        "mailer.yaml:7: policy.quiet_hours: expected a time of day like 09:00, got '25:00'",
        "mailer.yaml:8: delivery.concurency: unknown key (did you mean concurrency?)",
    ]


def test_required_sections() -> None:
    assert problems("timezone: UTC\n") == [
        "mailer.yaml:1: store: required key is missing",
        "mailer.yaml:1: sender: required key is missing",
    ]


def test_secrets_are_refused() -> None:
    assert problems(MINIMAL + "database: postgresql://mailer:hunter2@db.example.com/mail\n"
                    "delivery: {smtp_url: 'smtp://u:p@relay.example.com'}\n") == [
        "mailer.yaml:3: database: put passwords in MAILER_DATABASE_URL",
        "mailer.yaml:4: delivery.smtp_url: secrets never live in mailer.yaml: put them in the "
        "environment (MAILER_SMTP_URL, MAILER_SECRET_KEY, ...)",
    ]


def test_yaml_surprises_stay_text() -> None:
    # YAML 1.1 reads 21:00 as the number 1260 and NO as false; ours keeps both as text.
    settings, _ = parse_settings(MINIMAL + 'policy: {quiet_hours: 21:00-08:00}\n')
    assert str(settings.policy.quiet_hours) == "21:00-08:00"


def test_syntax_error_names_the_line() -> None:
    assert problems(MINIMAL + "policy: [1,\n") == [
        "mailer.yaml:4: YAML syntax: while parsing a flow node expected the node content, "
        "but found '<stream end>'"]


def test_duplicate_key() -> None:
    assert problems(MINIMAL + "timezone: UTC\ntimezone: Europe/Berlin\n") == [
        "mailer.yaml:4: YAML syntax: duplicate key 'timezone'"]


def test_environment() -> None:
    env = Environment.from_mapping({"MAILER_SECRET_KEY_OLD": "a, b,", "MAILER_SMTP_URL": ""})
    assert env.old_secret_keys == ("a", "b")
    assert env.smtp_url == "smtp://127.0.0.1:1025"
    assert env.secret_key is None


def test_validate_lists_every_problem(ws: Workspace) -> None:
    ws.write("mailer.yaml", "store: {name: X}\nsender: {from: a@shop.example, password: x}\n")
    result = ws.run("validate")
    assert result.code == 1
    assert result.stderr.splitlines() == [
        "mailer.yaml:1: store.address: required key is missing",
        "mailer.yaml:2: sender.password: secrets never live in mailer.yaml: put them in the "
        "environment (MAILER_SMTP_URL, MAILER_SECRET_KEY, ...)",
        "checked 1 file",
        "2 problems in 1 file",
    ]
    assert ws.run("validate", "--json").json()["problems"][0] == {
        "path": "mailer.yaml", "line": 1, "field": "store.address",
        "message": "required key is missing"}


def test_a_valid_workspace_validates(ws: Workspace) -> None:
    result = ws.run("validate", "--json")
    assert result.code == 0
    assert result.json() == {"problems": [], "warnings": [], "files": 1}
    assert result.stderr.strip() == "checked 1 file\n0 problems in 0 files"


@pytest.mark.parametrize("content", [b"store: {name: \xff}\n", None])
def test_unreadable_settings(ws: Workspace, content: bytes | None) -> None:
    (ws.root / "mailer.yaml").unlink()
    if content is not None:
        ws.write("mailer.yaml", content)
    result = ws.run("status", "--json")
    assert result.code == 1
    message = result.json()["error"]["message"]
    assert message == ("cannot read: not UTF-8 text" if content else
                       f"not found in {ws.root} (create one with `mailer init DIR`)")
