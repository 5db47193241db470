"""Rendering: flattening, CSS inlined once with Jinja intact, escaping, the sandbox,
limits, errors with the template's file and line (DESIGN §4.4)."""

from __future__ import annotations

import re
import tracemalloc
from pathlib import Path

import jinja2
import pytest
from markupsafe import Markup

from mailer.mail.render import RenderError, RenderLimit, compile_html, compile_source
from mailer.mail.sandbox import environment
from mailer.mail.text import html_to_text
from tests.conftest import Workspace
from tests.smtp_server import FaultServer

LAYOUT = """\
<!doctype html>
<html><head><style>
.btn { color: #ffffff; background: #2a7744; }
p { font-family: Arial, sans-serif; }
@media (max-width: 600px) { .card { width: 100% !important; } }
</style></head>
<body>
{% block content %}{% endblock %}
{% include "footer.html" %}
</body></html>
"""
FOOTER = ('<p class="foot">{{ store.address }} · '
          '<a href="{{ links.unsubscribe }}">Unsubscribe</a></p>\n')
PROMO = """\
{% extends "layout.html" %}
{% block content %}
<p>Hello {{ customer.first_name | default("there") }},</p>
<p class="card">{{ intro }}</p>
<a class="btn" href="{{ store.url }}/sale?code={{ coupon.code }}&amp;x=1">Shop now</a>
{{ 100 // customer.zero if customer.zero is defined else "" }}
{% endblock %}
"""
CONTEXT = {"customer": {"first_name": "Zoë <b>"}, "intro": "Hi & welcome",
           "store": {"url": "https://shop.example", "address": "1 Market St, Springfield"},
           "coupon": {"code": "BF-7Q2"}, "links": {"unsubscribe": "https://mail.shop.example/u/t"}}


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    (tmp_path / "layout.html").write_text(LAYOUT)
    (tmp_path / "footer.html").write_text(FOOTER)
    (tmp_path / "promo.html").write_text(PROMO)
    return tmp_path


def test_css_is_inlined_once_and_jinja_survives_in_attributes(templates: Path) -> None:
    compiled = compile_html(environment(), "promo.html", templates)
    assert 'href="{{ store.url }}/sale?code={{ coupon.code }}&amp;x=1"' in compiled.source
    assert "color:#fff" in compiled.source  # inlined at compile time, not per mail
    assert "@media (max-width: 600px)" in compiled.source  # media queries stay in <style>
    assert "!important" in compiled.source
    mail = compiled.render(CONTEXT)
    assert mail.startswith("<!doctype html>")
    assert 'href="https://shop.example/sale?code=BF-7Q2&amp;x=1"' in mail
    assert 'style="color:#fff; background:#2a7744"' in mail
    assert "Hello Zoë &lt;b&gt;," in mail  # HTML autoescapes
    assert "Hi &amp; welcome" in mail
    assert "1 Market St, Springfield" in mail


def test_the_templates_own_non_ascii_becomes_references_but_not_in_style(
        templates: Path) -> None:
    style = '@media print { .card:before { content: "»"; } }\n</style><title>Grüße</title>'
    (templates / "layout.html").write_text(LAYOUT.replace("</style>", style))
    compiled = compile_html(environment(), "promo.html", templates)
    assert 'content: "»"' in compiled.source  # CSS does not read references
    assert "<title>Gr&#252;&#223;e</title>" in compiled.source
    assert "{{ store.address }} &#183; " in compiled.source  # the footer's "·"
    mail = compiled.render(CONTEXT)
    assert "1 Market St, Springfield &#183; " in mail
    assert "Hello Zoë &lt;b&gt;," in mail  # data is printed as it is


def test_missing_data_renders_empty_and_defaults_apply(templates: Path) -> None:
    mail = compile_html(environment(), "promo.html", templates).render(
        {**CONTEXT, "customer": {}})
    assert "Hello there," in mail


def test_subjects_and_text_do_not_escape() -> None:
    subject = compile_source(environment(), "{{ name }}, 30% off <today>", "subject")
    assert subject.render({"name": "Zoë & Co"}) == "Zoë & Co, 30% off <today>"


def test_printed_values_are_escaped_exactly_as_jinja_escapes_them() -> None:
    # The sandbox prints escaped text as plain str (no Markup per value): blocks, macros,
    # filters and safe values must come out as Jinja's own autoescaping makes them.
    source = ("{% set x %}<i>{{ v }}</i>{% endset %}{{ x }}|"
              "{% macro m(a) %}<b>{{ a }}</b>{% endmacro %}{{ m(v) }}|"
              "{% filter upper %}{{ v }}{% endfilter %}|{{ v | safe }}|{{ v | e }}|{{ n }}|"
              "{{ items }}|{{ missing }}|{{ v ~ n }}|{{ markup }}|"
              "{% macro w() %}[{{ caller() }}]{% endmacro %}{% call w() %}{{ v }}{% endcall %}|"
              "{{ d.k }}|{{ v | replace('<', '[') }}|{{ [v, v] | join(', ') }}|{{ x | length }}")
    context = {"v": "<a href='x'>&\"", "n": 3.5, "items": ["<", 1],
               "markup": Markup("<br>"), "d": {"k": "k<"}}
    jinja = jinja2.Environment(autoescape=True, undefined=jinja2.ChainableUndefined)
    expected = jinja.from_string(source).render(context)
    assert "&lt;a href=&#39;x&#39;&gt;&amp;&#34;" in expected and "<br>" in expected
    assert compile_source(environment(), source, "templates/t.html").render(
        context) == expected


HUGE = "a string over 1 MB"
WIDE = "a format width of a million or more"


@pytest.mark.parametrize(("source", "limit"), [
    ("{{ 'x' | center(10000000000) }}", HUGE),
    ("{{ 'x'.ljust(10 ** 10) }}", HUGE),
    ("{{ ('x' * 999999).replace('x', 'yy') }}", HUGE),
    ("{{ ('x' * 999999) | replace('x', 'yy') }}", HUGE),
    ("{{ ('y' * 10000).replace('', 'z' * 1000) }}", HUGE),
    ("{{ ('x' * 100000) | list | join('y' * 100) }}", HUGE),
    ("{{ ('y' * 100).join(('x' * 100000) | list) }}", HUGE),
    ("{{ (('x' + '\\n') * 400000) | indent(100) }}", HUGE),
    ("{{ ('x' * 999999) | wordwrap(1, wrapstring='yy') }}", HUGE),
    ("{{ 'a\\tb'.expandtabs(10 ** 10) }}", HUGE),
    ("{{ '{:>1000000000}'.format('x') }}", WIDE),
    ("{{ '{:{}}'.format('x', 10 ** 10) }}", WIDE),
    ("{{ '%1000000000s' % 'x' }}", WIDE),
    ("{{ '%*s' % (10 ** 10, 'x') }}", WIDE),
    ("{{ '%1000000000s' | format('x') }}", WIDE),
])
def test_a_call_that_would_build_a_huge_string_is_stopped_before_it_does(source: str,
                                                                         limit: str) -> None:
    # Each of these asks Python for a gigabyte or more in one call.
    with pytest.raises(RenderLimit, match=re.escape(
            f"templates/t.html:1: render stopped: {limit}")):
        compile_source(environment(), source, "templates/t.html").render({})


def test_growing_calls_of_ordinary_size_work_as_in_jinja() -> None:
    source = ("{{ '{:,}'.format(1234567) }}|{{ 'Order 1234567: {}'.format('ok') }}|"
              "{{ 'a-b' | replace('-', '+') }}|{{ ['a', 'b'] | join(', ') }}|"
              "{{ 'x' | center(5) }}|{{ '%05.1f%%' % 12.345 }}|{{ 'hi %s' | format('you') }}|"
              "{{ 'a b c d' | wordwrap(3) }}|{{ 'a\\nb' | indent(2, true) }}|"
              "{{ ', '.join(['a', 'b']) }}|{{ 'x'.zfill(3) }}")
    expected = jinja2.Environment().from_string(source).render()
    assert expected == ("1,234,567|Order 1234567: ok|a+b|a, b|  x  |012.3%|hi you|"
                        "a b\nc d|  a\n  b|a, b|00x")
    assert compile_source(environment(), source, "templates/t.txt").render({}) == expected


def test_guarded_loops_behave_as_jinjas_own() -> None:
    source = ("{% for c in items if c %}{{ loop.index }}/{{ loop.length }}"
              "{% if loop.last %}!{% endif %}{% else %}none{% endfor %}|"
              "{% for c in [] %}x{% else %}empty{% endfor %}|"
              "{% for i in nested recursive %}[{% if i is iterable %}{{ loop(i) }}"
              "{% else %}{{ i }}{% endif %}]{% endfor %}|"
              "{% for k, v in pairs | dictsort %}{{ k }}={{ v }}{{ loop.cycle(',', ';') }}"
              "{% endfor %}")
    context = {"items": [1, 0, 3], "nested": [1, [2, [3]]], "pairs": {"b": 2, "a": 1}}
    jinja = jinja2.Environment(autoescape=True)
    expected = jinja.from_string(source).render(context)
    assert expected == "1/22/2!|empty|[1][[2][[3]]]|a=1,b=2;"
    assert compile_source(environment(), source, "templates/t.html").render(
        context) == expected


def test_a_value_printed_in_a_loop_counts_its_real_size() -> None:
    # A list is not text: it used to count as 16 bytes a print, so a loop could pile up
    # hundreds of megabytes of its text before the output limit saw them.
    source = "{% for i in range(2000) %}{{ big }}{% endfor %}"
    tracemalloc.start()
    try:
        with pytest.raises(RenderLimit, match="more than 1 MB of output"):
            compile_source(environment(), source, "templates/t.html").render(
                {"big": ["x" * 100_000]})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000


def test_runtime_error_names_the_original_file_and_line(templates: Path) -> None:
    compiled = compile_html(environment(), "promo.html", templates)
    with pytest.raises(RenderError) as caught:
        compiled.render({**CONTEXT, "customer": {"zero": 0}})
    assert str(caught.value) == "templates/promo.html:6: ZeroDivisionError: integer division " \
                                "or modulo by zero"


def test_syntax_error_names_the_original_file_and_line(templates: Path) -> None:
    (templates / "footer.html").write_text("<p>\n{{ store.address }\n</p>\n")
    with pytest.raises(RenderError) as caught:
        compile_html(environment(), "promo.html", templates)
    assert str(caught.value) == "templates/footer.html:2: syntax: unexpected '}'"


def test_include_cycle_and_missing_template(templates: Path) -> None:
    (templates / "footer.html").write_text('{% include "promo.html" %}')
    with pytest.raises(RenderError, match=re.escape(
            "templates include each other: promo.html -> layout.html -> footer.html -> "
            "promo.html")):
        compile_html(environment(), "promo.html", templates)
    with pytest.raises(RenderError, match=re.escape("template 'nope.html' not found")):
        compile_html(environment(), "nope.html", templates)


@pytest.mark.parametrize("source", [
    "{{ ''.__class__.__mro__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ '{0.__class__}'.format(1) }}",
    "{{ 'a' | attr('__class__') }}",
    "{{ lipsum.__globals__['os'] }}",
])
def test_the_sandbox_refuses_python_internals(source: str) -> None:
    with pytest.raises(RenderError, match=re.escape("templates/t.html:1: refused by the sandbox")):
        compile_source(environment(), source, "templates/t.html").render({})


@pytest.mark.parametrize(("source", "limit"), [
    ("{% for i in range(100000) %}{% endfor %}", "range() of 100,000 items"),
    ("{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
     "more than 2 s of CPU"),
    # no range(), nothing printed: only the loop itself can see the time go
    ("{% for c in 'x' * 999999 %}{% for d in 'x' * 999999 %}{% endfor %}{% endfor %}",
     "more than 2 s of CPU"),
    ("{{ 'x' * 2000000 }}", "a repetition over 1 MB"),
    ("{% for i in range(9000) %}{{ 'y' * 200 }}{% endfor %}", "more than 1 MB of output"),
])
def test_limits_stop_a_render(source: str, limit: str) -> None:
    expected = re.escape(f"templates/t.html:1: render stopped: {limit}")
    with pytest.raises(RenderLimit, match=expected):
        compile_source(environment(), source, "templates/t.html").render({})


def test_missing_data_renders_empty_and_unknown_names_are_found_statically() -> None:
    # Rendering never raises for a missing value (validate finds typos from the source,
    # tests/test_validate_templates.py): a `set` inside an `if` or `loop is defined`
    # outside a loop are valid Jinja.
    env = environment()
    assert compile_source(env, "[{{ customer.first_name }}] {% if false %}{% set x = 1 %}"
                          "{% endif %}{{ x | default('none') }} {{ loop is defined }}",
                          "t").render({"customer": {}}) == "[] none False"


def test_html_to_text_keeps_links() -> None:
    text = html_to_text('<html><head><style>p{}</style></head><body><h1>Sale</h1>'
                        '<p>Up to <b>30%</b> off.</p><p><a href="https://shop.example/s">'
                        'Shop now</a> or <a href="https://mail.shop.example/u/x">'
                        'unsubscribe</a></p></body></html>')
    assert text == ("Sale\n\nUp to 30% off.\n\nShop now (https://shop.example/s) or "
                    "unsubscribe (https://mail.shop.example/u/x)\n")


# --- templates read only the workspace's templates/ (issue 15, item 1) ----------------------

SECRET = "s3cret-not-for-readers"
ABSOLUTE = "an absolute path"
DOTDOT = "a path with '..'"
SYMLINK = "a symlink that leads out of it"


@pytest.fixture
def fenced(tmp_path: Path) -> Path:
    """A workspace whose templates/ sits beside a secret, with a symlink out to it."""
    (tmp_path / "secret.txt").write_text(SECRET)
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "outside.html").symlink_to(tmp_path / "secret.txt")
    (templates / "shared").mkdir()
    (templates / "shared" / "macros.html").write_text(
        "{% macro button(label) %}<b>{{ label }}</b>{% endmacro %}\n")
    return templates


@pytest.mark.parametrize(("tag", "name", "reason"), [
    ('{% include "/proc/self/environ" %}', "/proc/self/environ", ABSOLUTE),
    ('{% include "../secret.txt" %}', "../secret.txt", DOTDOT),
    ('{% include "shared/../../secret.txt" %}', "shared/../../secret.txt", DOTDOT),
    ('{% include "outside.html" %}', "outside.html", SYMLINK),
    ('{% include "../secret.txt" with context %}', "../secret.txt", DOTDOT),
    ('{% include ["nope.html", "/proc/self/environ"] ignore missing %}', "/proc/self/environ",
     ABSOLUTE),
    ('{% import "/proc/self/environ" as env %}', "/proc/self/environ", ABSOLUTE),
    ('{% from "../secret.txt" import x %}', "../secret.txt", DOTDOT),
    ('{% from "outside.html" import x with context %}', "outside.html", SYMLINK),
    ('{% extends "../secret.txt" %}', "../secret.txt", DOTDOT),
])
def test_a_template_outside_templates_is_refused_with_its_file_and_line(
        fenced: Path, tag: str, name: str, reason: str) -> None:
    (fenced / "note.html").write_text(f"<p>Hello</p>\n{tag}\n")
    with pytest.raises(RenderError) as caught:
        compile_html(environment(), "note.html", fenced)
    assert str(caught.value) == (f"templates/note.html:2: template {name!r} is outside "
                                 f"templates/: {reason}")


def test_a_layout_or_an_include_is_checked_where_it_is_written(fenced: Path) -> None:
    (fenced / "note.html").write_text('{% extends "/etc/passwd" %}\n')
    with pytest.raises(RenderError, match=re.escape(
            "templates/note.html:1: template '/etc/passwd' is outside templates/: "
            "an absolute path")):
        compile_html(environment(), "note.html", fenced)
    (fenced / "note.html").write_text('<p>Hi</p>\n{% include "shared/footer.html" %}\n')
    (fenced / "shared" / "footer.html").write_text('<p>\n\n{% include "../../secret.txt" %}\n')
    with pytest.raises(RenderError, match=re.escape(
            "templates/shared/footer.html:3: template '../../secret.txt' is outside")):
        compile_html(environment(), "note.html", fenced)


def test_a_dynamic_name_cannot_leave_the_campaign_version(fenced: Path) -> None:
    # The name is only known per mail: the loader of the rendering environment refuses.
    (fenced / "note.html").write_text("<p>Hi</p>\n{% include customer.page %}\n")
    compiled = compile_html(environment(), "note.html", fenced)
    for page, message in [
            ("/proc/self/environ", "template '/proc/self/environ' is outside templates/: "
                                   "an absolute path"),
            ("../secret.txt", "template '../secret.txt' is outside templates/: "
                              "a path with '..'"),
            ("outside.html", "template 'outside.html' is not part of this campaign version")]:
        with pytest.raises(RenderError) as caught:
            compiled.render({"customer": {"page": page}})
        assert str(caught.value).startswith("templates/note.html:2: ")
        assert message in str(caught.value)
        assert SECRET not in str(caught.value)


def test_imports_of_the_workspace_are_carried_in_the_version(fenced: Path) -> None:
    from mailer.config.campaign import parse_campaign
    from mailer.config.settings import SETTINGS_FILE
    from mailer.config.yamlsrc import load_yaml
    from mailer.mail.version import compile_version, definition, from_definition

    root = fenced.parent
    (root / SETTINGS_FILE).write_text(
        'store: {name: Pine, address: "1 Market St"}\nsender: {from: "a@shop.example"}\n')
    (root / "campaigns").mkdir()
    (root / "campaigns" / "note.yaml").write_text(
        "name: Note\ntrigger: once\nat: 2026-11-23T09:00\nsegment: all\n"
        "template: note.html\nsubject: Hi\n")
    (fenced / "note.html").write_text(
        '{% import "shared/macros.html" as m %}\n<p>{{ m.button("Shop") }}</p>\n'
        '{% from "shared/macros.html" import button %}{{ button("Go") }}\n')
    spec, problems = parse_campaign(load_yaml(
        (root / "campaigns" / "note.yaml").read_text(), "campaigns/note.yaml"),
        "campaigns/note.yaml")
    assert spec is not None, problems
    stored = definition(compile_version("note", spec, fenced), root)
    (fenced / "shared" / "macros.html").write_text("changed after planning\n")
    version, _ = from_definition(stored)  # a worker renders from the version, not its files
    html = version.html.render({})
    assert "<b>Shop</b>" in html and "<b>Go</b>" in html
    assert stored["parts"] == {"shared/macros.html": "{% macro button(label) %}<b>{{ label }}"
                                                     "</b>{% endmacro %}\n"}
    stored["parts"]["shared/macros.html"] = "{% macro button(label) %}\n{{ 1 // 0 }}" \
                                            "{% endmacro %}"
    with pytest.raises(RenderError, match=re.escape(
            "templates/shared/macros.html:2: ZeroDivisionError")):
        from_definition(stored)[0].html.render({})


def _fenced_shop(ws: Workspace, template: str) -> Workspace:
    ws.write("secret.txt", SECRET)
    ws.write("segments/everyone.yaml", "description: all\nall: [{orders: {at_least: 0}}]\n")
    ws.write("templates/note.html", template)
    ws.write("campaigns/note.yaml", "name: Note\ntrigger: once\nat: 2026-11-23T09:00\n"
                                    "grace: 2d\nsegment: everyone\ntemplate: note.html\n"
                                    "subject: Hi\n")
    return ws


def test_validate_names_an_include_outside_templates_and_send_never_compiles_it(
        ws: Workspace) -> None:
    _fenced_shop(ws, '<p>{{ store.address }} <a href="{{ links.unsubscribe }}">u</a></p>\n'
                     '{% include "../secret.txt" %}\n{% import "/proc/self/environ" as e %}\n')
    (ws.root / "templates" / "note.txt").symlink_to(ws.root / "secret.txt")
    result = ws.run("validate")
    assert result.code == 1
    assert ("templates/note.html:2: template '../secret.txt' is outside templates/: "
            "a path with '..'") in result.stderr.splitlines()
    assert SECRET not in result.stdout + result.stderr
    ws.write("templates/note.html", "<p>{{ store.address }} {{ links.unsubscribe }}</p>\n")
    assert ("templates/note.txt: template 'note.txt' is outside templates/: "
            "a symlink that leads out of it") in ws.run("validate").stderr.splitlines()
    ws.write("campaigns/note.yaml", ws.root.joinpath("campaigns/note.yaml").read_text()
             .replace("template: note.html", f"template: {ws.root / 'secret.txt'}"))
    assert any(line.startswith("campaigns/note.yaml: template ") and line.endswith(
        "is outside templates/: an absolute path") for line in ws.run("validate").stderr
        .splitlines())

    (ws.root / "templates" / "note.txt").unlink()
    _fenced_shop(ws, '<p>{{ store.address }} {{ links.unsubscribe }}</p>\n'
                     '{% include "/proc/self/environ" %}{% include "../secret.txt" %}\n')
    ws.write("customers.csv", "id,email\nC1,anna@example.com\n")
    assert ws.run("import", "customers", "customers.csv", "--now", "2026-01-01").code == 0
    with FaultServer() as server:
        ws.env.update({"MAILER_SMTP_URL": server.url, "MAILER_SECRET_KEY": SECRET})
        sent = ws.run("send", "note", "--now", "2026-11-23T10:00", "--json")
    assert sent.code == 1
    assert "templates/note.html:2: template '/proc/self/environ' is outside templates/" in \
        sent.stdout + sent.stderr
    assert server.caught == []
    assert ws.query("SELECT count(*) FROM campaign_versions")[0][0] == 0
    assert ws.query("SELECT count(*) FROM deliveries")[0][0] == 0
