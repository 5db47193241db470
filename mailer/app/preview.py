"""`mailer preview`: real mails for real customers, rendered and never sent.

Samples are spread over the campaign's intro segments and subject variants, so
a marketer sees each intro and each subject at least once when there are
members for them. Links are signed with the fixed preview key.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from mailer.config.campaign import Campaign
from mailer.config.conditions import SegmentSpec
from mailer.config.settings import Settings
from mailer.core.errors import NotFoundError
from mailer.mail.context import build_context, load_customers, load_stats
from mailer.mail.links import PREVIEW_KEY
from mailer.mail.message import Mail, build, message_id
from mailer.mail.version import Version, compose, pick_intro
from mailer.segments.compiler import Scope
from mailer.segments.runner import member_ids, memberships
from mailer.store.customers import id_of_address
from mailer.store.db import Engine


@dataclass(frozen=True)
class Sample:
    customer: str  # store id
    email: str
    intro: str | None
    variant: int
    subject: str
    html: str
    text: str
    eml: bytes


def choose(engine: Engine, specs: dict[str, SegmentSpec], campaign: Campaign, scope: Scope,
           *, count: int, email: str | None) -> list[int]:
    """Customer ids to preview: the one asked for, or COUNT spread over the intros."""
    if email is not None:
        found = id_of_address(engine, email.strip())
        if found is None:
            raise NotFoundError(f"no customer with the address {email}")
        return [found]
    chosen: list[int] = []
    intros = [name for name in campaign.intros if name != "default"]
    pools = [member_ids(engine, specs, name, scope, limit=count, within=campaign.segment)
             for name in intros]
    pools.append(member_ids(engine, specs, campaign.segment, scope, limit=count * 4))
    while len(chosen) < count and any(pools):
        for pool in pools:
            while pool and pool[0] in chosen:
                pool.pop(0)
            if pool and len(chosen) < count:
                chosen.append(pool.pop(0))
    return chosen


def render_samples(engine: Engine, version: Version, specs: dict[str, SegmentSpec], *,
                   settings: Settings, scope: Scope, now: datetime, ids: list[int]) -> list[Sample]:
    """Render the mails these customers would get, as complete messages."""
    groups = memberships(engine, specs, list(version.spec.intros), scope, ids)
    with engine.connect() as conn:
        people = load_customers(conn, ids)
        stats = load_stats(conn, ids, now=now, currency=settings.store.currency)
    domain = settings.sender.from_address.rsplit("@", 1)[1]
    samples = []
    for variant, customer_id in enumerate(ids):
        person = people[customer_id]
        context = build_context(person, stats.get(customer_id), settings=settings,
                                slug=version.slug, campaign=version.spec, now=now,
                                key=PREVIEW_KEY, message="preview")
        mail = compose(version, context, variant=variant, member_of=groups[customer_id])
        name = " ".join(p for p in (person.first_name, person.last_name) if p)
        eml = build(Mail(
            sender=settings.sender.from_, recipient_name=name, recipient_email=person.email,
            subject=mail.subject, html=mail.html, text=mail.text, date=now,
            message_id=message_id(campaign=version.slug, occurrence="preview",
                                  customer=person.store_id, domain=domain),
            unsubscribe_url=context["links"]["unsubscribe"],
            unsubscribe_mailto=settings.sender.unsubscribe_address,
            reply_to=settings.sender.reply_to))
        samples.append(Sample(person.store_id, person.email,
                              pick_intro(version, groups[customer_id]), mail.variant,
                              mail.subject, mail.html, mail.text, eml))
    return samples


def write_samples(samples: list[Sample], out: Path, slug: str) -> Path:
    """One .eml, .html and .txt per sample plus index.html; returns the index."""
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for number, sample in enumerate(samples, 1):
        stem = f"{slug}-{number:02d}-{sample.customer}"
        (out / f"{stem}.eml").write_bytes(sample.eml)
        (out / f"{stem}.html").write_text(sample.html, encoding="utf-8")
        (out / f"{stem}.txt").write_text(sample.text, encoding="utf-8")
        rows.append(f"<tr><td>{html.escape(sample.customer)}</td>"
                    f"<td>{html.escape(sample.email)}</td>"
                    f"<td>{html.escape(sample.intro or '')}</td><td>{sample.variant + 1}</td>"
                    f"<td><a href=\"{stem}.html\">{html.escape(sample.subject)}</a></td>"
                    f"<td><a href=\"{stem}.txt\">text</a> · <a href=\"{stem}.eml\">eml</a></td>"
                    "</tr>")
    index = out / "index.html"
    index.write_text(
        "<!doctype html><meta charset=\"utf-8\"><title>Preview of "
        f"{html.escape(slug)}</title><style>body{{font-family:sans-serif}}"
        "td,th{padding:4px 8px;text-align:left}</style>"
        f"<h1>Preview of {html.escape(slug)}</h1><table><tr><th>customer</th><th>email</th>"
        "<th>intro</th><th>variant</th><th>subject</th><th>files</th></tr>"
        + "".join(rows) + "</table>\n", encoding="utf-8")
    return index


def subjects(engine: Engine, version: Version, *, settings: Settings, now: datetime,
             recipients: list[tuple[int, int, str]]) -> dict[tuple[int, str], str]:
    """The subject each (customer id, variant, occurrence) would get, rendered in batches;
    keyed by (customer id, occurrence)."""
    from mailer.mail.version import compile_subject_only

    found: dict[tuple[int, str], str] = {}
    for start in range(0, len(recipients), 1000):
        batch = recipients[start:start + 1000]
        ids = [customer_id for customer_id, _, _ in batch]
        with engine.connect() as conn:
            people = load_customers(conn, ids)
            stats = load_stats(conn, ids, now=now, currency=settings.store.currency)
        for customer_id, variant, occurrence in batch:
            context = build_context(people[customer_id], stats.get(customer_id),
                                    settings=settings, slug=version.slug, campaign=version.spec,
                                    now=now, key=PREVIEW_KEY, message="plan")
            found[(customer_id, occurrence)] = compile_subject_only(version, context, variant,
                                                                    occurrence)
    return found
