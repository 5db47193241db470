"""Charts a marketer can read (issue 17): the forecast's and a report's charts as PNG, SVG
and HTML, drawn from a demo store through the real CLI and a real send, and looked at in
headless Chromium (screenshots kept in test-artifacts/, not committed)."""

from __future__ import annotations

import html
import re
import shutil
import sqlite3
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mailer.app.charts import campaign_colour, short_subject, variant_letter
from tests.conftest import Workspace
from tests.smtp_server import FaultServer
from tests.test_delivery import send
from tests.test_preview_browser import ARTIFACTS, _chromium
from tests.test_serve_browser import chromium

NOW = "2026-11-23T10:00"
FRIDAY = "2026-11-27T08:00"  # Black Friday starts
# A campaign of the workspace with no mail in the days the tests look at.
DORMANT = """\
name: Spring preview
trigger: once
at: 2027-03-01T09:00
segment: subscribers
template: newsletter.html
subject: "Spring is coming"
"""


@pytest.fixture(scope="module")
def built_shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`mailer init` and a demo store of 60 customers, plus the dormant campaign, built
    once a module (a worker): each test works in its own copy (demo_shop)."""
    folder = tmp_path_factory.mktemp("charts")
    assert Workspace(folder, None).run("init", "shop").code == 0
    shop = Workspace(folder / "shop", None)
    assert shop.run("demo-data", "--customers", "60", "--seed", "7", "--now", NOW).code == 0
    shop.write("campaigns/dormant.yaml", DORMANT)
    with sqlite3.connect(shop.root / "mailer.db") as conn:  # the copy needs no WAL file
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return shop.root


def demo_shop(built: Path, tmp_path: Path) -> Workspace:
    """A copy of the built demo shop in TMP_PATH/shop, for one test to change."""
    shutil.copytree(built, tmp_path / "shop")
    return Workspace(tmp_path / "shop", None)


def forecast(shop: Workspace, chart: Path, *args: str) -> dict[str, Any]:
    result = shop.run("forecast", *args, "--chart", str(chart), "--json")
    assert result.code == 0, result.stderr
    document: dict[str, Any] = result.json()
    return document


def with_mails(document: dict[str, Any]) -> list[str]:
    totals: Counter[str] = Counter()
    for day in document["days"]:
        totals.update(day["campaigns"])
    return sorted(slug for slug, n in totals.items() if n)


def legend(page: str) -> list[tuple[str, str]]:
    """(swatch colour, text) of an HTML chart's legend."""
    block = re.search(r'<ul class="legend">(.*?)</ul>', page, re.S)
    assert block is not None
    return [(colour, html.unescape(text)) for colour, text in re.findall(
        r'<li><span class="swatch" style="background:(#[0-9a-f]{6})[^"]*"></span>(.*?)</li>',
        block.group(1))]


def svg_texts(drawn: str) -> list[str]:
    return [html.unescape(text) for text in re.findall(r"<text [^>]*>([^<]*)</text>", drawn)]


def raw_fill(drawn: str, gid: str) -> str:
    """The fill of the bar with id GID in a matplotlib SVG: a colour, or url(#pattern)."""
    found = re.search(rf'<g id="{re.escape(gid)}">\s*<path [^>]*style="fill: ([^;]+);', drawn)
    assert found is not None, gid
    return found.group(1)


def fill(drawn: str, gid: str) -> str:
    """The fill colour of the bar with id GID (a hatch's background for a hatched bar)."""
    colour = raw_fill(drawn, gid)
    pattern = re.fullmatch(r"url\(#(\w+)\)", colour)
    if pattern is None:
        return colour
    background = re.search(rf'<pattern id="{pattern.group(1)}"[^>]*>\s*<rect [^>]*'
                           r'fill="(#[0-9a-f]{6})"', drawn)
    assert background is not None
    return background.group(1)


def pixels(path: Path) -> tuple[tuple[int, int], set[tuple[int, int, int]], float]:
    """A PNG's size, its colours and the share of pixels that are not white."""
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG"
        rgb = image.convert("RGB")
        counted = rgb.getcolors(rgb.width * rgb.height) or []
        white = sum(n for n, colour in counted if colour == (255, 255, 255))
        return rgb.size, {colour for _, colour in counted}, 1 - white / (rgb.width * rgb.height)


def rgb(colour: str) -> tuple[int, int, int]:
    red, green, blue = bytes.fromhex(colour.removeprefix("#"))
    return red, green, blue


def look_at(chart: Path, screenshot: str) -> None:
    """Open CHART in headless Chromium: it renders its SVG at full width with no console
    error; the screenshot goes to test-artifacts/."""
    errors: list[str] = []
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda message: errors.append(message.text)
                if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(chart.as_uri())
        box = page.locator("figure svg").bounding_box()
        assert box is not None and box["width"] > 1000 and box["height"] > 450
        assert page.locator("h1").inner_text() == page.title()
        page.screenshot(path=str(ARTIFACTS / screenshot), full_page=True)
    assert errors == []
    assert (ARTIFACTS / screenshot).stat().st_size > 20_000


def test_a_campaigns_colour_comes_from_its_id_alone() -> None:
    assert campaign_colour("black-friday") == campaign_colour("black-friday") == "#ff7f0e"
    assert campaign_colour("newsletter") == "#d62728"  # the same in every run
    assert (variant_letter(1), variant_letter(2), variant_letter(27)) == ("A", "B", "27")
    assert short_subject("{{ customer.first_name | default('Friends') }}, 48 hours only: "
                         "30% off") == "{customer.first_name}, 48 hours only: 3…"
    assert short_subject("Black Friday:\n  your 30% ends Sunday") == (
        "Black Friday: your 30% ends Sunday")


def test_the_forecast_chart_has_dates_axes_a_title_and_only_campaigns_with_mails(
        built_shop: Path, tmp_path: Path) -> None:
    _chromium()
    shop = demo_shop(built_shop, tmp_path)
    chart = tmp_path / "forecast.html"
    document = forecast(shop, chart, "--days", "5", "--from", NOW)
    topics = topics_of(shop)
    # a topic's campaigns stack together, in the legend and the table too
    shown = sorted(with_mails(document), key=lambda slug: (topics[slug], slug))
    assert "dormant" in document["days"][0]["campaigns"] and "dormant" not in shown
    assert {"black-friday", "birthday"} <= set(shown)
    for day in document["days"]:  # the JSON's topics are the campaigns' sums
        assert day["topics"] == {topic: sum(n for slug, n in day["campaigns"].items()
                                            if topics[slug] == topic)
                                 for topic in sorted(set(topics.values()))}
    page = chart.read_text(encoding="utf-8")
    assert "<h1>Forecast from 2026-11-23 to 2026-11-27</h1>" in page
    texts = svg_texts(page)
    assert "Mails per day by campaign and topic, Mon 23 Nov 2026 to Fri 27 Nov 2026" in texts
    assert {"mails", "day", "campaign · topic", "Mon 23 Nov", "Fri 27 Nov"} <= set(texts)
    labels = [f"{slug} · {topics[slug]}" for slug in shown]
    assert "black-friday · promotions" in labels and "birthday · general" in labels
    assert [text for _, text in legend(page)] == labels  # the text legend
    assert [text for text in texts if text in labels] == labels
    assert "dormant" not in page
    for (colour, _), slug in zip(legend(page), shown, strict=True):
        assert colour == campaign_colour(slug)
        assert fill(page, f"bar-{slug}-2026-11-27") == colour
    # two ids that hash to one colour: the later one's bars (and swatch) are hatched
    assert campaign_colour("birthday") == campaign_colour("black-friday")
    assert raw_fill(page, "bar-birthday-2026-11-23").startswith("#")
    assert raw_fill(page, "bar-black-friday-2026-11-27").startswith("url(#")
    assert 'repeating-linear-gradient' in page.split("black-friday · promotions</li>")[0] \
        .split("<li>")[-1]
    # the numbers as a table: a row per day, each shown topic's total, the day's total last
    shown_topics = sorted({topics[slug] for slug in shown})
    assert "".join(f"<th>topic {name}</th>" for name in shown_topics) + "<th>all</th>" in page
    for day in document["days"]:
        total = sum(day["campaigns"].values())
        when = datetime.fromisoformat(day["date"])
        row = [f"{when:%a %d %b %Y}", *(str(day["campaigns"][s]) for s in shown),
               *(str(day["topics"][name]) for name in shown_topics), str(total)]
        assert "<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" in page
    look_at(chart, "chart-forecast.png")


def topics_of(shop: Workspace) -> dict[str, str]:
    """Each campaign's topic, as its file says (`general` when it names none)."""
    from mailer.config.workspace import load_valid_workspace

    return {slug: campaign.topic for slug, campaign in load_valid_workspace(shop.root)[1].items()}


def test_the_forecast_chart_as_png_and_svg(built_shop: Path, tmp_path: Path) -> None:
    shop = demo_shop(built_shop, tmp_path)
    png = tmp_path / "forecast.png"
    document = forecast(shop, png, "--days", "1", "--from", FRIDAY)
    size, colours, inked = pixels(png)
    assert size == (1200, 600)
    assert inked > 0.05  # bars, axes and text, not a blank image
    for slug in with_mails(document):
        assert rgb(campaign_colour(slug)) in colours
    drawn = tmp_path / "forecast.svg"
    document = forecast(shop, drawn, "--days", "1", "--from", FRIDAY)
    text = drawn.read_text(encoding="utf-8")
    assert text.startswith("<?xml") and "<svg" in text and "<html" not in text
    texts = svg_texts(text)
    assert "Mails per day by campaign and topic, Fri 27 Nov 2026 to Fri 27 Nov 2026" in texts
    topics = topics_of(shop)
    assert {f"{slug} · {topics[slug]}" for slug in with_mails(document)} \
        <= set(texts) and "dormant" not in texts
    assert "dormant" not in text


def _read_some_mails(shop: Workspace) -> None:
    """Opens, clicks, an unsubscribe and ratings on Black Friday's sent mails, as the
    service records them: A's readers open more than B's."""
    from mailer.store import events

    rows = shop.query("SELECT id, customer_id, subject_variant FROM deliveries "
                      "WHERE campaign = 'black-friday' AND status = 'sent' ORDER BY id")
    at = datetime(2026, 11, 27, 12, tzinfo=UTC)
    engine = shop.engine()
    try:
        with engine.begin() as conn:
            def hit(kind: str, row: Any, **values: Any) -> None:
                events.add(conn, kind, customer_id=row[1], campaign="black-friday",
                           delivery_id=row[0], at=at, **values)

            for variant, opened, clicked in ((0, 3, 2), (1, 1, 0)):
                mine = [row for row in rows if row[2] == variant]
                for row in mine[:opened]:
                    hit("open", row)
                for row in mine[:clicked]:
                    hit("click", row, url="https://shop.example/sale")
            hit("unsubscribe", rows[-1])
            for row, score in zip(rows, (5, 4, 5, 2), strict=False):
                hit("rating", row, score=score)
    finally:
        engine.dispose()


def test_the_report_chart_shows_rates_per_subject_variant_in_the_campaigns_colour(
        built_shop: Path, tmp_path: Path) -> None:
    from mailer.app.charts import report_chart
    from mailer.app.report import report_of
    from mailer.config.workspace import load_valid_workspace

    _chromium()
    shop = demo_shop(built_shop, tmp_path)
    forecast_svg = tmp_path / "forecast.svg"
    forecast(shop, forecast_svg, "--days", "1", "--from", FRIDAY)  # before anything is sent
    with FaultServer() as server:
        assert send(shop, server, "black-friday", now="2026-11-27T10:00")["sent"] > 10
    _read_some_mails(shop)
    engine = shop.engine()
    try:
        report = report_of(engine, "black-friday", ["black-friday"])
    finally:
        engine.dispose()
    subject = load_valid_workspace(shop.root)[1]["black-friday"].subject
    subjects = dict(enumerate(subject, start=1))
    charts = {kind: tmp_path / f"report.{kind}" for kind in ("html", "svg", "png")}
    for path in charts.values():
        report_chart(report, subjects, path)

    page = charts["html"].read_text(encoding="utf-8")
    assert "<h1>black-friday: rates by subject variant</h1>" in page
    texts = svg_texts(page)
    assert {"black-friday: rates by subject variant", "% of mails sent", "open rate",
            "click rate", "unsubscribe rate", "subject variant", "ratings",
            "ratings: 4, mean 4.0, CSAT 75.0 %"} <= set(texts)
    entries = ["A: {customer.first_name}, 48 hours only: 3…",
               "B: Black Friday: your 30% ends Sunday"]
    assert [text for _, text in legend(page)][:2] == entries
    assert set(entries) <= set(texts)  # the chart's own legend
    a, b = report.variants
    assert (a.opened, a.clicked, b.opened, b.clicked) == (3, 2, 1, 0)
    for variant, full in ((a, subject[0]), (b, subject[1])):  # the numbers, subjects in full
        share = f"{variant.opened} ({100 * variant.opened / variant.sent:.1f} %)"
        assert (f"<tr><td>{variant_letter(variant.variant)}</td><td>{html.escape(full)}</td>"
                f"<td>{variant.sent}</td><td>{share}</td>") in page
        assert f"{100 * variant.opened / variant.sent:.1f} %" in texts  # over its bar
    sent = a.sent + b.sent
    assert f"<td>1 ({100 / sent:.1f} %)</td></tr>" in page  # the unsubscribe, all variants
    assert "<tr><td>5</td><td>2</td></tr>" in page  # two 5s in the ratings table

    # one colour for black-friday in both charts: A's bars, the ratings, the forecast's bars
    colour = campaign_colour("black-friday")
    assert legend(page)[0][0] == colour
    report_svg = charts["svg"].read_text(encoding="utf-8")
    forecast_text = forecast_svg.read_text(encoding="utf-8")
    assert fill(report_svg, "bar-A-opened") == fill(report_svg, "rating-5") == colour
    assert fill(forecast_text, "bar-black-friday-2026-11-27") == colour
    assert fill(report_svg, "bar-B-opened") != colour  # B: lighter and hatched
    size, colours, inked = pixels(charts["png"])
    assert size == (1200, 600) and inked > 0.05 and rgb(colour) in colours
    look_at(charts["html"], "chart-report.png")


@pytest.mark.parametrize("kind", ["png", "html"])
def test_a_report_chart_before_the_first_mail(ws: Workspace, tmp_path: Path,
                                              kind: str) -> None:
    from mailer.app.charts import report_chart
    from mailer.app.report import report_of

    assert ws.run("status").code == 0  # the store's schema
    engine = ws.engine()
    try:
        report = report_of(engine, "welcome", ["welcome"])
    finally:
        engine.dispose()
    path = tmp_path / f"empty.{kind}"
    report_chart(report, {}, path)
    if kind == "png":
        assert pixels(path)[0] == (1200, 600)
        return
    page = path.read_text(encoding="utf-8")
    assert "no mails sent yet" in svg_texts(page)
    assert '<ul class="legend">' not in page and "<h2>Ratings</h2>" not in page
