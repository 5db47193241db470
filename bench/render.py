"""Render benchmark: the sender's whole per-mail path, mails per second and (with
--callgrind) instructions per mail, next to baselines measured in the same run.

    python bench/render.py [--mails N] [--callgrind [--callgrind-mails M]]

Two campaigns in a scratch workspace (the demo's mailer.yaml and templates): the
demo promotion bench/deliver.py sends (personal subject, intro, a coupon a mail),
and a heavy newsletter written here (a product grid of 12 cards, about 30 links,
a mail of 15 KB and more). Each is compiled, stored as a definition and read back
as the worker reads it (mailer.mail.version.from_definition), then every mail runs
mailer.delivery.worker.mail_of_row, the function the sender calls per ledger row:
the context, the render, tracking, the MIME bytes, and DKIM in the row "DKIM on".

Baselines: a bare Jinja render of the same flattened, inlined HTML (no sandbox,
no text part, no tracking, no MIME), and the naive pipeline with premailer per mail
(render, inline, HTML to text, EmailMessage with the default policy), on a tenth
of the mails. One process, one core; rounds interleaved, so that a machine
speeding up or slowing down weighs on every pipeline alike.

Wall-clock rates move by a third on a shared machine. --callgrind runs the same
pipelines in a child under `valgrind --tool=callgrind` and prints instructions per
mail (M mails a pipeline, after one warm-up round): counts stable to about 0.1 %.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

from deliver import CAMPAIGN as PROMOTION  # noqa: E402

ROUNDS = 10
NOW = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
KEY = "bench-secret-key"
NAMES = ["Anna", "Bob", "Chloé", "Dmitry", "Emi", "Zoë", "Łukasz", "Giorgos"]

NEWSLETTER = """\
name: Bench newsletter
trigger: once
at: 2026-12-01T10:00
segment: subscribers
template: newsletter-heavy.html
subject:
  - "{{ customer.first_name | default('Hello') }}, the winter edit is here"
  - "Twelve things for cold days"
intros:
  default: "Twelve picks for the season, {{ customer.first_name | default('friend') }}."
"""


def heavy_template() -> str:
    """The heavy newsletter: an intro, three stories, a grid of 12 product cards (two
    links each: the product, add to cart), a personal account link and a link to the
    reader's favourite category."""
    cards = []
    for number in range(12):
        sku = f"sku-{number + 1:03d}"
        cards.append(
            f'<td class="product" width="50%" style="padding: 8px" valign="top">'
            f'<a href="{{{{ store.url }}}}/p/{sku}?utm_source=newsletter&amp;utm_campaign=winter">'
            f'<img src="https://cdn.shop.example/p/{sku}.jpg" width="260" '
            f'alt="Product {number + 1}" '
            f'style="display:block;border:0;width:100%"></a>'
            f"<strong>Winter product {number + 1}</strong>"
            f'<p class="note">Hand-made in small batches, long-lasting, and kind to the planet: '
            f"wool, oak and linen, chosen by our buyers this autumn.</p>"
            f"<p><strong>{24 + number}.90 EUR</strong></p>"
            f'<a class="button" href="{{{{ store.url }}}}/cart/add/{sku}">Add to cart</a></td>')
    rows = "".join(f"<tr>{cards[i]}{cards[i + 1]}</tr>\n" for i in range(0, 12, 2))
    stories = "".join(
        f"<h2>Story {n}: how we make things last</h2>\n"
        f"<p>{'Every piece in this edit was chosen for the way it ages. ' * 5}"
        f'<a href="https://journal.shop.example/story-{n}">Read the story</a></p>\n'
        for n in (1, 2, 3))
    return (
        '{% extends "layout.html" %}\n{% block content %}\n'
        '<h1>The winter edit, {{ customer.first_name | default("friend") }}</h1>\n'
        '<p class="intro">{{ intro }}</p>\n' + stories +
        '<table role="presentation" width="100%" cellpadding="0" cellspacing="0">\n'
        + rows + "</table>\n"
        "{% if stats.favourite_category is defined %}<p>More {{ stats.favourite_category }}: "
        '<a href="{{ store.url }}/c/{{ stats.favourite_category }}">see them all</a></p>'
        "{% endif %}\n"
        '<p><a href="{{ store.url }}/account?ref={{ customer.id }}">Your account</a></p>\n'
        "{% endblock %}\n")


def workspace(folder: Path) -> None:
    """The demo's mailer.yaml and templates, the two bench campaigns."""
    shutil.copy(ROOT / "mailer.yaml", folder / "mailer.yaml")
    shutil.copytree(ROOT / "templates", folder / "templates")
    (folder / "templates" / "newsletter-heavy.html").write_text(heavy_template())
    (folder / "segments").mkdir()
    (folder / "segments" / "subscribers.yaml").write_text(
        "description: subscribers\nall: [{subscribed: true}]\n")
    (folder / "campaigns").mkdir()
    (folder / "campaigns" / "promotion.yaml").write_text(PROMOTION)
    (folder / "campaigns" / "newsletter.yaml").write_text(NEWSLETTER)


Run = Callable[[range], None]


def pipelines(folder: Path, slug: str, count: int) -> tuple[dict[str, Run], list[int]]:
    """The pipelines timed for campaign SLUG over COUNT readers, and the sizes of the
    mails ours made (filled in as it runs)."""
    import logging
    from email.message import EmailMessage

    import jinja2
    import premailer
    from cryptography.hazmat.primitives.asymmetric import rsa

    from mailer.config.workspace import load_valid_workspace
    from mailer.delivery.worker import mail_of_row
    from mailer.mail.context import build_context
    from mailer.mail.dkim import Signer
    from mailer.mail.message import new_message_id
    from mailer.mail.templates import flatten, inline_css
    from mailer.mail.text import html_to_text
    from mailer.mail.version import compile_version, definition, from_definition
    from mailer.store.customers import Profile
    from mailer.store.ledger import Row

    _, campaigns = load_valid_workspace(folder)
    spec = campaigns[slug]
    # as the worker gets it: compiled at plan time, stored, read back
    version, settings = from_definition(definition(
        compile_version(slug, spec, folder / "templates"), folder))
    people = [Profile(store_id=f"C{i:07d}", email=f"c{i}@example.com", first_name=NAMES[i % 8],
                      last_name="Example", country="DE", city="Berlin", locale="de-DE",
                      timezone=("Europe/Berlin", "America/New_York", None)[i % 3])
              for i in range(count)]
    rows = [Row(id=i + 1, campaign=slug, campaign_version_id=1, occurrence="once",
                customer_id=i, email=people[i].email, subject_variant=i % 2, intro="default",
                attempts=0, send_after=NOW, expires_at=NOW + timedelta(days=2),
                message_id=new_message_id("shop.example")) for i in range(count)]
    stats = {"orders": 3, "spent": Decimal("120.50"), "favourite_category": "coffee",
             "first_order_at": NOW - timedelta(days=300), "last_order_at": NOW - timedelta(days=20)}
    coupons = [(f"BF-{i:06X}", NOW + timedelta(days=3)) if spec.coupon else None
               for i in range(count)]
    signer = Signer("shop.example", "mail", rsa.generate_private_key(public_exponent=65537,
                                                                     key_size=2048))
    sizes: list[int] = []

    def ours(chunk: range) -> None:
        for i in chunk:
            _, _, message = mail_of_row(version, settings, rows[i], people[i], stats,
                                        coupon=coupons[i], now=NOW, key=KEY, sign=None)
            sizes.append(len(message))

    def dkim(chunk: range) -> None:
        for i in chunk:
            mail_of_row(version, settings, rows[i], people[i], stats, coupon=coupons[i],
                        now=NOW, key=KEY, sign=signer)

    def read(name: str) -> str:
        return (folder / "templates" / name).read_text()

    contexts = [build_context(people[i], stats, settings=settings, slug=slug, campaign=spec,
                              now=NOW, key=KEY, message=str(i + 1)) for i in range(count)]
    for values in contexts:
        values["intro"] = "Twelve picks for the season."
    plain = jinja2.Environment(autoescape=True)
    template = plain.from_string(inline_css(flatten(spec.template, read)))

    def bare(chunk: range) -> None:
        for i in chunk:
            template.render(contexts[i])

    raw = plain.from_string(flatten(spec.template, read))

    def naive(chunk: range) -> None:
        for i in chunk:
            person, values = people[i], contexts[i]
            html = premailer.Premailer(raw.render(values), allow_network=False,
                                       cssutils_logging_level=logging.CRITICAL).transform()
            message = EmailMessage()
            message["From"] = settings.sender.from_
            message["To"] = f"{person.first_name} <{person.email}>"
            message["Subject"] = f"{person.first_name}, this is for you"
            message["List-Unsubscribe"] = f"<{values['links']['unsubscribe']}>"
            message.set_content(html_to_text(html))
            message.add_alternative(html, subtype="html")
            message.as_bytes()

    return {"ours": ours, "dkim": dkim, "bare": bare, "naive": naive}, sizes


LABELS = {"ours": "mailer: the sender's per-mail path (mail_of_row)",
          "dkim": "  the same, DKIM on",
          "bare": "bare Jinja render of the same HTML (HTML only)",
          "naive": "naive: premailer, html-to-text, EmailMessage"}
SLUGS = {"promotion": "demo promotion", "newsletter": "heavy newsletter"}


def wall_clock(folder: Path, count: int) -> None:
    for slug, title in SLUGS.items():
        runs, sizes = pipelines(folder, slug, count)
        spent = dict.fromkeys(runs, 0.0)
        done = dict.fromkeys(runs, 0)
        step = max(count // ROUNDS, 1)
        for first in range(0, count, step):
            chunk = range(first, min(first + step, count))
            for name, run in runs.items():
                indices = chunk if name != "naive" else range(
                    first, first + max(len(chunk) // 10, 2))
                started = time.perf_counter()
                run(indices)
                spent[name] += time.perf_counter() - started
                done[name] += len(indices)
        rate = {name: done[name] / spent[name] for name in runs}
        print(f"\n{title}: {count:,} mails of {sum(sizes) / len(sizes) / 1024:.1f} KiB, "
              f"one core, {ROUNDS} interleaved rounds")
        print(f"{'pipeline':<52}{'mails/s':>9}{'µs/mail':>9}")
        for name, label in LABELS.items():
            print(f"{label:<52}{rate[name]:>9,.0f}{1e6 / rate[name]:>9,.0f}")
        print(f"mailer is {rate['ours'] / rate['naive']:.0f}x the naive pipeline and "
              f"{rate['ours'] / rate['bare']:.2f}x a bare render; DKIM on costs "
              f"{1 - rate['dkim'] / rate['ours']:.0%} of the rate")


# --- instructions per mail under callgrind ---------------------------------------------------

# (the naive pipeline would take minutes under valgrind); `idle` runs nothing: what the
# child spends waiting for the parent's dumps, taken off the others
COUNTED = ("idle", "ours", "dkim", "bare")


def counted_child(folder: Path, mails: int, signals: Path) -> None:
    """In the child under valgrind: each pipeline warmed up, then run MAILS mails between
    two of the parent's dumps (the parent says go by a file; sleeping between polls
    keeps valgrind reading its commands and adds next to nothing to the counts)."""
    step = 0

    def wait() -> None:
        nonlocal step
        print("ready", flush=True)
        while not (signals / f"go{step}").exists():
            time.sleep(0.05)
        step += 1

    for slug in SLUGS:
        runs, _ = pipelines(folder, slug, 2 * mails)
        runs["idle"] = lambda chunk: None
        for name in COUNTED:
            runs[name](range(mails, 2 * mails))  # warm: caches, first compiles
            wait()
            runs[name](range(mails))
            print(f"{slug} {name}", flush=True)
    wait()


def callgrind(folder: Path, mails: int) -> None:
    if shutil.which("valgrind") is None:
        sys.exit("--callgrind needs valgrind (apt-get install valgrind)")
    signals = Path(tempfile.mkdtemp(prefix="mailer-callgrind-"))
    out = signals / "callgrind.out"
    child = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
         __file__, "--counted-child", str(folder), str(mails), str(signals)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONHASHSEED": "0"})  # hashing moves counts by a tenth
    assert child.stdout is not None

    def dump() -> int:
        subprocess.run(["callgrind_control", "--dump", str(child.pid)], check=True,
                       capture_output=True)
        newest = max(glob.glob(f"{out}.*"), key=os.path.getmtime)
        with open(newest) as dumped:
            totals = [line for line in dumped if line.startswith("totals:")]
        os.remove(newest)
        return int(totals[0].split()[1])

    counts: dict[str, dict[str, float]] = {slug: {} for slug in SLUGS}
    started = time.perf_counter()
    try:
        for step in range(len(SLUGS) * len(COUNTED)):
            if child.stdout.readline().strip() != "ready":
                sys.exit("the child under valgrind ended early")
            dump()  # the set-up and the warm-up, thrown away
            (signals / f"go{step}").touch()
            slug, name = child.stdout.readline().split()
            counts[slug][name] = dump() - counts[slug].get("idle", 0)
        child.stdout.readline()
        (signals / f"go{len(SLUGS) * len(COUNTED)}").touch()
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
        shutil.rmtree(signals, ignore_errors=True)
    print(f"\ninstructions per mail under callgrind ({mails} mails a pipeline, "
          f"{time.perf_counter() - started:.0f} s)")
    print(f"{'pipeline':<52}" + "".join(f"{title:>18}" for title in SLUGS.values()))
    for name in COUNTED[1:]:
        print(f"{LABELS[name]:<52}" + "".join(f"{counts[slug][name] / mails / 1e6:>17.3f}M"
                                               for slug in SLUGS))
    print(f"{'mailer / bare render':<52}" + "".join(
        f"{counts[slug]['ours'] / counts[slug]['bare']:>17.2f}x" for slug in SLUGS))


def main() -> None:
    if sys.argv[1:2] == ["--counted-child"]:
        counted_child(Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mails", type=int, default=2000)
    parser.add_argument("--callgrind", action="store_true",
                        help="also count instructions per mail under valgrind")
    parser.add_argument("--callgrind-mails", type=int, default=200)
    options = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="mailer-bench-"))
    try:
        workspace(folder)
        wall_clock(folder, options.mails)
        if options.callgrind:
            callgrind(folder, options.callgrind_mails)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
