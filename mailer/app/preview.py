"""`mailer preview`: real mails for real customers, rendered and never sent.

Samples are customers the plan at now would mail (mailer.planning.mailable), spread
over the campaign's intro segments and subject variants, so a marketer sees each intro
and each subject at least once when there are such customers for them; when the plan
would mail nobody, segment members stand in, each with the reason it would not mail
them. Links are signed with the fixed preview key. A test send (`send --test-to`)
renders one of these mails for another address.
"""

from __future__ import annotations

import dataclasses
import html
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from mailer.config.campaign import Campaign
from mailer.config.conditions import SegmentSpec
from mailer.config.settings import Settings
from mailer.core.claims import Claims
from mailer.core.errors import NotFoundError
from mailer.mail.context import build_context, load_customers, load_stats
from mailer.mail.links import PREVIEW_KEY
from mailer.mail.message import Mail, build, message_id
from mailer.mail.version import Composed, Version, compose, pick_intro
from mailer.planning.mailable import Verdict, first_mailable, verdicts
from mailer.segments.compiler import Scope
from mailer.segments.runner import member_ids, memberships
from mailer.store.customers import Profile, id_of_address
from mailer.store.db import Engine
from mailer.store.events import person as linked_person


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
    mailable: bool = True  # whether the plan at now would mail this customer
    reason: str | None = None  # why not (the planner's reason, not_in_segment, not_due)
    send_after: datetime | None = None  # mailable: when the mail would leave


@dataclass(frozen=True)
class Chosen:
    """The customers to preview and what the plan at now would do with each."""

    ids: list[int]
    verdicts: dict[int, Verdict]
    stand_ins: bool = False  # the plan would mail nobody: segment members instead


def customer_id(engine: Engine, wanted: str) -> int:
    """The id of the customer with this store id or address (`--customer ID|EMAIL`)."""
    text = wanted.strip()
    found = id_of_address(engine, text) if "@" in text else None
    if found is None:
        linked = linked_person(engine, Claims("preview", text, "", ""))
        found = linked.id if linked is not None else None
    if found is None:
        what = "the address" if "@" in text else "the id or address"
        raise NotFoundError(f"no customer with {what} {wanted}")
    return found


def choose_mailable(engine: Engine, specs: dict[str, SegmentSpec], slug: str,
                    campaign: Campaign, scope: Scope, settings: Settings, *, count: int,
                    customer: str | None) -> Chosen:
    """The customer asked for, or COUNT customers the plan at now would mail, spread over
    the intros; when it would mail nobody, COUNT segment members (as `choose`)."""
    def judged(ids: list[int]) -> dict[int, Verdict]:
        return verdicts(engine, specs, slug, campaign, scope=scope, settings=settings, ids=ids)

    if customer is not None:
        chosen = [customer_id(engine, customer)]
        return Chosen(chosen, judged(chosen))
    mailed = first_mailable(engine, specs, slug, campaign, scope=scope, settings=settings,
                            limit=count * 4)
    intros = [name for name in campaign.intros if name != "default"]
    members = [member_ids(engine, specs, name, scope, limit=count * 4, within=campaign.segment)
               for name in intros]
    found = judged(sorted({i for pool in members for i in pool} - set(mailed)))
    found.update(mailed)
    pools = [[i for i in pool if found[i].mailable] for pool in members]
    pools.append(list(mailed))
    picked = _spread(pools, count)
    if picked:
        return Chosen(picked, {i: found[i] for i in picked})
    stand_ins = choose(engine, specs, campaign, scope, count=count, email=None)
    return Chosen(stand_ins, judged(stand_ins), stand_ins=bool(stand_ins))


def _spread(pools: list[list[int]], count: int) -> list[int]:
    """Up to COUNT ids, one from each pool in turn, none twice."""
    chosen: list[int] = []
    while len(chosen) < count and any(pools):
        for pool in pools:
            while pool and pool[0] in chosen:
                pool.pop(0)
            if pool and len(chosen) < count:
                chosen.append(pool.pop(0))
    return chosen


def choose(engine: Engine, specs: dict[str, SegmentSpec], campaign: Campaign, scope: Scope,
           *, count: int, email: str | None) -> list[int]:
    """Customer ids to preview: the one asked for, or COUNT spread over the intros."""
    if email is not None:
        found = id_of_address(engine, email.strip())
        if found is None:
            raise NotFoundError(f"no customer with the address {email}")
        return [found]
    intros = [name for name in campaign.intros if name != "default"]
    pools = [member_ids(engine, specs, name, scope, limit=count, within=campaign.segment)
             for name in intros]
    pools.append(member_ids(engine, specs, campaign.segment, scope, limit=count * 4))
    return _spread(pools, count)


def render_samples(engine: Engine, version: Version, specs: dict[str, SegmentSpec], *,
                   settings: Settings, scope: Scope, now: datetime, ids: list[int],
                   judged: dict[int, Verdict] | None = None) -> list[Sample]:
    """Render the mails these customers would get, as complete messages; JUDGED says
    which the plan at now would mail (and for which occurrence: a reminder has its own
    subject)."""
    groups = memberships(engine, specs, list(version.spec.intros), scope, ids)
    with engine.connect() as conn:
        people = load_customers(conn, ids)
        stats = load_stats(conn, ids, now=now, currency=settings.store.currency)
    domain = settings.sender.from_address.rsplit("@", 1)[1]
    samples = []
    for variant, customer_id in enumerate(ids):
        person = people[customer_id]
        verdict = (judged or {}).get(customer_id, Verdict(None))
        occurrence = verdict.occurrence if verdict.mailable else ""
        mail, eml = _message(person, stats.get(customer_id), version, settings=settings,
                             now=now, variant=variant, member_of=groups[customer_id],
                             occurrence=occurrence, recipient=None,
                             message=message_id(campaign=version.slug, occurrence="preview",
                                                customer=person.store_id, domain=domain))
        samples.append(Sample(person.store_id, person.email,
                              pick_intro(version, groups[customer_id]), mail.variant,
                              mail.subject, mail.html, mail.text, eml, verdict.mailable,
                              verdict.reason, verdict.send_after))
    return samples


TEST_PREFIX = "[TEST] "


@dataclass(frozen=True)
class AddressedMail:
    """A test send's message: one customer's mail, addressed to someone else."""

    customer: str  # the store id of the customer whose mail it is
    subject: str  # with TEST_PREFIX
    message_id: str
    eml: bytes


def render_test(engine: Engine, version: Version, specs: dict[str, SegmentSpec], *,
                settings: Settings, scope: Scope, now: datetime, customer_id: int,
                verdict: Verdict, to: str) -> AddressedMail:
    """The mail CUSTOMER_ID would get (its intro and first subject variant, the reminder's
    when a reminder is what the plan would send), for TO, the subject prefixed with
    `[TEST] `, links signed with the preview key and a fresh Message-ID."""
    from mailer.mail.message import new_message_id

    groups = memberships(engine, specs, list(version.spec.intros), scope, [customer_id])
    with engine.connect() as conn:
        person = load_customers(conn, [customer_id])[customer_id]
        stats = load_stats(conn, [customer_id], now=now, currency=settings.store.currency)
    # The mail goes to someone else: a friend signing up through it must not credit the
    # real customer, so the referral code is the preview's.
    person = dataclasses.replace(person, referral_code=None)
    mid = new_message_id(settings.sender.from_address.rsplit("@", 1)[1])
    mail, eml = _message(person, stats.get(customer_id), version, settings=settings, now=now,
                         variant=0, member_of=groups[customer_id],
                         occurrence=verdict.occurrence if verdict.mailable else "",
                         recipient=to, message=mid, prefix=TEST_PREFIX)
    return AddressedMail(person.store_id, TEST_PREFIX + mail.subject, mid, eml)


def _message(person: Profile, stats: dict[str, Any] | None, version: Version, *,
             settings: Settings, now: datetime, variant: int, member_of: set[str],
             occurrence: str, recipient: str | None, message: str,
             prefix: str = "") -> tuple[Composed, bytes]:
    """One customer's mail as a complete message, its links signed with the preview key
    and left untracked (a preview key's click or open would not be recorded anyway): to
    the customer, or to RECIPIENT (a test send), the subject after PREFIX."""
    context = build_context(person, stats, settings=settings, slug=version.slug,
                            campaign=version.spec, now=now, key=PREVIEW_KEY, message="preview",
                            survey=version.survey, occurrence=occurrence)
    mail = compose(version, context, variant=variant, member_of=member_of,
                   occurrence=occurrence)
    name = " ".join(p for p in (person.first_name, person.last_name) if p)
    eml = build(Mail(
        sender=settings.sender.from_, recipient_name="" if recipient else name,
        recipient_email=recipient or person.email, subject=prefix + mail.subject,
        html=mail.html, text=mail.text, date=now, message_id=message,
        unsubscribe_url=context["links"]["unsubscribe"],
        unsubscribe_mailto=settings.sender.unsubscribe_address,
        reply_to=settings.sender.reply_to))
    return mail, eml


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
                    f"<td>{'yes' if sample.mailable else html.escape(f'no: {sample.reason}')}"
                    "</td></tr>")
    index = out / "index.html"
    index.write_text(
        "<!doctype html><meta charset=\"utf-8\"><title>Preview of "
        f"{html.escape(slug)}</title><style>body{{font-family:sans-serif}}"
        "td,th{padding:4px 8px;text-align:left}</style>"
        f"<h1>Preview of {html.escape(slug)}</h1><table><tr><th>customer</th><th>email</th>"
        "<th>intro</th><th>variant</th><th>subject</th><th>files</th><th>mailable</th></tr>"
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
                                    now=now, key=PREVIEW_KEY, message="plan",
                                    occurrence=occurrence)
            found[(customer_id, occurrence)] = compile_subject_only(version, context, variant,
                                                                    occurrence)
    return found
