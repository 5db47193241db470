"""`mailer send`: plan what is due at now, then deliver what is due now (DESIGN §5).

The plan is written first (ledger rows with their campaign version), then the
sender delivers the campaigns' due rows until none is left due; rows held by
quiet hours or waiting for a retry are reported as `waiting`, never waited for.
`--dry-run` plans without writing and renders every planned mail into .eml
files through the folder transport. `--test-to` (send_test) plans nothing: it renders
one customer's mail as the preview does and sends it to another address.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from mailer.config.campaign import Campaign
from mailer.config.conditions import SegmentSpec
from mailer.config.settings import Settings
from mailer.core.clock import Clock
from mailer.core.errors import DeliveryError, EnvironmentFailure, NotFoundError, UserError
from mailer.core.states import OUTCOMES
from mailer.delivery.confirmations import queue_confirmations
from mailer.delivery.notices import NoticeSender
from mailer.delivery.outcomes import Outcome
from mailer.delivery.processes import RenderPool, process_count
from mailer.delivery.ratelimit import rate_limit
from mailer.delivery.transport import FolderTransport, Transport
from mailer.delivery.worker import Renderer, SendingLoop
from mailer.mail.dkim import Sign
from mailer.mail.version import compile_version, definition, first_intro
from mailer.planning.planner import PlanResult, plan_due
from mailer.segments.runner import memberships, scope_for
from mailer.store.db import Engine
from mailer.store.ledger import (
    Row,
    expire,
    new_owner,
    recover,
    relax_commits,
    sending_lock,
    waiting,
)
from mailer.store.locks import planning

STATES = OUTCOMES


@dataclass(frozen=True)
class Summary:
    """What `send` did for one campaign (the §5 JSON shape, plus `expired`)."""

    campaign: str
    planned: int
    outcomes: dict[str, int]
    waiting: int
    excluded: dict[str, int]

    def as_json(self) -> dict[str, Any]:
        """This campaign's `send --json` document: every outcome, zeros included."""
        return {"planned": self.planned, **{s: self.outcomes.get(s, 0) for s in STATES},
                "waiting": self.waiting, "excluded": dict(sorted(self.excluded.items()))}


@dataclass(frozen=True)
class SendResult:
    """What one `send` or `run --once` did, campaign by campaign (in SUMMARIES' order)."""

    summaries: tuple[Summary, ...]
    named: tuple[str, ...] = ()  # the campaigns the command named (`run` names none)

    def as_json(self) -> dict[str, Any]:
        """The `--json` document: the one campaign named, alone; else every campaign's
        document under "campaigns", by slug."""
        documents = {s.campaign: s.as_json() for s in self.summaries}
        if len(self.named) == 1:
            return documents[self.named[0]]
        return {"campaigns": documents}


@dataclass(frozen=True)
class Worker:
    """A sending process's loop, opened by open_worker."""

    delivery: SendingLoop
    recovered: int  # rows dead senders left `sending`, made `unknown` at start


@contextmanager
def open_worker(engine: Engine, transport: Transport, settings: Settings, *, owner: str,
                clock: Clock, key: str, sign: Sign | None,
                campaigns: Sequence[str] | None = None,
                on_outcome: Callable[[str, str], None] | None = None) -> Iterator[Worker]:
    """Hold the right to send for OWNER (a second SQLite sender: LockHeld, exit 3), with
    commits relaxed and dead senders' rows recovered, and yield the send loop as
    mailer.yaml configures it: its renderer with KEY and the DKIM signer SIGN, its
    concurrency and rate limit, and its notices (alerts, the review). `send`, `run` and
    `worker` all send through here."""
    with sending_lock(engine, owner):
        relax_commits(engine)
        recovered = recover(engine, owner, clock.now())
        limit = rate_limit(engine, settings.delivery.rate_per_second)
        renderer = Renderer(engine, key, sign)
        processes = process_count(settings.delivery.processes)
        # forked here, under the lock and before any thread or event loop (processes.py)
        pool = RenderPool(renderer, processes - 1) if processes > 1 else None
        try:
            delivery = SendingLoop(engine, transport, renderer, owner, clock,
                                   concurrency=settings.delivery.concurrency, limit=limit,
                                   campaigns=campaigns, on_outcome=on_outcome,
                                   notices=NoticeSender(engine, transport, settings, owner,
                                                        clock, limit, sign),
                                   pool=pool)
            yield Worker(delivery, recovered)
        finally:
            if pool is not None:
                pool.close()


def compile_versions(root: Path, campaigns: dict[str, Campaign]) -> dict[str, dict[str, Any]]:
    """Each campaign's definition as the ledger stores it (templates compiled once)."""
    return {slug: definition(compile_version(slug, spec, root / "templates"), root)
            for slug, spec in campaigns.items()}


def plan_now(engine: Engine, specs: dict[str, SegmentSpec], campaigns: dict[str, Campaign],
             *, settings: Settings, versions: dict[str, dict[str, Any]], now: datetime,
             stop: Callable[[], bool] | None = None,
             expired: Counter[str] | None = None) -> list[PlanResult]:
    """One planning run at NOW under the planning lock (rows written), then the rows
    whose expiry has passed become `expired` (counted by campaign into EXPIRED). `send`,
    `run --once` and every daemon sweep plan through here."""
    with planning(engine):
        plans = plan_due(engine, specs, campaigns, scope=scope_for(settings, now, engine),
                         settings=settings, versions=versions, keep=False, stop=stop)
    found = expire(engine, now, None)
    if expired is not None:
        expired.update(found)
    return plans


def send(engine: Engine, root: Path, specs: dict[str, SegmentSpec],
         campaigns: dict[str, Campaign], *, settings: Settings, clock: Clock,
         transport: Transport, key: str, sign: Sign | None = None,
         probe: Callable[[], Any] | None = None, every_campaign: bool = False,
         versions: dict[str, dict[str, Any]] | None = None,
         on_outcome: Callable[[str, str], None] | None = None,
         on_planned: Callable[[int], None] | None = None) -> list[Summary]:
    """Plan CAMPAIGNS at the clock's now (priority order, one planning run), then deliver
    their due rows — or, with EVERY_CAMPAIGN (`run --once`), every due row of the
    ledger, retries of campaigns no longer in the workspace included. PROBE opens the
    first connection: a server that refuses it stops the send before any row is
    touched (exit 3). VERSIONS: the campaigns already compiled (else compiled here)."""
    versions = versions if versions is not None else compile_versions(root, campaigns)
    owner = new_owner()
    slugs = sorted(campaigns)
    chosen = None if every_campaign else slugs
    expired: Counter[str] = Counter()  # rows this send found past their expiry
    with open_worker(engine, transport, settings, owner=owner, clock=clock, key=key,
                     sign=sign, campaigns=chosen, on_outcome=on_outcome) as worker:
        plans = plan_now(engine, specs, campaigns, settings=settings, versions=versions,
                         now=clock.now(), expired=expired)
        # double opt-in's confirmations go out with this send's notices
        queue_confirmations(engine, settings, key, clock.now())
        if on_planned is not None:
            on_planned(sum(waiting(engine, slug) for slug in slugs))
        tally = asyncio.run(_deliver(worker.delivery, transport, probe))
        expired.update(expire(engine, clock.now(), chosen))
    # The summary counts every row this send made `expired`: the delivery counted those
    # whose expiry came while they waited in memory; these are the ones found in the
    # ledger before and after it. Planning expires every campaign's rows; `send
    # CAMPAIGN` reports its own.
    for campaign, n in expired.items():
        if chosen is None or campaign in chosen:
            tally[(campaign, "expired")] += n
    summaries = [_summary(engine, plan, tally)
                 for plan in sorted(plans, key=lambda p: p.campaign)]
    # Rows of campaigns gone from the workspace still finish (from their version).
    for gone in sorted({campaign for campaign, _ in tally} - set(slugs)):
        summaries.append(_summary(engine, PlanResult(gone, clock.now()), tally))
    return summaries


async def _deliver(delivery: SendingLoop, transport: Transport,
                   probe: Callable[[], Any] | None) -> Counter[tuple[str, str]]:
    try:
        if probe is not None and delivery.has_due():
            try:
                await probe()
            except Exception as err:
                raise EnvironmentFailure(
                    f"the SMTP server refused at start: {' '.join(str(err).split())}"
                ) from None
        return await delivery.run(asyncio.Event(), until_idle=True)
    finally:
        await transport.close()


def _summary(engine: Engine, plan: PlanResult, tally: Counter[tuple[str, str]]) -> Summary:
    outcomes: dict[str, int] = {state: tally[(plan.campaign, state)] for state in STATES}
    return Summary(plan.campaign, plan.planned_count, outcomes, waiting(engine, plan.campaign),
                   plan.counts())


def dry_run(engine: Engine, root: Path, specs: dict[str, SegmentSpec],
            campaigns: dict[str, Campaign], *, settings: Settings, now: datetime, key: str,
            out: Path, sign: Sign | None = None) -> list[Summary]:
    """Plan without writing and render each planned mail into OUT as an .eml file."""
    scope = scope_for(settings, now, engine)
    plans = plan_due(engine, specs, campaigns, scope=scope, settings=settings)
    summaries = []
    for plan in sorted(plans, key=lambda p: p.campaign):
        spec = campaigns[plan.campaign]
        version = compile_version(plan.campaign, spec, root / "templates")
        renderer = Renderer(engine, key, sign)
        renderer.preload(-1, version, settings)
        transport = FolderTransport(out / plan.campaign)
        tally: Counter[str] = Counter()
        for start in range(0, len(plan.planned), 500):
            batch = plan.planned[start:start + 500]
            groups = memberships(engine, specs, list(spec.intros), scope,
                                 [p.customer_id for p in batch])
            rows = [Row(id=0, campaign=plan.campaign, campaign_version_id=-1,
                        occurrence=p.occurrence, customer_id=p.customer_id, email=p.email,
                        subject_variant=p.variant,
                        intro=first_intro(spec.intros, groups.get(p.customer_id, set())),
                        attempts=0, send_after=p.send_after, expires_at=p.expires)
                    for p in batch]
            ready, failed = renderer.render(rows, now)
            tally["failed"] += len(failed)
            for mail in ready:
                transport.write(mail.message)
                tally["sent"] += 1
        summaries.append(Summary(plan.campaign, plan.planned_count, dict(tally), 0,
                                 plan.counts()))
    return summaries


@dataclass(frozen=True)
class SentTest:
    """What `send CAMPAIGN --test-to ADDRESS` sent."""

    campaign: str
    to: str
    customer: str  # the store id of the customer whose mail it is
    subject: str
    message_id: str
    reason: str | None  # why the plan at now would not mail that customer (None: it would)

    def as_json(self) -> dict[str, Any]:
        return {"campaign": self.campaign, "to": self.to, "customer": self.customer,
                "subject": self.subject, "message_id": self.message_id}


def send_test(engine: Engine, root: Path, specs: dict[str, SegmentSpec], slug: str,
              campaign: Campaign, *, settings: Settings, now: datetime, transport: Transport,
              to: str, customer: str | None, sign: Sign | None = None) -> SentTest:
    """Render CUSTOMER's mail of the campaign (else the first preview sample's) for TO, the
    subject prefixed `[TEST] ` and its links signed with the preview key, and send it
    through TRANSPORT on one connection. Nothing is planned, no ledger row, coupon or
    event is written, no cap counts it. A bad address: exit 1; a 5.1.x refusal of it:
    exit 1; any other refusal or a server that cannot be reached: exit 3."""
    from mailer.app.preview import choose_mailable, render_test
    from mailer.core.addresses import parse_address

    address = parse_address(to).email  # exit 1 with email-validator's reason
    version = compile_version(slug, campaign, root / "templates")
    scope = scope_for(settings, now, engine)
    chosen = choose_mailable(engine, specs, slug, version.spec, scope, settings, count=1,
                             customer=customer)
    if not chosen.ids:
        raise NotFoundError(f"{slug} has no customer whose mail could be sent: its segment "
                            f"{campaign.segment} is empty (name one with --customer)")
    customer_id = chosen.ids[0]
    verdict = chosen.verdicts[customer_id]
    mail = render_test(engine, version, specs, settings=settings, scope=scope, now=now,
                       customer_id=customer_id, verdict=verdict, to=address)
    message = sign(mail.eml) if sign is not None else mail.eml
    outcome = asyncio.run(_send_once(transport, settings.sender.from_address, address,
                                     message))
    if outcome.kind == "sent":
        return SentTest(slug, address, mail.customer, mail.subject, mail.message_id,
                        verdict.reason)
    if outcome.kind == "permanent" and outcome.suppress:
        raise UserError(f"the SMTP server refused {address}: {outcome.reply}")
    if outcome.kind == "unknown":
        raise DeliveryError(f"the test mail may or may not have arrived: {outcome.reply}")
    raise DeliveryError(f"the SMTP server did not take the test mail: {outcome.reply}")


async def _send_once(transport: Transport, sender: str, to: str, message: bytes) -> Outcome:
    try:
        return await transport.send(sender, to, message)
    finally:
        await transport.close()
