"""The console's operator actions (issue 23; docs/console.md, "Operator actions"): pause
and resume a campaign, retry its failed rows, a test send, suppress and resubscribe a
customer, and the audit page listing them.

Each action has two steps, as GitHub's and Stripe's dashboards have them: a GET page
saying what will happen (with the figures it acts on: the rows waiting, the failed rows
that qualify), whose form POSTs the action with the CSRF token the guard checks. The
action is mailer.app.operator's, with the logged-in user as actor and via `console`; it
writes its own audit row. A POST answers 303 to the campaign or the customer with
`?done=ACTION` (a fixed notice; nothing typed is reflected), or the action's JSON for a
JSON request. Bad input (no reason, no address) re-renders the form, 400, naming the
field; nothing is done.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from aiohttp import web

from mailer.core.errors import InvalidValue, UserError
from mailer.web.console import data
from mailer.web.console.guard import session_of, wants_json
from mailer.web.console.pages import CONSOLE, _dumps, answer, render

# What a page says after `?done=ACTION`: fixed texts, so a link cannot make it say more.
NOTICES = {
    "pause_campaign": "Paused: no mail of this campaign goes out until it is resumed.",
    "resume_campaign": "Resumed: its waiting rows go out at the next send.",
    "retry_failed": "The failed rows that qualify are due again: they go out at the next "
                    "send.",
    "test_send": "The test mail was sent (the audit page has its message id).",
    "suppress_customer": "Suppressed: no mail goes to this customer.",
    "resubscribe_customer": "Resubscribed: a new opt-in is recorded.",
}


class BadField(Exception):
    """A form field that is missing or wrong: 400, naming it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def _actor(request: web.Request) -> str:
    found = session_of(request)
    assert found is not None, "the guard lets no action through without a session"
    return found.user


def _done(request: web.Request, location: str, action: str, result: Any
          ) -> web.StreamResponse:
    if wants_json(request):
        return web.json_response(result.as_json(), dumps=_dumps)
    return web.Response(status=303, headers={"Location": f"{location}?done={action}"})


def _reason(form: Any, *, required: bool) -> str | None:
    from mailer.app.operator import clean_reason

    try:
        return clean_reason(str(form.get("reason", "")), required=required)
    except UserError as err:
        raise BadField("reason", str(err)) from None


Confirm = Callable[[web.Request, str | None, dict[str, str]], Awaitable[web.StreamResponse]]


def _refused(request: web.Request, err: BadField) -> web.Response:
    return web.json_response({"error": {"message": str(err), "field": err.field}},
                             status=400, dumps=_dumps)


async def _post(request: web.Request, confirm: Confirm,
                act: Callable[[Any], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """Run ACT with the form; a BadField: the confirmation again, 400, naming the field."""
    form = await request.post()
    try:
        return await act(form)
    except BadField as err:
        if wants_json(request):
            return _refused(request, err)
        typed = {k: str(v) for k, v in form.items() if k != "csrf" and isinstance(v, str)}
        return await confirm(request, str(err), typed)


def _confirm(request: web.Request, *, title: str, what: list[str], action: str | None,
             button: str, back: str, fields: list[dict[str, Any]], problem: str | None,
             typed: dict[str, str], document: dict[str, Any]) -> web.StreamResponse:
    """The page saying what will happen, with the form that does it (ACTION None: there
    is nothing to do, no form)."""
    if wants_json(request):
        return web.json_response(document, dumps=_dumps)
    return render(request, "confirm.html", 400 if problem else 200, title=title, what=what,
                  action=action, button=button, back=back, fields=fields, problem=problem,
                  typed=typed, document=document)


REASON = {"name": "reason", "label": "Reason (kept with the audit row)", "kind": "textarea"}


# --- campaigns -----------------------------------------------------------------------------

def _campaign_url(slug: str) -> str:
    return "/campaigns/" + quote(slug, safe="")


async def _campaign_state(request: web.Request) -> tuple[str, dict[str, Any] | None, int]:
    """The campaign named (NotFoundError when it is neither a file nor in the ledger), its
    pause and its waiting rows."""
    from mailer.app.operator import check_campaign
    from mailer.store.ledger import waiting

    console = request.app[CONSOLE]
    slug = request.match_info["campaign"]
    store = console.store

    def state() -> tuple[dict[str, Any] | None, int]:
        with store.engine.connect() as conn:
            check_campaign(conn, store.root, slug)
        return data.pause(store, slug), waiting(store.engine, slug)

    pause, rows = await console.run(state)
    return slug, pause, rows


async def pause_confirm(request: web.Request, problem: str | None = None,
                        typed: dict[str, str] | None = None) -> web.StreamResponse:
    slug, pause, rows = await _campaign_state(request)
    console = request.app[CONSOLE]
    if pause is not None:
        what = [f"{slug} is already paused, since {_when(console, pause['paused_at'])} by "
                f"{pause['paused_by']}."]
    else:
        what = [f"From now on the planner holds back every customer of {slug} "
                "(paused_campaign) and no sender starts one of its rows.",
                f"Its {_count(console, rows)} waiting rows (queued or deferred) stay as they "
                "are and keep their expiry: a row that expires while paused is never sent.",
                "Resume it here or with `mailer resume` to go on."]
    return _confirm(request, title=f"Pause {slug}?", what=what,
                    action=None if pause else request.path, button="Pause the campaign",
                    back=_campaign_url(slug), fields=[{**REASON, "label": "Reason "
                                                       "(optional, kept with the pause)"}],
                    problem=problem, typed=typed or {},
                    document={"campaign": slug, "paused": pause, "waiting": rows})


async def pause_post(request: web.Request) -> web.StreamResponse:
    from mailer.app.operator import pause_campaign

    return await _pause_or_resume(request, pause_campaign, pause_confirm, "pause_campaign")


async def _pause_or_resume(request: web.Request, change: Callable[..., Any],
                           confirm_page: Any, action: str) -> web.StreamResponse:
    """The POST of the pause or the resume form: CHANGE (mailer.app.operator's) with the
    optional reason, then back to the campaign with ACTION's notice."""
    async def act(form: Any) -> web.StreamResponse:
        console, slug = request.app[CONSOLE], request.match_info["campaign"]
        store = console.store
        done = await console.run(change, store.engine, actor=_actor(request),
                                 campaign=slug, root=store.root, now=store.now(),
                                 reason=_reason(form, required=False), via="console")
        return _done(request, _campaign_url(slug), action, done)

    return await _post(request, confirm_page, act)


async def resume_confirm(request: web.Request, problem: str | None = None,
                         typed: dict[str, str] | None = None) -> web.StreamResponse:
    slug, pause, rows = await _campaign_state(request)
    console = request.app[CONSOLE]
    if pause is None:
        what = [f"{slug} is not paused: there is nothing to resume."]
    else:
        what = [f"{slug} has been paused since {_when(console, pause['paused_at'])} by "
                f"{pause['paused_by']}" + (f" ({pause['reason']})." if pause["reason"] else "."),
                f"Resuming lets its {_count(console, rows)} waiting rows go out at the next "
                "send (those past their expiry do not), and the next plan plans it again."]
    return _confirm(request, title=f"Resume {slug}?", what=what,
                    action=None if pause is None else request.path,
                    button="Resume the campaign", back=_campaign_url(slug),
                    fields=[{**REASON, "label": "Reason (optional)"}], problem=problem,
                    typed=typed or {},
                    document={"campaign": slug, "paused": pause, "waiting": rows})


async def resume_post(request: web.Request) -> web.StreamResponse:
    from mailer.app.operator import resume_campaign

    return await _pause_or_resume(request, resume_campaign, resume_confirm, "resume_campaign")


async def retry_confirm(request: web.Request, problem: str | None = None,
                        typed: dict[str, str] | None = None) -> web.StreamResponse:
    from mailer.app.operator import retry_plan

    console, slug = request.app[CONSOLE], request.match_info["campaign"]
    store = console.store
    plan = await console.run(retry_plan, store.engine, campaign=slug, root=store.root,
                             now=store.now())
    document = plan.as_json()
    kept = document["kept"]
    what = [f"{slug} has {_count(console, plan.failed)} failed rows; "
            f"{_count(console, plan.retried)} qualify for a retry: a 4.x.x-like or 5.x.x "
            "reply other than a 5.1.x address error, before their expiry.",
            f"Kept as they are: {_count(console, kept['past_expiry'])} past their expiry, "
            f"{_count(console, kept['bad_mailbox'])} refused as a bad address (5.1.x), "
            f"{_count(console, kept['before_the_wire'])} that failed before the wire."]
    if plan.retried:
        what.append("Those that qualify become deferred and due now: the next send tries "
                    "each once more, under the same rules as any row (consent, pause, "
                    "expiry, rate).")
    return _confirm(request, title=f"Retry the failed rows of {slug}?", what=what,
                    action=request.path if plan.retried else None,
                    button=f"Retry {_count(console, plan.retried)} rows",
                    back=_campaign_url(slug), fields=[], problem=problem, typed=typed or {},
                    document=document)


async def retry_post(request: web.Request) -> web.StreamResponse:
    from mailer.app.operator import retry_failed

    async def act(form: Any) -> web.StreamResponse:
        console, slug = request.app[CONSOLE], request.match_info["campaign"]
        store = console.store
        done = await console.run(retry_failed, store.engine, actor=_actor(request),
                                 campaign=slug, root=store.root, now=store.now(),
                                 via="console")
        return _done(request, _campaign_url(slug), "retry_failed", done)

    return await _post(request, retry_confirm, act)


def _address(value: str) -> str:
    from mailer.core.addresses import parse_address

    if not value.strip():
        raise BadField("to", "give the address the test mail goes to")
    try:
        parse_address(value[:320])
    except InvalidValue as err:
        raise BadField("to", str(err)) from None
    return value.strip()


async def test_send_confirm(request: web.Request, problem: str | None = None,
                            typed: dict[str, str] | None = None) -> web.StreamResponse:
    console = request.app[CONSOLE]
    slug, _, _ = await _campaign_state(request)
    typed = typed if typed is not None else {
        k: request.query.get(k, "")[:320] for k in ("to", "customer")}
    if problem is None and typed.get("to"):
        try:
            _address(typed["to"])
        except BadField as err:
            problem = str(err)
    whose = typed.get("customer") or "the first preview sample"
    what = [f"One mail of {slug}: {whose}'s, rendered as now, its subject prefixed "
            "[TEST] and its links signed with the preview key, sent through "
            "MAILER_SMTP_URL to the address below.",
            "Nothing is planned, recorded in the ledger or counted against a cap; the "
            "audit keeps the address and the message id."]
    if console.env is None or not console.env.smtp_url:
        what.append("This console has no MAILER_SMTP_URL: the send will be refused.")
    return _confirm(request, title=f"Send a test of {slug}?", what=what,
                    action=request.path, button="Send the test mail",
                    back=_campaign_url(slug), problem=problem, typed=typed,
                    fields=[{"name": "to", "label": "Address", "kind": "email"},
                            {"name": "customer", "label": "Whose mail (id or email; "
                             "optional)", "kind": "text"}],
                    document={"campaign": slug, "to": typed.get("to", ""),
                              "customer": typed.get("customer") or None})


async def test_send_post(request: web.Request) -> web.StreamResponse:
    from mailer.app.operator import test_send
    from mailer.delivery.sending import refuse_preview_key, signer, smtp_transport

    async def act(form: Any) -> web.StreamResponse:
        console, slug = request.app[CONSOLE], request.match_info["campaign"]
        store = console.store
        to = _address(str(form.get("to", "")))
        customer = str(form.get("customer", "")).strip()[:320] or None
        env = console.env
        if env is None:
            raise UserError("this console was started without an environment to send with")
        # as `mailer send --test-to`: never with the public preview key, a transport needed
        actor = _actor(request)

        def send() -> Any:
            refuse_preview_key(env)
            return test_send(store.engine, actor=actor, root=store.root, campaign=slug, to=to,
                             now=store.now(), transport=smtp_transport(env, store.settings),
                             customer=customer, sign=signer(store.settings, env, store.root),
                             via="console")

        sent = await console.run(send)
        return _done(request, _campaign_url(slug), "test_send", sent)

    return await _post(request, test_send_confirm, act)


test_send_confirm.__test__ = False  # type: ignore[attr-defined]  # pytest: not tests
test_send_post.__test__ = False  # type: ignore[attr-defined]


# --- customers -----------------------------------------------------------------------------

async def _card(request: web.Request) -> dict[str, Any]:
    console = request.app[CONSOLE]
    found: dict[str, Any] = await console.run(data.customer, console.store,
                                              request.match_info["who"])
    return found


def _card_url(card: dict[str, Any]) -> str:
    return "/customers/" + quote(str(card["id"]), safe="")


def _consent(card: dict[str, Any]) -> str:
    return str((card.get("consent") or {}).get("state") or "unknown")


async def suppress_confirm(request: web.Request, problem: str | None = None,
                           typed: dict[str, str] | None = None) -> web.StreamResponse:
    card = await _card(request)
    who = f"{card['id']} ({card['email']})"
    what = [f"{who}: consent is {_consent(card)}"
            + (", and the address is on the suppression list." if card.get("suppressed")
               else "."),
            "Suppressing opts them out (consent unsubscribed, source operator, with your "
            "reason) and puts the address on the suppression list, so no mail goes to it, "
            "even after a new import; a mail of theirs not yet on the wire is skipped."]
    return _confirm(request, title=f"Suppress {card['id']}?", what=what, action=request.path,
                    button="Suppress the customer", back=_card_url(card),
                    fields=[{**REASON, "label": "Reason (required, kept with the consent "
                             "and the audit row)", "required": True}],
                    problem=problem, typed=typed or {},
                    document={"customer": card["id"], "email": card["email"],
                              "consent": _consent(card), "suppressed": card.get("suppressed")})


async def suppress_post(request: web.Request) -> web.StreamResponse:
    from mailer.app.operator import suppress_customer

    async def act(form: Any) -> web.StreamResponse:
        console = request.app[CONSOLE]
        store = console.store
        reason = _reason(form, required=True)
        assert reason is not None
        done = await console.run(suppress_customer, store.engine, actor=_actor(request),
                                 customer=request.match_info["who"], reason=reason,
                                 now=store.now(), via="console")
        return _done(request, "/customers/" + quote(done.customer, safe=""),
                     "suppress_customer", done)

    return await _post(request, suppress_confirm, act)


FORCED = ("bounced", "complained")  # a resubscription of these needs `force`


async def resubscribe_confirm(request: web.Request, problem: str | None = None,
                              typed: dict[str, str] | None = None) -> web.StreamResponse:
    card = await _card(request)
    consent = _consent(card)
    what = [f"{card['id']} ({card['email']}): consent is {consent}"
            + (", and the address is on the suppression list." if card.get("suppressed")
               else "."),
            "Resubscribing records a new opt-in (consent subscribed, source operator, with "
            "your reason) and lifts the suppression: do it only when they asked for it."]
    fields: list[dict[str, Any]] = [{**REASON, "label": "Reason (required: how they asked)",
                                     "required": True}]
    if consent in FORCED:
        what.append(f"They {consent}: resubscribing them needs the box below ticked.")
        fields.append({"name": "force", "label": f"Resubscribe although they {consent}",
                       "kind": "checkbox"})
    return _confirm(request, title=f"Resubscribe {card['id']}?", what=what,
                    action=request.path, button="Resubscribe the customer",
                    back=_card_url(card), fields=fields, problem=problem, typed=typed or {},
                    document={"customer": card["id"], "email": card["email"],
                              "consent": consent, "suppressed": card.get("suppressed")})


async def resubscribe_post(request: web.Request) -> web.StreamResponse:
    from mailer.app.operator import resubscribe_customer

    async def act(form: Any) -> web.StreamResponse:
        console = request.app[CONSOLE]
        store = console.store
        reason = _reason(form, required=True)
        assert reason is not None
        done = await console.run(resubscribe_customer, store.engine, actor=_actor(request),
                                 customer=request.match_info["who"], reason=reason,
                                 now=store.now(), force=form.get("force") == "yes",
                                 via="console")
        if done.outcome == "refused":
            raise UserError(f"{done.customer} was not resubscribed: {done.reason}")
        return _done(request, "/customers/" + quote(done.customer, safe=""),
                     "resubscribe_customer", done)

    return await _post(request, resubscribe_confirm, act)


# --- the audit -------------------------------------------------------------------------------

async def audit_page(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    document = await console.run(data.audit, console.store)
    return answer(request, document, "audit.html", title="Audit")


def _when(console: Any, value: str) -> str:
    when: Callable[[str], str] = console.templates.filters["when"]
    return when(value)


def _count(console: Any, value: int) -> str:
    number: Callable[[int], str] = console.templates.filters["number"]
    return number(value)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ROUTES: list[tuple[str, str, Handler]] = [
    ("GET", "/campaigns/{campaign}/pause", pause_confirm),
    ("POST", "/campaigns/{campaign}/pause", pause_post),
    ("GET", "/campaigns/{campaign}/resume", resume_confirm),
    ("POST", "/campaigns/{campaign}/resume", resume_post),
    ("GET", "/campaigns/{campaign}/retry", retry_confirm),
    ("POST", "/campaigns/{campaign}/retry", retry_post),
    ("GET", "/campaigns/{campaign}/test-send", test_send_confirm),
    ("POST", "/campaigns/{campaign}/test-send", test_send_post),
    ("GET", "/customers/{who}/suppress", suppress_confirm),
    ("POST", "/customers/{who}/suppress", suppress_post),
    ("GET", "/customers/{who}/resubscribe", resubscribe_confirm),
    ("POST", "/customers/{who}/resubscribe", resubscribe_post),
    ("GET", "/audit", audit_page),
]
