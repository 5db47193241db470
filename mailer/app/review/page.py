"""The monthly review as one HTML page (written by `--out`, and the notice's body) and as
plain text (the notice's text part): the chart (mailer.app.charts), then every figure in
tables, so a mail client that drops SVG still shows the numbers."""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any

from mailer.app.charts import STYLE, review_chart


def _cell(value: object) -> str:
    return "—" if value is None else escape(str(value))


def _table(header: list[str], rows: list[list[object]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def title(review: Mapping[str, Any], store: str) -> str:
    return f"{store}: the review of {review['month']}"


def review_html(review: Mapping[str, Any], *, store: str, currency: str,
                by_campaign: Mapping[str, tuple[int, float | int]]) -> str:
    """The page: heading, chart, campaigns, attributed orders, surveys, stages, comments."""
    heading = escape(title(review, store))
    chart = review_chart(review["campaigns"], review["surveys"])
    chart = chart[chart.index("<svg"):].replace(
        "<svg ", f'<svg role="img" aria-label="{heading}" ', 1)
    stages = review["stages"]
    attributed = review["attributed"]
    parts = [
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{heading}'
        f"</title><style>{STYLE}</style></head><body><h1>{heading}</h1>",
        f"<figure>{chart}</figure>",
        "<h2>Campaigns</h2>",
        _table(["campaign", "sent", "open rate %", "click rate %", "unsubscribe rate %"],
               [[c["campaign"], c["sent"], c["open_rate"], c["click_rate"],
                 c["unsubscribe_rate"]] for c in review["campaigns"]]),
        f"<h2>Attributed orders</h2><p>{attributed['orders']} paid orders, "
        f"{escape(str(attributed['revenue']))} {escape(currency)}, placed within 7 days "
        "after a click in a mail (credited to the last click: attributed, not caused).</p>",
        _table(["campaign", "orders", f"revenue ({currency})"],
               [[campaign, n, revenue] for campaign, (n, revenue) in by_campaign.items()]),
        "<h2>Surveys</h2>",
        _table(["survey", "responses", "CSI", "CSI, month before", "NPS", "NPS, month before"],
               [[s["survey"], s["responses"], s["csi"], s["csi_previous"], s["nps"],
                 s["nps_previous"]] for s in review["surveys"]]),
        "<h2>Stages</h2>",
        _table(["stage", "customers at the end"],
               [[stage, n] for stage, n in stages["counts"].items()]),
        _table(["from", "to", "customers"],
               [[m["from"], m["to"], m["customers"]] for m in stages["moves"]]),
        f"<h2>Also</h2><p>{review['alerts']} low-score alerts, {review['bounces']} bounces, "
        f"{review['complaints']} complaints.</p>",
        "<h2>Comments</h2>",
        "".join(f"<blockquote><p>{escape(c['text'])}</p><footer>{escape(c['at'])}, "
                f"{escape(str(c['customer']))}, {escape(c['survey'])}</footer></blockquote>"
                for c in review["comments"]) or "<p>No comments this month.</p>",
        "</body></html>\n",
    ]
    return "".join(parts)


def review_text(review: Mapping[str, Any], *, store: str, currency: str) -> str:
    """The plain-text part: the same figures, line by line."""
    lines = [title(review, store), ""]
    lines += [f"{c['campaign']}: {c['sent']} sent, opened {_plain(c['open_rate'])} %, "
              f"clicked {_plain(c['click_rate'])} %, unsubscribed "
              f"{_plain(c['unsubscribe_rate'])} %" for c in review["campaigns"]]
    attributed = review["attributed"]
    lines += ["", f"Attributed: {attributed['orders']} orders, {attributed['revenue']} "
              f"{currency}", ""]
    lines += [f"{s['survey']}: {s['responses']} responses, CSI {_plain(s['csi'])} "
              f"(before {_plain(s['csi_previous'])}), NPS {_plain(s['nps'])} "
              f"(before {_plain(s['nps_previous'])})" for s in review["surveys"]]
    lines += ["", f"{review['alerts']} alerts, {review['bounces']} bounces, "
              f"{review['complaints']} complaints", ""]
    lines += [f"- {c['at']} {c['customer']} ({c['survey']}): {' '.join(c['text'].split())}"
              for c in review["comments"]]
    return "\n".join(lines) + "\n"


def _plain(value: object) -> str:
    return "—" if value is None else str(value)
