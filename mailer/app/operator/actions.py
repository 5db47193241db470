"""The operator actions themselves; the package's docstring says what they share."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from mailer.core.addresses import has_control_character
from mailer.core.clock import iso_z
from mailer.core.errors import NotFoundError, UserError
from mailer.core.suggest import did_you_mean
from mailer.delivery.outcomes import BAD_MAILBOX, retryable
from mailer.store import ledger
from mailer.store.db import Connection, Engine
from mailer.store.operator import audit, pauses

MAX_ACTOR = 255  # operator_audit.actor
MAX_REASON = 500  # characters of a reason typed in
VIAS = ("console", "cli")


def _actor(actor: str, via: str) -> str:
    cleaned = actor.strip()
    if not cleaned or len(cleaned) > MAX_ACTOR or has_control_character(cleaned):
        raise UserError(f"an operator's name is 1 to {MAX_ACTOR} printable characters, "
                        f"got {actor[:40]!r}")
    if via not in VIAS:
        raise ValueError(f"via is one of {VIAS}, got {via!r}")
    return cleaned


def clean_reason(reason: str | None, *, required: bool) -> str | None:
    """A reason as typed, trimmed; None when none was given and none is REQUIRED. Refused
    (exit 1): empty when required, over MAX_REASON characters, control characters other
    than line breaks."""
    text = (reason or "").strip()
    if not text:
        if required:
            raise UserError("give a reason: it is kept with the change and its audit row")
        return None
    if len(text) > MAX_REASON or has_control_character(text.replace("\n", " ")
                                                       .replace("\r", " ")):
        raise UserError(f"a reason is at most {MAX_REASON} printable characters")
    return text


# --- campaigns: pause, resume, retry ---------------------------------------------------------


def campaign_files(root: Path) -> set[str]:
    """The campaign ids of the workspace's files, drafts included."""
    from mailer.app.campaigns import campaign_files as files

    return set(files(root))


def check_campaign(conn: Connection, root: Path, campaign: str) -> None:
    """Refuse a campaign that is neither a file of the workspace nor in the ledger (a
    campaign whose file is gone may still have rows): NotFoundError, "did you mean"."""
    files = campaign_files(root)
    if campaign in files or campaign in ledger_campaigns(conn):
        return
    raise NotFoundError(f"unknown campaign {campaign!r}{did_you_mean(campaign, sorted(files))}")


def ledger_campaigns(conn: Connection) -> set[str]:
    from mailer.store.versions import versioned_campaigns

    return versioned_campaigns(conn)


@dataclass(frozen=True)
class Paused:
    """What pause_campaign found or did."""

    campaign: str
    already: bool  # it was paused before: the first pause is kept, no audit row
    pause: pauses.Pause

    def as_json(self) -> dict[str, Any]:
        return {"campaign": self.campaign, "paused": True, "already": self.already,
                "paused_at": iso_z(self.pause.at), "paused_by": self.pause.by,
                "reason": self.pause.reason}


def pause_campaign(engine: Engine, *, actor: str, campaign: str, root: Path, now: datetime,
                   reason: str | None = None, via: str = "console") -> Paused:
    """Pause CAMPAIGN: from the commit on, the planner excludes its candidates
    (`paused_campaign`) and no sender leases or starts its rows; queued and deferred rows
    stay as they are, with their expiry. Pausing a paused campaign changes nothing."""
    who = _actor(actor, via)
    why = clean_reason(reason, required=False)
    with engine.begin() as conn:
        check_campaign(conn, root, campaign)
        if not pauses.pause(conn, campaign, at=now, by=who, reason=why):
            found = pauses.pause_of(conn, campaign)
            assert found is not None
            return Paused(campaign, True, found)
        audit.record(conn, at=now, actor=who, via=via, action=audit.PAUSE_CAMPAIGN,
                     target=campaign, reason=why)
        return Paused(campaign, False, pauses.Pause(campaign, now, who, why))


@dataclass(frozen=True)
class Resumed:
    """What resume_campaign did."""

    campaign: str
    pause: pauses.Pause | None  # the pause it ended; None: it was not paused
    waiting: int  # its queued and deferred rows, which may go out again

    def as_json(self) -> dict[str, Any]:
        return {"campaign": self.campaign, "paused": False, "already": self.pause is None,
                "paused_at": None if self.pause is None else iso_z(self.pause.at),
                "paused_by": None if self.pause is None else self.pause.by,
                "waiting": self.waiting}


def resume_campaign(engine: Engine, *, actor: str, campaign: str, root: Path, now: datetime,
                    reason: str | None = None, via: str = "console") -> Resumed:
    """Resume CAMPAIGN: its rows may be leased again (those before their expiry go out at
    the next send), and the next plan plans it. Resuming one not paused changes nothing."""
    who = _actor(actor, via)
    why = clean_reason(reason, required=False)
    with engine.begin() as conn:
        check_campaign(conn, root, campaign)
        ended = pauses.resume(conn, campaign)
        if ended is not None:
            audit.record(conn, at=now, actor=who, via=via, action=audit.RESUME_CAMPAIGN,
                         target=campaign, reason=why,
                         detail={"paused_at": iso_z(ended.at), "paused_by": ended.by})
    return Resumed(campaign, ended, ledger.waiting(engine, campaign))


# Why a failed row is not retried (retry_failed's `kept`).
PAST_EXPIRY = "past_expiry"
ADDRESS_ERROR = "bad_mailbox"
BEFORE_THE_WIRE = "before_the_wire"


@dataclass(frozen=True)
class Retry:
    """The failed rows of a campaign an operator may retry, or did."""

    campaign: str
    failed: int  # its failed rows
    retried: int  # made `deferred`, due now (retry_failed), or that would be (retry_plan)
    kept: dict[str, int]  # failed rows not retried, by why (PAST_EXPIRY, ...)

    def as_json(self) -> dict[str, Any]:
        return {"campaign": self.campaign, "failed": self.failed, "retried": self.retried,
                "kept": {why: self.kept.get(why, 0)
                         for why in (PAST_EXPIRY, ADDRESS_ERROR, BEFORE_THE_WIRE)}}


def _sorted_failed(conn: Connection, campaign: str, now: datetime
                   ) -> tuple[list[int], Counter[str]]:
    """The ids of CAMPAIGN's failed rows that may be retried at NOW, and the others
    counted by why not."""
    chosen: list[int] = []
    kept: Counter[str] = Counter()
    for row_id, reason, reply, expires_at in ledger.failed_rows(conn, campaign):
        if expires_at <= now:
            kept[PAST_EXPIRY] += 1
        elif retryable(reason, reply):
            chosen.append(row_id)
        else:
            kept[ADDRESS_ERROR if reason == BAD_MAILBOX else BEFORE_THE_WIRE] += 1
    return chosen, kept


def retry_plan(engine: Engine, *, campaign: str, root: Path, now: datetime) -> Retry:
    """What retry_failed would do at NOW (to ask for confirmation); nothing is written."""
    with engine.connect() as conn:
        check_campaign(conn, root, campaign)
        chosen, kept = _sorted_failed(conn, campaign, now)
    return Retry(campaign, len(chosen) + sum(kept.values()), len(chosen), dict(kept))


def retry_failed(engine: Engine, *, actor: str, campaign: str, root: Path, now: datetime,
                 via: str = "console") -> Retry:
    """CAMPAIGN's failed rows that `outcomes.retryable` allows, before their expiry,
    become `deferred` and due at NOW: the next send (`mailer send`, the worker, the
    daemon) tries each once more, under the same rules as any row (consent, pause,
    expiry, rate). One audit row, with the count, when any row was retried."""
    who = _actor(actor, via)
    with engine.begin() as conn:
        check_campaign(conn, root, campaign)
        chosen, kept = _sorted_failed(conn, campaign, now)
        retried = ledger.retry_failed(conn, chosen, now)
        if retried:
            audit.record(conn, at=now, actor=who, via=via, action=audit.RETRY_FAILED,
                         target=campaign, detail={"rows": len(retried), "ids": retried[:100]})
    return Retry(campaign, len(chosen) + sum(kept.values()), len(retried), dict(kept))


# --- customers: suppress, resubscribe ----------------------------------------------------------


@dataclass(frozen=True)
class CustomerAction:
    """What suppress_customer or resubscribe_customer did with one customer."""

    customer: str  # the store id
    email: str
    outcome: str  # suppressed | resubscribed | already | refused
    consent: str | None  # the consent before
    reason: str  # the reason typed in; for `refused`, why it was refused

    def as_json(self) -> dict[str, Any]:
        return {"customer": self.customer, "email": self.email, "outcome": self.outcome,
                "consent": self.consent, "reason": self.reason}


def _customer(conn: Connection, who: str) -> tuple[str, str, str]:
    """(store id, email, consent) of WHO: an email when it holds `@`, else a store id."""
    from mailer.core.addresses import email_key
    from mailer.store.insight import card as store_card

    text = who.strip()
    if not text or len(text) > 320 or has_control_character(text):
        raise NotFoundError(f"no customer with {who[:80]!r}")
    is_email = "@" in text
    try:
        key = email_key(text) if is_email else text
    except UserError:
        raise NotFoundError(f"no customer with email {text!r}") from None
    found = store_card.find(conn, email_key=key) if is_email \
        else store_card.find(conn, store_id=key)
    if found is None:
        near = store_card.near(conn, email_key=key) if is_email \
            else store_card.near(conn, store_id=key)
        raise NotFoundError(f"no customer with {'email' if is_email else 'id'} {text!r}"
                            + did_you_mean(key, near))
    return str(found.store_id), str(found.email), str(found.consent)


def suppress_customer(engine: Engine, *, actor: str, customer: str, reason: str,
                      now: datetime, via: str = "console") -> CustomerAction:
    """Opt CUSTOMER (store id or email) out: consent `unsubscribed` with REASON (source
    `operator`), as `mailer unsubscribe` records it, and the address on the suppression
    list (reason `manual`), so no mail goes to it even after a new import; a mail of
    theirs not yet on the wire is skipped. One already opted out and suppressed:
    `already` (the audit row is written all the same: someone asked)."""
    from mailer.core.addresses import email_key
    from mailer.store.customers import suppress, unsubscribe_in

    who = _actor(actor, via)
    why = clean_reason(reason, required=True)
    assert why is not None
    with engine.begin() as conn:
        store_id, email, consent = _customer(conn, customer)
        moved = unsubscribe_in(conn, [email], now=now, source="operator", reason=why)
        listed = suppress(conn, [email_key(email)], now=now, source="operator",
                          reason="manual")
        outcome = "suppressed" if listed or moved[0].outcome == "unsubscribed" else "already"
        audit.record(conn, at=now, actor=who, via=via, action=audit.SUPPRESS_CUSTOMER,
                     target=store_id, reason=why,
                     detail={"email": email, "outcome": outcome, "consent_before": consent})
    return CustomerAction(store_id, email, outcome, consent, why)


def resubscribe_customer(engine: Engine, *, actor: str, customer: str, reason: str,
                         now: datetime, force: bool = False,
                         via: str = "console") -> CustomerAction:
    """Record a new opt-in for CUSTOMER, as `mailer resubscribe` does (consent
    `subscribed`, source `operator`, REASON as the consent's reason, the suppression
    lifted); a bounced or complained customer only with FORCE (else `refused`, and no
    audit row: nothing changed)."""
    from mailer.store.customers import resubscribe_in

    who = _actor(actor, via)
    why = clean_reason(reason, required=True)
    assert why is not None
    with engine.begin() as conn:
        store_id, email, consent = _customer(conn, customer)
        result = resubscribe_in(conn, [email], now=now, source="operator", force=force,
                                reason=why)[0]
        if result.outcome == "refused":
            return CustomerAction(store_id, email, "refused", consent,
                                  str(result.reason).replace("use --force", "force it"))
        audit.record(conn, at=now, actor=who, via=via, action=audit.RESUBSCRIBE_CUSTOMER,
                     target=store_id, reason=why,
                     detail={"email": email, "outcome": result.outcome,
                             "consent_before": consent, "force": force})
    return CustomerAction(store_id, email, result.outcome, consent, why)


# --- a test send ---------------------------------------------------------------------------


def test_send(engine: Engine, *, actor: str, root: Path, campaign: str, to: str,
              now: datetime, transport: Any, customer: str | None = None, sign: Any = None,
              via: str = "console") -> Any:
    """`mailer send CAMPAIGN --test-to TO` (mailer.app.send.send_test: nothing planned or
    counted), with an audit row of the mail sent; a test that fails raises as send_test
    does and writes none (nothing was sent). Returns send_test's SentTest."""
    from mailer.app.send import send_test
    from mailer.config.workspace import load_valid_workspace, open_workspace

    who = _actor(actor, via)
    specs, campaigns = load_valid_workspace(root, campaign)
    settings = open_workspace(root).settings
    sent = send_test(engine, root, specs, campaign, campaigns[campaign], settings=settings,
                     now=now, transport=transport, to=to, customer=customer, sign=sign)
    with engine.begin() as conn:
        audit.record(conn, at=now, actor=who, via=via, action=audit.TEST_SEND,
                     target=campaign,
                     detail={"to": sent.to, "customer": sent.customer,
                             "message_id": sent.message_id, "subject": sent.subject})
    return sent


test_send.__test__ = False  # type: ignore[attr-defined]  # not a test, whatever pytest thinks
