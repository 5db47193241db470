"""`mailer validate` reads templates, subjects and intros against the context's schema
(issue 17, items 3 and 12): unknown variables are errors with file, line and "did you
mean"; unknown attributes and optional values printed without a default are warnings
that say who would get what; `checked N files` comes before the summary."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from mailer.config.campaign import parse_campaign
from mailer.config.settings import parse_settings
from mailer.config.workspace import bundled_workspace, init_workspace
from mailer.config.yamlsrc import load_yaml
from mailer.mail.context import ALWAYS, CONTEXT_SCHEMA, PREDICTIONS, build_context
from mailer.store.customers import Profile
from tests.conftest import SETTINGS, Workspace

NOW = "2026-11-23T10:00"
# mailer.yaml and every campaign, segment, survey and template of the demo workspace
# (`mailer init` copies the repository's; each of its templates is read)
_DEMO = bundled_workspace()
DEMO_FILES = 1 + sum(len(list((_DEMO / folder).glob(pattern))) for folder, pattern in (
    ("campaigns", "*.yaml"), ("segments", "*.yaml"), ("surveys", "*.yaml"),
    ("templates", "*.html")))


def demo(ws: Workspace) -> Workspace:
    """The demo workspace `mailer init` writes, with the suite's https settings."""
    init_workspace(ws.root, force=True)
    ws.write("mailer.yaml", SETTINGS)
    return ws


def edit(ws: Workspace, name: str, old: str, new: str) -> None:
    path = ws.root / name
    source = path.read_text(encoding="utf-8")
    assert old in source, (name, old)
    path.write_text(source.replace(old, new, 1), encoding="utf-8")


def lines(ws: Workspace, *args: str) -> tuple[int, list[str]]:
    result = ws.run("validate", *args)
    return result.code, result.stderr.splitlines()


# --- the demo --------------------------------------------------------------------------------


def test_the_demo_workspace_validates_clean_and_counts_its_files(ws: Workspace) -> None:
    demo(ws)
    assert lines(ws) == (0, [f"checked {DEMO_FILES} files", "0 problems in 0 files"])
    assert ws.run("validate", "--json").json() == {"problems": [], "warnings": [],
                                                   "files": DEMO_FILES}


def test_the_files_counted_are_the_yaml_and_the_templates_read(ws: Workspace) -> None:
    ws.write("segments/everyone.yaml", "all: [{subscribed: true}]\n")
    ws.write("campaigns/hello.yaml", 'name: Hello\ntrigger: once\nat: 2026-12-01T10:00\n'
             'segment: everyone\ntemplate: hello.html\nsubject: "Hello"\n')
    ws.write("templates/hello.html", '{% extends "base.html" %}{% block body %}Hi{% endblock %}\n')
    ws.write("templates/base.html", '<p>{{ store.address }}</p>{% block body %}{% endblock %}\n'
             '{% include "unsubscribe.html" %}\n')
    ws.write("templates/unsubscribe.html", '<a href="{{ links.unsubscribe }}">Unsubscribe</a>\n')
    ws.write("templates/unused.html", "{{ nobody_reads_this }}\n")
    code, output = lines(ws)
    assert (code, output[-2:]) == (0, ["checked 6 files", "0 problems in 0 files"])


# --- unknown variables: errors ---------------------------------------------------------------


@pytest.mark.parametrize(("typo", "message"), [
    ("customer.frist_name", "unknown variable customer.frist_name (did you mean first_name?)"),
    ("stat.orders", "unknown variable stat (did you mean stats?)"),
])
def test_a_typo_in_a_template_is_an_error_at_its_file_and_line(ws: Workspace, typo: str,
                                                               message: str) -> None:
    demo(ws)
    edit(ws, "templates/thank-you.html", "{{ stats.orders | number }}", f"{{{{ {typo} }}}}")
    code, output = lines(ws)
    assert code == 1
    assert output == [f"templates/thank-you.html:5: {message}", f"checked {DEMO_FILES} files",
                      "1 problem in 1 file"]


@pytest.mark.parametrize(("typo", "message"), [
    ("customer.frist_name", "unknown variable customer.frist_name (did you mean first_name?)"),
    ("stat.orders", "unknown variable stat (did you mean stats?)"),
])
def test_a_typo_in_a_subject_is_an_error_at_its_line(ws: Workspace, typo: str,
                                                     message: str) -> None:
    demo(ws)
    edit(ws, "campaigns/big-spender-thanks.yaml", "customer.first_name | default('Hello')",
         typo)
    result = ws.run("validate", "--json")
    assert result.code == 1
    assert result.json()["problems"] == [{"path": "campaigns/big-spender-thanks.yaml",
                                          "line": 6, "field": "subject", "message": message}]
    assert f"campaigns/big-spender-thanks.yaml:6: subject: {message}" in result.stderr


def test_every_typo_is_reported_once_in_the_file_it_is_in(ws: Workspace) -> None:
    """The layout's head and the footer are shared by every campaign; the render used to
    name no file for the head ("templates:6") and stop at the first typo."""
    demo(ws)
    edit(ws, "templates/layout.html", "<title>{{ store.name }}", "<title>{{ stor.name }}")
    edit(ws, "templates/footer.html", "{{ links.preferences }}", "{{ link.preferences }}")
    edit(ws, "campaigns/birthday.yaml", 'default: "A little', 'default: "{{ custmer.city }} '
         'A little')
    code, output = lines(ws)
    assert code == 1
    assert output == [
        "templates/layout.html:6: unknown variable stor (did you mean store?)",
        "templates/footer.html:4: unknown variable link (did you mean links?)",
        "campaigns/birthday.yaml:9: intros.default: unknown variable custmer "
        "(did you mean customer?)",
        f"checked {DEMO_FILES} files",
        "3 problems in 3 files",
    ]


def test_names_the_template_binds_are_not_the_contexts(ws: Workspace) -> None:
    demo(ws)
    edit(ws, "templates/win-back.html", "{% endblock %}", """\
{% set greeting = "Hello" %}{{ greeting }}
{% for tag in customer.tags | default([]) %}{{ loop.index }}: {{ tag | upper }}{% endfor %}
{% macro button(url, label="Go") %}<a href="{{ url }}">{{ label }}{{ caller() }}</a>{% endmacro %}
{% call button(store.url | default('#')) %}!{% endcall %}
{% with orders = stats.orders %}{{ orders }} {{ range(3) | list }}{% endwith %}
{% set ns = namespace(seen=0) %}{% set ns.seen = 1 %}{{ ns.seen }}
{{ customer.birth_date.year if customer.birth_date is defined }} {{ customer.get("city") }}
{{ links.rating[1] }} {{ now.year }} {{ customer.items() | list | length }}
{% endblock %}""")
    assert ws.run("validate", "--json").json() == {"problems": [], "warnings": [],
                                                   "files": DEMO_FILES}


def test_an_include_may_read_what_its_includer_binds(ws: Workspace) -> None:
    """A part included with context sees its includer's loop variables and `set` names:
    unknown names there are warnings (the daemon would refuse an error), while a typo on
    a context name stays an error."""
    demo(ws)
    edit(ws, "templates/newsletter.html", "{% block content %}", "{% block content %}\n"
         "{% set label = 'L' %}{% for t in customer.tags | default([]) %}"
         "{% include 'tagcard.html' with context %}{% endfor %}")
    ws.write("templates/tagcard.html", "<span>{{ t }} {{ label }}</span>\n")
    result = ws.run("validate", "--json")
    assert result.code == 0, result.stderr
    warned = [w["message"] for w in result.json()["warnings"] if "tagcard" in w["path"]]
    assert len(warned) == 2 and all("fine if the template including this one sets it" in w
                                    for w in warned)
    ws.write("templates/tagcard.html", "<span>{{ t }} {{ customer.frist_name }}</span>\n")
    code, found = lines(ws)
    assert code == 1
    assert ("templates/tagcard.html:1: unknown variable customer.frist_name "
            "(did you mean first_name?)") in found


def test_a_loop_variable_is_unknown_outside_its_loop(ws: Workspace) -> None:
    demo(ws)
    edit(ws, "templates/win-back.html", "{% endblock %}",
         "{% for tag in customer.tags | default([]) %}{{ tag }}{% endfor %}\n{{ tag }}\n"
         "{% endblock %}")
    code, output = lines(ws)
    assert code == 1
    assert output[0] == ("templates/win-back.html:9: unknown variable tag; the context has "
                         "customer, stats, campaign, intro, coupon, referral, links, store, "
                         "holiday, occasion, checkout, product, now, recommendations")


# --- optional values printed without a default: warnings ------------------------------------


def test_an_optional_value_in_a_subject_without_a_default_is_a_warning(ws: Workspace) -> None:
    demo(ws)
    edit(ws, "campaigns/black-friday.yaml", "{{ customer.first_name | default('Friends') }}, "
         "48 hours only: 30% off", "{{ customer.first_name }}, 20% off for 48 hours")
    edit(ws, "campaigns/black-friday.yaml", 'vip: "As one', 'vip: "{{ stats.favourite_category'
         ' }}: as one')
    result = ws.run("validate", "--json")
    assert result.code == 0, result.stderr
    assert result.json()["warnings"] == [
        {"path": "campaigns/black-friday.yaml", "line": 8, "field": "subject",
         "message": 'a customer with no first_name would get ", 20% off for 48 hours"'},
        {"path": "campaigns/black-friday.yaml", "line": 12, "field": "intros.vip",
         "message": 'a customer with no stats.favourite_category would get ": as one of our '
                    'best customers, you get first pick."'}]
    assert ("campaigns/black-friday.yaml:8: warning: subject: a customer with no first_name "
            'would get ", 20% off for 48 hours"') in result.stderr


def test_a_value_the_campaign_does_not_set_is_a_warning_for_every_reader(
        ws: Workspace) -> None:
    demo(ws)
    edit(ws, "campaigns/newsletter.yaml", "{{ now | date('MMMM') }} at Pine & Co: what is new "
         "for you", "Your code: {{ coupon.code }}")
    assert ws.run("validate", "--json").json()["warnings"] == [{
        "path": "campaigns/newsletter.yaml", "line": 6, "field": "subject",
        "message": 'coupon.code is not set for this campaign: every reader would get '
                   '"Your code:"'}]


def test_handled_optional_values_are_silent(ws: Workspace) -> None:
    demo(ws)
    edit(ws, "campaigns/black-friday.yaml", "{{ customer.first_name | default('Friends') }}, "
         "48 hours only: 30% off",
         "{{ customer.first_name ~ ', ' if customer.first_name }}{{ customer.last_name or '' }}"
         "{% if customer.city is defined %} in {{ customer.city }}{% endif %}"
         "{% if customer.attributes.size %}{{ customer.attributes.size }}{% endif %}"
         " {{ stats.favourite_category | d('coffee') }} {{ intro is defined }}")
    assert ws.run("validate", "--json").json() == {"problems": [], "warnings": [],
                                                   "files": DEMO_FILES}


def test_optional_values_in_templates_are_not_warned_about(ws: Workspace) -> None:
    """Only subjects and intros: a template has room for its own `if`."""
    demo(ws)
    edit(ws, "templates/thank-you.html", "{{ stats.orders | number }}",
         "{{ customer.city }} {{ stats.average_order }}")
    assert ws.run("validate", "--json").json()["warnings"] == []


# --- with a store: who would get what -------------------------------------------------------


def members(ws: Workspace, segment: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = ws.run("segments", "show", segment, "--limit", "100000",
                                         "--json").json()["members"]
    return found


def test_with_a_store_the_warning_counts_who_would_get_what(db: Workspace) -> None:
    demo(db)
    assert db.run("demo-data", "--customers", "150", "--now", NOW).code == 0
    db.write("campaigns/welcome.yaml", """\
name: Welcome
trigger: once
at: 2026-12-01T10:00
segment: subscribers
template: welcome.html
subject: "{{ customer.first_name }}, 20% off for 48 hours"
intros:
  vip: "{{ customer.first_name }}, thank you."
  default: "Hello."
""")
    db.write("templates/welcome.html", """\
{% extends "layout.html" %}
{% block content %}
<p>{{ intro }} {{ customer.attributes.loyalty_teir | default("") }}</p>
<p>{{ customer.attributes.loyalty_tier | default("") }}</p>
{% endblock %}
""")
    subscribers = members(db, "subscribers")
    vips = {m["id"] for m in members(db, "vip")}
    unnamed = [m for m in subscribers if not m["first_name"]]
    readers_of_vip = [m for m in subscribers if m["id"] in vips]
    result = db.run("validate", "--json")
    assert result.code == 0, result.stderr
    found = {(w["path"], w["field"]): w["message"] for w in result.json()["warnings"]}
    assert found[("campaigns/welcome.yaml", "subject")] == who_gets(
        unnamed, subscribers, "in its segment", '", 20% off for 48 hours"')
    assert found[("campaigns/welcome.yaml", "intros.vip")] == who_gets(
        [m for m in unnamed if m["id"] in vips], readers_of_vip, "who get this intro",
        '", thank you."')
    assert found[("templates/welcome.html", None)] == (
        "unknown attribute customer.attributes.loyalty_teir: none of the "
        f"{len(subscribers)} customers in welcome's segment has it (did you mean loyalty_tier?)")
    assert [w for w in result.json()["warnings"] if w["path"] == "templates/welcome.html"
            and w["line"] != 3] == []
    assert f"checked {DEMO_FILES + 2} files" in result.stderr
    assert unnamed  # the demo data has customers without a first name: the count form ran


def who_gets(missing: list[Any], readers: list[Any], audience: str, gets: str) -> str:
    if not readers:
        return f"a customer with no first_name would get {gets}"
    if not missing:
        return (f"none of the {len(readers)} customers {audience} lacks first_name today; one "
                f"who does would get {gets}")
    verb = "has" if len(missing) == 1 else "have"
    return (f"{len(missing)} of {len(readers)} customers {audience} {verb} no first_name and "
            f"would get {gets}")


def test_without_a_store_attributes_are_not_checked(ws: Workspace) -> None:
    demo(ws)
    edit(ws, "templates/thank-you.html", "{{ stats.orders | number }}",
         "{{ customer.attributes.anything | default('') }}")
    assert ws.run("validate", "--json").json()["warnings"] == []


# --- the schema is the context's ------------------------------------------------------------


def _context(profile: Profile, stats: dict[str, Any] | None, settings_source: str,
             campaign_source: str) -> dict[str, Any]:
    from mailer.config.workspace import parse_survey_source

    settings, _ = parse_settings(settings_source)
    campaign, problems = parse_campaign(load_yaml(campaign_source, "c.yaml"), "c.yaml")
    assert campaign is not None, problems
    # a campaign naming a survey: the version freezes it, and links.survey is its scale
    survey = parse_survey_source("title: T\nquestions: [{id: q, ask: Happy, kind: rating}]\n",
                                 "surveys/s.yaml") if campaign.survey else None
    return build_context(profile, stats, settings=settings, slug="c", campaign=campaign,
                         now=datetime(2026, 11, 23, 9, tzinfo=UTC), key="k", message="m",
                         survey=survey)


FULL_CAMPAIGN = """\
name: Full
trigger: promotion
starts: 2026-11-27T08:00
ends: 2026-11-29T08:00
segment: s
template: t.html
subject: Hi
coupon: {prefix: BF, value: 30%, valid_for: 3d}
survey: s
referral: {deadline: 2026-12-31, reward: "20%"}
"""
FULL_SETTINGS = SETTINGS.replace("currency: EUR}", 'currency: EUR, url: "https://shop.example", '
                                  'referral_url: "https://shop.example/r/{code}"}')


def _keys(context: dict[str, Any]) -> dict[str, set[str] | None]:
    return {name: (set(value) if isinstance(value, Mapping) and CONTEXT_SCHEMA[name].fields
                   is not None else None) for name, value in context.items()}


def _schema(*, optional: bool) -> dict[str, set[str] | None]:
    return {name: None if entry.fields is None else {
        field for field, presence in entry.fields.items() if optional or presence == ALWAYS}
        for name, entry in CONTEXT_SCHEMA.items() if optional or entry.presence == ALWAYS}


def test_a_full_context_has_every_name_and_field_of_the_schema() -> None:
    everyone = Profile(store_id="C1", email="a@example.com", first_name="A", last_name="B",
                       birth_date=date(1990, 1, 2), country="DE", city="Berlin", locale="de",
                       timezone="Europe/Berlin", tags=["vip"], attributes={"size": 42},
                       signed_up_at=datetime(2025, 1, 1, tzinfo=UTC), referral_code="R1")
    stats = {"orders": 2, "spent": Decimal(10), "average_order": Decimal(5),
             "first_order_at": datetime(2026, 1, 1, tzinfo=UTC),
             "last_order_at": datetime(2026, 2, 1, tzinfo=UTC), "favourite_category": "tea",
             PREDICTIONS: {"p_alive": 0.5}}
    context = _context(everyone, stats, FULL_SETTINGS, FULL_CAMPAIGN)
    context["intro"] = "Hello"  # compose() adds it
    # holiday.name comes with a holiday campaign, which has no promotion's fields
    holiday = FULL_CAMPAIGN.split("starts:")[0].replace("promotion", "holiday")
    context["holiday"] = _context(everyone, stats, FULL_SETTINGS,
                                  holiday + "segment: s\ntemplate: t.html\nsubject: Hi\n"
                                  "country: true\n")["holiday"]
    # and occasion with a date campaign
    context["occasion"] = _context(everyone, stats, FULL_SETTINGS,
                                   holiday.replace("holiday", "date")
                                   + "segment: s\ntemplate: t.html\nsubject: Hi\n"
                                   "field: first_order_at\nyearly: true\n")["occasion"]
    # and checkout with an abandoned_checkout campaign (a preview's sample cart)
    context["checkout"] = _context(everyone, stats, FULL_SETTINGS,
                                   holiday.replace("holiday", "abandoned_checkout")
                                   + "segment: s\ntemplate: t.html\nsubject: Hi\n")["checkout"]
    # and product with a back_in_stock campaign (a preview's sample product)
    context["product"] = _context(everyone, stats, FULL_SETTINGS,
                                  holiday.replace("holiday", "back_in_stock")
                                  + "segment: s\ntemplate: t.html\nsubject: Hi\n")["product"]
    assert _keys(context) == _schema(optional=True)


def test_a_bare_context_has_what_the_schema_says_every_mail_has() -> None:
    nobody = Profile(store_id="C2", email="b@example.com")
    plain = FULL_CAMPAIGN.split("coupon:")[0].replace("starts: 2026-11-27T08:00\n", "")
    context = _context(nobody, None, SETTINGS, plain.replace("promotion", "once").replace(
        "ends: 2026-11-29T08:00", "at: 2026-11-29T08:00"))
    keys = _keys(context)
    always = _schema(optional=False)
    assert set(keys) == set(always)
    for name, fields in always.items():
        assert fields is None or fields <= (keys[name] or set()), name
        assert (keys[name] or set()) <= (_schema(optional=True)[name] or set()), name


# --- what the daemon's reload stops on -----------------------------------------------------


def test_template_errors_are_the_errors_only(ws: Workspace) -> None:
    """For the daemon's reload (mailer.daemon.scheduler.load): a typo stops it, a warning
    (an optional value without a default, plain http on this machine) never does."""
    from mailer.app.validation import template_errors
    from mailer.config.settings import load_settings
    from mailer.config.workspace import load_valid_workspace

    demo(ws)
    edit(ws, "campaigns/black-friday.yaml", "{{ customer.first_name | default('Friends') }}",
         "{{ customer.first_name }}")
    settings, _ = load_settings(ws.root)
    _, campaigns = load_valid_workspace(ws.root)
    now = datetime(2026, 11, 23, 9, tzinfo=UTC)
    assert template_errors(ws.root, settings, campaigns, now=now) == []
    edit(ws, "templates/footer.html", "{{ links.preferences }}", "{{ link.preferences }}")
    assert [str(p) for p in template_errors(ws.root, settings, campaigns, now=now)] == [
        "templates/footer.html:4: unknown variable link (did you mean links?)"]
