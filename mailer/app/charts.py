"""Charts a marketer can read: the forecast's mails per day and a report's rates by subject
variant, drawn with matplotlib (Agg, through its object API: no pyplot, no display, no
global figure) and written as PNG, SVG or a self-contained HTML page that carries the SVG,
the legend as text and the numbers as a table.

matplotlib is imported inside the functions that draw, so commands load it only when they
write a chart (`mailer --help` stays fast). A campaign's colour comes from its id alone
(`campaign_colour`), so it is the same in every chart and every run.
"""

from __future__ import annotations

import hashlib
import html
import io
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from mailer.app.forecast import Forecast
    from mailer.app.report import CampaignReport

# matplotlib's tab20 without its greys (they read as "other"): nine strong colours, then
# their light partners.
CAMPAIGN_COLOURS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
    "#bcbd22", "#17becf",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2",
    "#dbdb8d", "#9edae5",
)
# What tells apart bars of one colour: campaigns that hash alike, a report's variants.
HATCHES = ("", "//", "..", "xx", "\\\\", "++", "oo", "--")
SUBJECT_LENGTH = 40  # a legend's subject text, ellipsis included
EXPRESSION = re.compile(r"\{\{-?\s*([^|}]*?)\s*(?:\|[^}]*)?-?\}\}")  # {{ x | f }} in a subject
WIDTH, HEIGHT, DPI = 12, 6, 100  # inches: 1200 x 600 pixels in a PNG
METRICS = (("opened", "open rate"), ("clicked", "click rate"),
           ("unsubscribed", "unsubscribe rate"))


def campaign_colour(campaign: str) -> str:
    """CAMPAIGN's colour: its id's MD5 picks one of CAMPAIGN_COLOURS (not Python's
    hash(), which changes from run to run)."""
    digest = hashlib.md5(campaign.encode("utf-8"), usedforsecurity=False).digest()
    return CAMPAIGN_COLOURS[int.from_bytes(digest[:8], "big") % len(CAMPAIGN_COLOURS)]


def variant_letter(variant: int) -> str:
    """Subject variant 1 is A, 2 is B, …; past Z its number."""
    return chr(ord("A") + variant - 1) if 1 <= variant <= 26 else str(variant)


def short_subject(subject: str, length: int = SUBJECT_LENGTH) -> str:
    """SUBJECT on one line, each `{{ expression | filters }}` shown as `{expression}`, cut
    to LENGTH characters with an ellipsis."""
    line = EXPRESSION.sub(r"{\1}", " ".join(subject.split()))
    return line if len(line) <= length else line[:length - 1].rstrip() + "…"


def forecast_chart(forecast: Forecast, path: Path) -> None:
    """Mails per day, stacked by campaign and grouped by topic, to PATH (.png, .svg or
    .html). The legend lists the campaigns with at least one mail in these days, each
    with its topic; the table adds each topic's total per day."""
    days = forecast.days
    per_day = [forecast.mails.get(day, Counter()) for day in days]

    def topic(slug: str) -> str:
        return forecast.topics.get(slug, "general")

    # a topic's campaigns stack together, so a day's promotions read as one block
    campaigns = sorted((slug for slug in {s for counted in per_day for s in counted}
                        if sum(counted[slug] for counted in per_day)),
                       key=lambda slug: (topic(slug), slug))
    topics = sorted({topic(slug) for slug in campaigns})
    labels = {slug: f"{slug} · {topic(slug)}" for slug in campaigns}
    styles = _campaign_styles(campaigns)
    title = (f"Mails per day by campaign and topic, {days[0]:%a %d %b %Y} to "
             f"{days[-1]:%a %d %b %Y}")
    figure = _figure()
    axes = figure.add_subplot()
    _draw_days(axes, days, per_day, campaigns, styles, labels)
    axes.set_title(_text(title))
    if campaigns:
        figure.legend(loc="outside right upper", title="campaign · topic")
    caps = ", ".join(f"{label}: {len(ids)} customers" for label, ids in
                     sorted(forecast.caps_hit.items())) or "none"
    rows = [[f"{day:%a %d %b %Y}", *(str(counted[slug]) for slug in campaigns),
             *(str(sum(counted[slug] for slug in campaigns if topic(slug) == name))
               for name in topics),
             str(sum(counted[slug] for slug in campaigns))]
            for day, counted in zip(days, per_day, strict=True)]
    _write(figure, path, Page(
        title=f"Forecast from {days[0]} to {days[-1]}",
        legend=[Key(styles[slug][0], "#ffffff" if styles[slug][1] else "", labels[slug])
                for slug in campaigns],
        header=["day", *campaigns, *(f"topic {name}" for name in topics), "all"], rows=rows,
        notes=[f"Caps hit: {caps}. The most mails one customer gets in 7 days: "
               f"{forecast.max_per_customer_7d}."] if campaigns else [
            "No campaign has a mail in these days."]))


def _draw_days(axes: Axes, days: list[date], per_day: list[Counter[str]],
               campaigns: list[str], styles: Mapping[str, tuple[str, str]],
               labels: Mapping[str, str]) -> None:
    """Day N is drawn at x = N, its date under it (about ten dates on the axis)."""
    from matplotlib.ticker import MaxNLocator

    places = list(range(len(days)))
    bottom = [0] * len(days)
    for slug in campaigns:
        values = [counted[slug] for counted in per_day]
        colour, hatch = styles[slug]
        bars = axes.bar(places, values, width=0.8, bottom=bottom, label=_text(labels[slug]),
                        color=colour, hatch=hatch, edgecolor="white", linewidth=0.6)
        for bar, day in zip(bars, days, strict=True):
            bar.set_gid(f"bar-{slug}-{day.isoformat()}")
        bottom = [below + value for below, value in zip(bottom, values, strict=True)]
    if len(days) <= 31:  # the day's total over its bar, while there is room for it
        for place, total in zip(places, bottom, strict=True):
            if total:
                axes.annotate(str(total), (place, total), xytext=(0, 3),
                              textcoords="offset points", ha="center", fontsize=9)
    if not campaigns:
        axes.text(0.5, 0.5, "no mails in these days", transform=axes.transAxes,
                  ha="center", va="center", color="#555555")
    every = max(1, round(len(days) / 10))
    axes.set_xticks(places[::every], [f"{day:%a %d %b}" for day in days[::every]])
    axes.set_xlim(-0.6, len(days) - 0.4)
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("day")
    axes.set_ylabel("mails")
    axes.set_ylim(0, max([*bottom, 1]) * 1.1)
    _tidy(axes)


def report_chart(report: CampaignReport, subjects: Mapping[int, str], path: Path) -> None:
    """A report's open, click and unsubscribe rates (in % of mails sent) per subject variant,
    each variant named by its letter and SUBJECTS[variant number], and the ratings 1-5 in a
    second panel when there are any; to PATH (.png, .svg or .html)."""
    colour = campaign_colour(report.campaign)
    variants = report.variants
    labels = {v.variant: f"{variant_letter(v.variant)}: " + short_subject(
        subjects.get(v.variant) or f"variant {v.variant}") for v in variants}
    title = f"{report.campaign}: rates by subject variant"
    figure = _figure()
    rated = report.ratings.count > 0
    if rated:
        rates_axes, ratings_axes = figure.subplots(1, 2, width_ratios=[2, 1])
        _draw_ratings(ratings_axes, report, colour)
    else:
        rates_axes = figure.add_subplot()
    _draw_rates(rates_axes, report, labels, colour)
    figure.suptitle(_text(title), fontsize="x-large")
    legend = [_variant_key(colour, index, labels[v.variant])
              for index, v in enumerate(variants)]
    if legend:
        figure.legend(loc="outside lower center", ncols=min(2, len(legend)),
                      title="subject variant")
    _write(figure, path, Page(
        title=title, legend=legend,
        header=["variant", "subject", "sent", "opened", "clicked", "unsubscribed"],
        text_columns=2,
        rows=_report_rows(report, subjects),
        notes=_report_notes(report),
        ratings=report.ratings.scores if rated else None))


def _draw_rates(axes: Axes, report: CampaignReport, labels: Mapping[int, str],
                colour: str) -> None:
    """Three groups of bars (open, click, unsubscribe rate), one bar per variant."""
    from matplotlib.ticker import PercentFormatter

    variants = report.variants
    width = 0.8 / max(1, len(variants))
    peak = 0.0
    for index, variant in enumerate(variants):
        counted = [variant.opened, variant.clicked, variant.unsubscribed]
        rates = [_rate(n, variant.sent) for n in counted]
        peak = max(peak, *rates)
        face, edge, hatch = _variant_style(colour, index)
        offset = (index - (len(variants) - 1) / 2) * width
        bars = axes.bar([n + offset for n in range(len(rates))], rates, width * 0.92,
                        label=_text(labels[variant.variant]), color=face, edgecolor=edge,
                        hatch=hatch, linewidth=0.8)
        for bar, (metric, _) in zip(bars, METRICS, strict=False):
            bar.set_gid(f"bar-{variant_letter(variant.variant)}-{metric}")
        axes.bar_label(bars, labels=[f"{rate:.1f} %" if variant.sent else "none sent"
                                     for rate in rates], padding=2, fontsize=9)
    if not any(v.sent for v in variants):
        axes.text(0.5, 0.5, "no mails sent yet", transform=axes.transAxes, ha="center",
                  va="center", color="#555555")
    sent = ", ".join(f"{variant_letter(v.variant)} {v.sent}" for v in variants) or "none"
    axes.set_title(_text(f"open, click and unsubscribe rate (mails sent: {sent})"))
    axes.set_xticks(range(len(METRICS)), [name for _, name in METRICS])
    axes.set_xlim(-0.6, len(METRICS) - 0.4)
    axes.set_ylabel("% of mails sent")
    axes.yaxis.set_major_formatter(PercentFormatter(decimals=0))
    axes.set_ylim(0, max(peak * 1.15, 5))
    _tidy(axes)


def _draw_ratings(axes: Axes, report: CampaignReport, colour: str) -> None:
    from matplotlib.ticker import MaxNLocator

    ratings = report.ratings
    scores = list(range(1, 6))
    bars = axes.bar(scores, [ratings.scores.get(score, 0) for score in scores], 0.7,
                    color=colour, edgecolor="white")
    for bar, score in zip(bars, scores, strict=True):
        bar.set_gid(f"rating-{score}")
    axes.bar_label(bars, padding=2, fontsize=9)
    axes.set_title(f"ratings: {ratings.count}, mean {ratings.mean}, CSAT {ratings.csat} %")
    axes.set_xticks(scores)
    axes.set_xlabel("score (1 poor … 5 great)")
    axes.set_ylabel("ratings")
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylim(0, max(ratings.scores.values(), default=0) * 1.15 + 1)
    _tidy(axes)


def _rate(n: int, sent: int) -> float:
    """N in per cent of SENT (0 before the first mail)."""
    return 100 * n / sent if sent else 0.0


def _share(n: int, sent: int) -> str:
    return f"{n} ({_rate(n, sent):.1f} %)" if sent else str(n)


def _report_rows(report: CampaignReport, subjects: Mapping[int, str]) -> list[list[str]]:
    """The table under a report chart: per variant its full subject and counts, then all
    variants together when there are several."""
    rows = [[variant_letter(v.variant), subjects.get(v.variant, ""), str(v.sent),
             _share(v.opened, v.sent), _share(v.clicked, v.sent),
             _share(v.unsubscribed, v.sent)]
            for v in report.variants]
    if len(report.variants) > 1:
        sent = sum(v.sent for v in report.variants)
        rows.append(["all", "", str(sent), _share(sum(v.opened for v in report.variants), sent),
                     _share(sum(v.clicked for v in report.variants), sent),
                     _share(report.unsubscribes, sent)])
    return rows


def _report_notes(report: CampaignReport) -> list[str]:
    notes = [f"{report.states.get('sent', 0)} sent, {report.opens.mails} opened, "
             f"{report.clicks.mails} clicked, {report.unsubscribes} unsubscribed. Rates are "
             "in per cent of the mails sent with that subject."]
    ratings = report.ratings
    if ratings.count:
        notes.append(f"{ratings.count} ratings, mean {ratings.mean}, CSAT {ratings.csat} % "
                     "(the share of 4s and 5s).")
    if report.winner is not None:
        best = report.winner
        notes.append(f"Winner by click rate: {variant_letter(best.variant)} "
                     f"({100 * best.confidence:.0f} % confidence over "
                     f"{variant_letter(best.runner_up)}).")
    return notes


def _campaign_styles(campaigns: Sequence[str]) -> dict[str, tuple[str, str]]:
    """Colour and hatch per campaign: the colour is the campaign's own; campaigns of one
    chart whose ids picked the same colour are told apart by hatching (in id order)."""
    seen: Counter[str] = Counter()
    styles = {}
    for slug in sorted(campaigns):
        colour = campaign_colour(slug)
        styles[slug] = (colour, HATCHES[seen[colour] % len(HATCHES)])
        seen[colour] += 1
    return styles


def _variant_style(colour: str, index: int) -> tuple[str, str, str]:
    """Face, edge and hatch of the INDEXth variant: the first in the campaign's colour,
    the others lighter and hatched in it."""
    if index == 0:
        return colour, "white", ""
    red, green, blue = (int(colour[n:n + 2], 16) for n in (1, 3, 5))
    light = "#" + "".join(f"{round(c + (255 - c) * 0.55):02x}" for c in (red, green, blue))
    return light, colour, HATCHES[1 + (index - 1) % (len(HATCHES) - 1)]


def _text(text: str) -> str:
    """TEXT as matplotlib shows it literally: a `$` would start mathematics."""
    return text.replace("$", r"\$")


def _figure() -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(WIDTH, HEIGHT), dpi=DPI, layout="constrained")


def _tidy(axes: Axes) -> None:
    axes.spines[["top", "right"]].set_visible(False)
    axes.grid(axis="y", color="#dddddd", linewidth=0.6)
    axes.set_axisbelow(True)


@dataclass(frozen=True)
class Key:
    """One entry of a legend: its fill, the colour of its hatching ("" for none), text."""

    fill: str
    stripes: str
    text: str


def _variant_key(colour: str, index: int, text: str) -> Key:
    face, edge, hatch = _variant_style(colour, index)
    return Key(face, edge if hatch else "", text)


def _swatch(key: Key) -> str:
    """A legend swatch's CSS: its fill, and stripes where the chart's bars are hatched."""
    style = f"background:{key.fill}"
    if key.stripes:
        style += (";background-image:repeating-linear-gradient(135deg,transparent 0 3px,"
                  f"{key.stripes} 3px 4.5px)")
    return style


@dataclass(frozen=True)
class Page:
    """What the HTML page says besides the chart: legend, numbers and notes."""

    title: str
    legend: list[Key]
    header: list[str]
    rows: list[list[str]]
    notes: list[str]
    ratings: Mapping[int, int] | None = None  # score -> how many, as a second table
    text_columns: int = 1  # the table's first columns hold text (aligned left)


def _write(figure: Figure, path: Path, page: Page) -> None:
    """FIGURE to PATH by its suffix: PNG, SVG, or the SVG in an HTML page about PAGE."""
    suffix = path.suffix.lower()
    if suffix == ".png":
        figure.savefig(path, format="png", dpi=DPI)
        return
    drawn = _svg(figure)
    if suffix == ".svg":
        path.write_text(drawn, encoding="utf-8")
        return
    path.write_text(_html(drawn, page), encoding="utf-8")


def _svg(figure: Figure) -> str:
    """The figure as SVG with its text as text (searchable, read out by screen readers)
    and without a date or random ids, so one chart is the same file every time."""
    from matplotlib import rc_context

    out = io.StringIO()
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": "mailer"}):
        figure.savefig(out, format="svg", metadata={"Date": None})
    return out.getvalue()


def _html(drawn: str, page: Page) -> str:
    """A self-contained page: heading, the chart, its legend as text, the numbers."""
    title = html.escape(page.title)
    chart = drawn[drawn.index("<svg"):].replace(
        "<svg ", f'<svg role="img" aria-label="{title}" ', 1)
    legend = "".join(f'<li><span class="swatch" style="{_swatch(key)}"></span>'
                     f"{html.escape(key.text)}</li>" for key in page.legend)
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in page.header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row)
                   + "</tr>" for row in page.rows)
    parts = [f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
             f"<title>{title}</title><style>{STYLE}</style></head><body>",
             f"<h1>{title}</h1>", f"<figure>{chart}</figure>"]
    if legend:
        parts.append(f'<h2>Legend</h2><ul class="legend">{legend}</ul>')
    parts.append(f'<h2>The numbers</h2><table class="text-{page.text_columns}">'
                 f"<thead><tr>{head}</tr></thead>"
                 f"<tbody>{body}</tbody></table>")
    if page.ratings is not None:
        parts.append("<h2>Ratings</h2><table><thead><tr><th>score</th><th>ratings</th>"
                     "</tr></thead><tbody>" + "".join(
                         f"<tr><td>{score}</td><td>{n}</td></tr>"
                         for score, n in page.ratings.items()) + "</tbody></table>")
    parts.extend(f"<p>{html.escape(note)}</p>" for note in page.notes)
    parts.append("</body></html>\n")
    return "".join(parts)


STYLE = ("body{font-family:sans-serif;margin:1.5rem;max-width:75rem;color:#222}"
         "figure{margin:0}figure svg{max-width:100%;height:auto}"
         ".legend{list-style:none;padding:0}.legend li{margin:.2rem 0}"
         ".swatch{display:inline-block;width:.9em;height:.9em;margin-right:.5em;"
         "vertical-align:-.1em;border:1px solid #999}"
         "table{border-collapse:collapse;margin:.5rem 0}"
         "th,td{border:1px solid #ccc;padding:.2rem .6rem;text-align:right}"
         "th:first-child,td:first-child,.text-2 :is(th,td):nth-child(2){text-align:left}")


def review_chart(campaigns: Sequence[Mapping[str, object]],
                 surveys: Sequence[Mapping[str, object]]) -> str:
    """The monthly review's chart as SVG: each campaign's open, click and unsubscribe rates
    (%), and each survey's CSI this month beside the month before."""
    figure = _figure()
    rates, scores = figure.subplots(1, 2, width_ratios=(2, 1))
    names = [str(c["campaign"]) for c in campaigns]
    width = 0.8 / len(METRICS)
    for index, (_, label) in enumerate(METRICS):
        key = label.replace(" ", "_")
        values = [float(str(c[key])) if c[key] is not None else 0.0 for c in campaigns]
        rates.bar([n + (index - 1) * width for n in range(len(names))], values, width,
                  label=label, color=CAMPAIGN_COLOURS[index])
    rates.set_xticks(range(len(names)), [_text(name) for name in names])
    rates.set_ylabel("% of the mails sent in the month")
    rates.set_title("Campaigns")
    rates.legend(frameon=False)
    _tidy(rates)
    labels = [str(s["survey"]) for s in surveys]
    for index, (key, label) in enumerate((("csi_previous", "CSI, month before"),
                                          ("csi", "CSI, this month"))):
        values = [float(str(s[key])) if s[key] is not None else 0.0 for s in surveys]
        scores.bar([n + (index - 0.5) * 0.4 for n in range(len(labels))], values, 0.4,
                   label=label, color=CAMPAIGN_COLOURS[9 if index == 0 else 0])
    scores.set_xticks(range(len(labels)), [_text(label) for label in labels])
    scores.set_ylim(0, 100)
    scores.set_title("Satisfaction (CSI, 0–100)")
    scores.legend(frameon=False)
    _tidy(scores)
    return _svg(figure)


def inline_svg(draw: Callable[[Path], None], label: str) -> str:
    """The chart DRAW writes (report_chart, forecast_chart with their data bound) as an
    `<svg>` element to put in a page (the console), labelled LABEL for screen readers."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="mailer-chart-") as folder:
        path = Path(folder) / "chart.svg"
        draw(path)
        drawn = path.read_text(encoding="utf-8")
    return drawn[drawn.index("<svg"):].replace(
        "<svg ", f'<svg role="img" aria-label="{html.escape(label)}" ', 1)
