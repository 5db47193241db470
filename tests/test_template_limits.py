"""Render limits hold for every construct, in process (issue 15, item 3; DESIGN §4.4).

Each bomb below asks Python for gigabytes, or for hours, in a few characters of
template. The sandbox must stop it with `templates/NAME:LINE: render stopped: ...`
before it builds the value, so the memory a render takes stays small (tracemalloc
sees every allocation Python makes) and the stop comes within the CPU budget.
"""

from __future__ import annotations

import re
import time
import tracemalloc
from typing import Any

import jinja2
import pytest

from mailer.mail.render import RenderLimit, compile_source
from mailer.mail.sandbox import environment
from tests.conftest import Workspace
from tests.smtp_server import FaultServer

PEAK = 64_000_000
HUGE = "a value over 1 MB"
REPEAT = "a repetition over 1 MB"
JOINED = "a concatenation over 1 MB"
FORMAT = "a format over 1 MB"
STRING = "a string over 1 MB"
ITEMS = "a filter's items over 1 MB"
CPU = "more than 2 s of CPU"
DEEP = "nesting too deep"


def stopped(source: str, context: dict[str, Any] | None = None) -> tuple[str, int, float]:
    """The stop message of rendering SOURCE, the peak of memory it took, and the CPU
    seconds it took (this thread's: a loaded machine stretches the wall clock, not them)."""
    tracemalloc.start()
    started = time.thread_time()
    try:
        with pytest.raises(RenderLimit) as caught:
            compile_source(environment(), source, "templates/bomb.html").render(context or {})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return str(caught.value), peak, time.thread_time() - started


@pytest.mark.parametrize(("source", "limit"), [
    # printed, this is 10**12 zeros; built, it is only a million references
    ("{{ [[0] * 999999] * 999999 }}", REPEAT),
    ("{{ (((99 ** 99) ** 99) ** 99) ** 99 }}", "a number over 4,300 digits"),
    ("{% set n = 3 ** 5000 %}{{ n * n * n }}", "a number over 4,300 digits"),
    ("{{ lipsum(n=10 ** 6) }}", "lipsum() over 1 MB"),
    ("{{ lipsum(3, max=10 ** 7) }}", "lipsum() over 1 MB"),
    ("{% set row = [0] * 300000 %}{{ [row, row, row, row] | sum(start=[]) }}", HUGE),
    ("{{ [] | slice(10 ** 7) | list }}", "slice() into more than 10,000 parts"),
    ("{{ 'x' | batch(10 ** 8, 'y') | list }}", "batch() filled to more than 10,000 items"),
    ("{% macro f(n) %}{% if n %}{% set a = f(n - 1) %}{% set b = f(n - 1) %}{% endif %}"
     "{% endmacro %}{% set x = f(40) %}", CPU),
    ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", DEEP),
    ("{% set ns = namespace(s='x' * 500000) %}{% for i in range(30) %}"
     "{% set ns.s = ns.s ~ ns.s %}{% endfor %}", JOINED),
    ("{% set ns = namespace(l=[0]) %}{% for i in range(64) %}"
     "{% set ns.l = ns.l + ns.l %}{% endfor %}{{ ns.l | length }}", JOINED),
    ("{% set ns = namespace(s='y' * 500000) %}{% for i in range(30) %}"
     "{% set ns.s = ns.s + ns.s %}{% endfor %}", JOINED),
    # a list of two references to the last, forty times: 2**40 copies once printed
    ("{% set ns = namespace(l='x' * 99999) %}{% for i in range(40) %}"
     "{% set ns.l = [ns.l, ns.l] %}{% endfor %}{{ ns.l }}", HUGE),
    ("{% set ns = namespace(d='x' * 99999) %}{% for i in range(40) %}"
     "{% set ns.d = {'a': ns.d, 'b': ns.d} %}{% endfor %}{{ ns.d | tojson }}", HUGE),
    ("{{ ('{0}' * 300000).format('x' * 999999) }}", FORMAT),
    ("{{ ('%(a)s' * 150000) % {'a': 'x' * 500000} }}", FORMAT),
    ("{{ ('%(a)s' * 150000) | format(a='x' * 500000) }}", FORMAT),
    ("{{ range(10000) | map('string') | map('center', 100000) | list | length }}", ITEMS),
    ("{{ ('\"' * 999999) | tojson | tojson | tojson | tojson }}", STRING),
    ("{{ dict.fromkeys(range(10000), 'x' * 999999) }}", HUGE),
    ("{{ ('x' * 999999).translate({120: 'y' * 1000}) }}", STRING),
    ("{{ 'x'.encode().center(10 ** 10) }}", STRING),
    ("{{ (1).to_bytes(10 ** 10, 'big') }}", STRING),
    # fifty widths of 999,999 each: every one under a million, together 50 MB
    ("{{ ('%999999s' * 50) % ((1,) * 50) }}", FORMAT),
    ("{{ ('%999999s' * 1000) % ((1,) * 1000) }}", FORMAT),
    ("{{ ('%(a)999999s' * 50) | format(a=1) }}", FORMAT),
    ("{{ ('%999999s' * 2) | format(1, 2) }}", FORMAT),
    ("{{ ('%*s' * 50) % ((999999, 'x') * 50) }}", FORMAT),
    ("{{ ('%.999999f' * 50) % ((1.5,) * 50) }}", FORMAT),
    ("{{ ('%999999s' * 50).encode() % (('x'.encode(),) * 50) }}", FORMAT),
    ("{{ ('{0:999999}' * 50).format(1) }}", FORMAT),
    ("{{ ('{a:999999}' * 50).format_map({'a': 1}) }}", FORMAT),
    ("{{ ('{0:>{w}}' * 50).format('x', w=999999) }}", FORMAT),
    ("{{ ('{:>{}}' * 50).format(*(['x', 999999] * 50)) }}", FORMAT),
    ("{{ ('{0:.999999f}' * 50).format(1.5) }}", FORMAT),
    ("{{ (('{0:999999}' * 50) | safe).format(1) }}", FORMAT),
    # a string broken into one Python object per character (about 80 bytes each)
    ("{{ ('\u20ac' * 999999) | list }}", HUGE),
    ("{{ ('\u20ac' * 999999) | sort }}", HUGE),
    ("{{ ('\u20ac' * 999999) | join }}", HUGE),
    ("{{ ('\u20ac' * 999999) | batch(999999) | list }}", HUGE),
    ("{{ ('\u20ac' * 999999) | slice(1) | list }}", HUGE),
    ("{{ ('\u20ac' * 999999) | groupby(0) }}", HUGE),
    ("{{ ('\u20ac ' * 499999).split() }}", HUGE),
    ("{{ ('\u20ac ' * 499999).rsplit(' ') }}", HUGE),
    ("{{ ('\u20ac\\n' * 499999).splitlines() }}", HUGE),
])
def test_a_bomb_stops_before_it_is_built(source: str, limit: str) -> None:
    message, peak, seconds = stopped(source)
    assert message == f"templates/bomb.html:1: render stopped: {limit}"
    assert peak < PEAK, f"{peak:,} bytes"
    assert seconds < 10


def peak_of(source: str) -> tuple[str, int]:
    """What SOURCE renders to and the peak of memory it took."""
    template = compile_source(environment(), source, "templates/t.txt")
    tracemalloc.start()
    try:
        output = template.render({})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return output, peak


@pytest.mark.parametrize(("filter_", "text"), [
    ("title", "'a ' * 499999"),  # 68 MB before: a list of every word and separator
    ("title", "'\\u20ac ' * 499999"),  # 120 MB before
    ("title", "'a-(b[c{d<e\\tf\\n' * 71000"),  # every separator title cuts at
    ("capitalize", "'\\U0001f600 ' * 499999"),
    ("wordcount", "'ab ' * 333333"),
])
def test_a_word_by_word_filter_over_a_long_text_stays_small(filter_: str, text: str) -> None:
    source = f"{{% set s = {text} %}}{{{{ s | {filter_} }}}}"
    output, peak = peak_of(source)
    assert peak < PEAK, f"{peak:,} bytes"
    assert output == jinja2.sandbox.ImmutableSandboxedEnvironment().from_string(
        source).render()


def test_urlize_over_a_long_text_links_as_jinja_does() -> None:
    # urlize works word by word too (75 MB for 1 MB of euro signs before); 75,600
    # characters here, two chunks, without tracemalloc (500,000 words take 18 s in it)
    source = ("{% set s = 'see www.example.com/a, (https://example.com/b) or a@b.example. '"
              " * 1200 %}{{ s | urlize }}|{{ s | urlize(10, true) | safe }}")
    output = compile_source(environment(), source, "templates/t.html").render({})
    assert output == jinja2.sandbox.ImmutableSandboxedEnvironment(
        autoescape=True).from_string(source).render()


def test_a_split_is_refused_before_its_pieces_are_built() -> None:
    # The source string is 4 MB (four bytes a character); its 500,000 pieces took 52 MB.
    message, peak, _ = stopped("{{ ('\U0001f600 ' * 499999).split() }}")
    assert message == f"templates/bomb.html:1: render stopped: {HUGE}"
    assert peak < 12_000_000, f"{peak:,} bytes"


def test_a_bomb_in_the_data_is_stopped_by_the_builder_that_uses_it() -> None:
    # The context is not checked when it is made; what a template builds from it is.
    rows = [[0] * 100_000] * 100
    assert stopped("{{ rows | sum(start=[]) }}", {"rows": rows})[0] == \
        "templates/bomb.html:1: render stopped: sum() over 1 MB"


def test_deep_nesting_in_the_source_is_stopped_too() -> None:
    source = "{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}"
    with pytest.raises(RenderLimit, match=re.escape(f"render stopped: {DEEP}")):
        compile_source(environment(), source, "templates/bomb.html")


def test_a_sum_of_many_short_lists_takes_linear_time() -> None:
    # Python's sum() copies the growing list at every step: 5·10**9 copies here.
    started = time.process_time()
    source = "{{ ([[0]] * 100000) | sum(start=[]) | length }}"
    assert compile_source(environment(), source, "templates/t.html").render({}) == "100000"
    assert time.process_time() - started < 1


def test_ordinary_constructs_render_as_in_jinja() -> None:
    source = ("{{ [1, 2] + [3] }}|{{ (1, 2) + (3,) }}|{{ 'a' + 'b' }}|{{ 2 + 3 }}|{{ 2 * 3 }}|"
              "{{ 'ab' * 3 }}|{{ [0] * 3 }}|{{ 2 ** 10 }}|{{ 2.5 ** 2 }}|{{ 7 % 3 }}|"
              "{{ '%s-%s' % ('a', 'b') }}|{{ '%(x)s' % {'x': 1} }}|{{ '{}:{}'.format(1, 2) }}|"
              "{{ {'k': [1, (2, 3)]} }}|{{ [1, 2, 3] | sum }}|{{ [[1], [2]] | sum(start=[]) }}|"
              "{{ [(1,), (2,)] | sum(start=()) }}|{{ [1, 2, 3, 4] | slice(2) | list }}|"
              "{{ [1, 2, 3] | batch(2, 0) | list }}|{{ 'x' ~ 1 ~ none }}|"
              "{{ dict.fromkeys('ab', 0) }}|{{ [1, 2, 3] | map('string') | join(',') }}|"
              "{{ [3, 1, 2] | sort | list }}|{{ 'x' | tojson }}|{{ (10 ** 30) * (10 ** 30) }}|"
              "{% macro m(a) %}<{{ a }}>{% endmacro %}{{ m(1) ~ m(2) }}|"
              "{% set ns = namespace(n=0) %}{% for i in range(3) %}{% set ns.n = ns.n + i %}"
              "{% endfor %}{{ ns.n }}|{{ (1).to_bytes(2, 'big') }}|{{ 'ab'.translate({97: 'A'}) }}|"
              "{{ '{:>{w}}|{:<{}}|{:^{}.{}}'.format('x', 'y', 4, 'zzz', 5, 2, w=3) }}|"
              "{{ '%*d|%-*s|%.2f|%e' % (5, 42, 3, 'a', 3.14159, 10 ** 20) }}|"
              "{{ '%(n)05d|%(s).2s|%%' % {'n': 42, 's': 'abc'} }}|{{ '%s' % ((1, 2),) }}|"
              "{{ '{0[a]}|{0[b][1]}|{1!r}|{2:,}|{3:.3e}|{4:%}'.format({'a': 1, 'b': 'xy'}, "
              "'q', 1234567, 12345.678, 0.25) }}|{{ '{a}-{b:>4}'.format_map({'a': 1, 'b': 2}) }}|"
              "{{ '%-6s|' | format('ab') }}{{ '%(a)s' | format(a=[1]) }}|"
              "{{ 'hello wORLD-foo (bar [baz <qux' | title }}|{{ 'hELLO world' | capitalize }}|"
              "{{ 'a b\\tc' | wordcount }}|{{ 'see www.example.com, or a@b.example.' | urlize }}|"
              "{{ ' a  b '.split() }}|{{ 'a,b,,c'.split(',', 2) }}|{{ 'a b c'.rsplit(None, 1) }}|"
              "{{ 'a\\nb\\r\\nc'.splitlines() }}|{{ 'abc' | list }}|{{ 'cab' | sort | join }}|"
              "{{ 'abcde' | batch(2) | list }}|{{ 'abcd' | slice(2) | list }}")
    plain = jinja2.sandbox.ImmutableSandboxedEnvironment(keep_trailing_newline=True)
    expected = plain.from_string(source).render()
    assert compile_source(environment(), source, "templates/t.txt").render({}) == expected
    lorem = compile_source(environment(), "{{ lipsum(2, false) }}", "templates/t.txt").render({})
    assert lorem.count("\n\n") == 1


def test_two_threads_rendering_at_once_each_keep_their_own_budget() -> None:
    """The daemon validates a reload in one thread while the sender renders in another:
    a bomb in one is stopped by its own CPU budget, and never stops the other's mails."""
    import threading

    env = environment()
    bomb = compile_source(env, "{% for x in range(10000) %}{% for y in range(10000) %}"
                               "{% endfor %}{% endfor %}", "templates/bomb.html")
    note = compile_source(env, "{% for i in range(50) %}{{ i }}{% endfor %}",
                          "templates/note.html")
    stops: list[str] = []

    def explode() -> None:
        with pytest.raises(RenderLimit) as caught:
            bomb.render({})
        stops.append(str(caught.value))

    thread = threading.Thread(target=explode)
    thread.start()
    mails = 0
    while thread.is_alive():  # the other thread renders as long as the bomb runs
        assert note.render({}) == "".join(str(i) for i in range(50))
        mails += 1
    thread.join()
    assert stops == [f"templates/bomb.html:1: render stopped: {CPU}"]
    assert mails > 0


def test_a_bomb_fails_its_rows_and_send_goes_on(ws: Workspace) -> None:
    ws.write("segments/everyone.yaml", "description: all\nall: [{orders: {at_least: 0}}]\n")
    ws.write("templates/note.html",
             '<p>{{ store.address }} <a href="{{ links.unsubscribe }}">u</a></p>\n'
             "{% if customer.first_name == 'Bomb' %}{{ [[0] * 999999] * 999999 }}"
             "{% endif %}\n")
    ws.write("campaigns/note.yaml", "name: Note\ntrigger: once\nat: 2026-11-23T09:00\n"
                                    "grace: 2d\nsegment: everyone\ntemplate: note.html\n"
                                    "subject: Hi\n")
    ws.write("customers.csv", "id,email,first_name\nC1,anna@example.com,Anna\n"
                              "C2,bomb@example.com,Bomb\nC3,carl@example.com,Carl\n")
    assert ws.run("import", "customers", "customers.csv", "--now", "2026-01-01").code == 0
    with FaultServer() as server:
        ws.env.update({"MAILER_SMTP_URL": server.url, "MAILER_SECRET_KEY": "k" * 32})
        started = time.monotonic()
        result = ws.run("send", "note", "--now", "2026-11-23T10:00", "--json")
        seconds = time.monotonic() - started
    assert result.code == 0, result.stdout + result.stderr
    assert sorted(c.recipient for c in server.caught) == ["anna@example.com",
                                                          "carl@example.com"]
    rows = {row[0]: row[1:] for row in ws.query(
        "SELECT c.email, d.status, d.reason FROM deliveries d "
        "JOIN customers c ON c.id = d.customer_id")}
    status, reason = rows["bomb@example.com"]
    assert status == "failed"
    assert "templates/note.html:2: render stopped: a repetition over 1 MB" in reason
    assert seconds < 20
