"""`mailer validate`: every problem in every workspace file, never just the first.

Settings, segments and campaigns are checked as files; then each campaign is
compiled and rendered for a synthetic customer with every optional field empty
(unknown variables, sandbox refusals and runtime errors are reported with the
template's file and line), and the rendered mail must carry the unsubscribe
link and the store's postal address. Links must be https (RFC 8058) except on
this machine.
"""

from __future__ import annotations

import html
import ipaddress
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from mailer.config.campaign import Campaign
from mailer.config.conditions import SegmentSpec
from mailer.config.settings import SETTINGS_FILE, Settings, load_settings
from mailer.config.workspace import load_campaigns, load_segments
from mailer.config.yamlsrc import line_of, load_yaml
from mailer.core.errors import ConfigError, Problem
from mailer.mail.render import RenderError
from mailer.segments.compiler import Scope
from mailer.store.customers import Profile
from mailer.store.db import Engine


def validate_workspace(root: Path, *, now: datetime | None = None,
                       store: Callable[[], Engine | None] = lambda: None) -> list[Problem]:
    """Problems and warnings of the workspace at ROOT. STORE gives the database when
    there is one: campaigns are then also rendered for real customers of each intro
    segment, and fallbacks to default values are reported."""
    settings: Settings | None
    try:
        settings, problems = load_settings(root)
    except ConfigError as err:
        settings, problems = None, list(err.problems)
    specs, segment_problems = load_segments(root)
    campaigns, campaign_problems = load_campaigns(root, set(specs))
    problems += segment_problems + campaign_problems
    if settings is None:
        return problems
    problems += check_tracking(root, settings)
    moment = (now or datetime.now(UTC)).replace(microsecond=0)
    checked = {slug: check_rendering(root, settings, slug, campaign, moment)
               for slug, campaign in campaigns.items()}
    problems += [p for found in checked.values() for p in found]
    engine = store() if not segment_problems else None
    if engine is not None:
        for slug, campaign in campaigns.items():
            if not checked[slug]:
                problems += check_real_customers(engine, root, settings, specs, slug, campaign,
                                                 moment)
    return problems


def _loopback(host: str) -> bool:
    """Whether HOST names this machine: localhost (RFC 6761) or a loopback address."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_tracking(root: Path, settings: Settings) -> list[Problem]:
    """tracking.base_url must be https (RFC 8058: the one-click List-Unsubscribe URI is
    HTTPS; clients do not offer it for http) except on a loopback host, where plain
    http is a warning. An unset base_url already has its own warning from settings."""
    url = settings.tracking.base_url
    parts = urlsplit(url)
    if parts.scheme != "http":
        return []
    data = load_yaml((root / SETTINGS_FILE).read_text(encoding="utf-8"), SETTINGS_FILE)
    if "base_url" not in ((data or {}).get("tracking") or {}):
        return []
    line = line_of(data, ("tracking", "base_url"))
    if _loopback((parts.hostname or "").lower()):
        return [Problem(SETTINGS_FILE, line, "tracking.base_url",
                        f"{url} is plain http on this machine: fine for a local demo; "
                        "real readers need https", warning=True)]
    host = parts.hostname or ""
    secure = parts._replace(scheme="https", netloc=f"[{host}]" if ":" in host else host)
    return [Problem(SETTINGS_FILE, line, "tracking.base_url",
                    f"{url} is plain http: unsubscribe links must be https (RFC 8058; "
                    f"mail clients hide one-click unsubscribe otherwise), like {secure.geturl()}")]


def synthetic_customer() -> Profile:
    """A customer with only the required fields: every optional one is missing."""
    return Profile(store_id="synthetic", email="synthetic@example.com")


def _long_subject(path: str, field: str, variant: int, subject: str) -> list[Problem]:
    """A warning when a rendered subject is longer than a mail's Subject shows."""
    from mailer.mail.message import SUBJECT_LIMIT, clean_header

    length = len(clean_header(subject))
    if length <= SUBJECT_LIMIT:
        return []
    return [Problem(path, None, field,
                    f"variant {variant + 1} renders to {length} characters: mails cut it to "
                    f"{SUBJECT_LIMIT} with an ellipsis", warning=True)]


def check_rendering(root: Path, settings: Settings, slug: str, campaign: Campaign,
                    now: datetime) -> list[Problem]:
    """Compile and render the campaign for a synthetic customer; check compliance."""
    from mailer.mail.context import build_context
    from mailer.mail.links import PREVIEW_KEY
    from mailer.mail.version import compile_version, compose

    path = f"campaigns/{slug}.yaml"
    try:
        version = compile_version(slug, campaign, root / "templates", checking=True)
        context = build_context(synthetic_customer(), None, settings=settings, slug=slug,
                                campaign=campaign, now=now, key=PREVIEW_KEY, message="preview")
        problems = []
        for variant in range(len(version.subjects)):
            mail = compose(version, context, variant=variant, member_of=set())
            problems += _long_subject(path, "subject", variant, mail.subject)
        for variant in range(len(version.reminder_subjects)):
            reminder = compose(version, context, variant=variant, member_of=set(),
                               occurrence="reminder")
            problems += _long_subject(path, "reminder.subject", variant, reminder.subject)
    except RenderError as err:
        return [err.problem()]
    unsubscribe = context["links"]["unsubscribe"]
    if unsubscribe not in mail.html:
        problems.append(Problem(path, 1, "template",
                                f"the rendered mail of {campaign.template} lacks the "
                                "unsubscribe link ({{ links.unsubscribe }})"))
    # As a reader sees it: escaped by Jinja, or written as character references when
    # the address is typed into the template (the compiled template's non-ASCII is).
    if settings.store.address not in html.unescape(mail.html):
        problems.append(Problem(path, 1, "template",
                                f"the rendered mail of {campaign.template} lacks the store's "
                                "postal address ({{ store.address }})"))
    return problems


SAMPLES_PER_INTRO = 3
_DEFAULTED = re.compile(r"customer\.(\w+)\s*\|\s*default\b")


def check_real_customers(engine: Engine, root: Path, settings: Settings,
                         specs: dict[str, SegmentSpec], slug: str, campaign: Campaign,
                         now: datetime) -> list[Problem]:
    """Render for real customers of each intro segment; report how often the subject
    falls back to a default value."""
    from mailer.app.preview import choose, render_samples
    from mailer.mail.version import compile_version
    from mailer.segments.runner import scope_for

    scope = scope_for(settings, now, engine)
    try:
        version = compile_version(slug, campaign, root / "templates", checking=True)
        ids = choose(engine, specs, campaign, scope,
                     count=SAMPLES_PER_INTRO * (len(campaign.intros) + 1), email=None)
        render_samples(engine, version, specs, settings=settings, scope=scope, now=now,
                       ids=ids)
    except RenderError as err:
        return [err.problem()]
    return fallbacks(engine, specs, slug, campaign, scope)


def fallbacks(engine: Engine, specs: dict[str, SegmentSpec], slug: str, campaign: Campaign,
              scope: Scope) -> list[Problem]:
    """'subject of birthday uses the default first_name for 12% of its segment'."""
    from mailer.segments.compiler import CUSTOMERS, members_query
    from mailer.segments.runner import compiled, reading
    from mailer.store.customers import missing_counts

    notes = []
    fields = sorted({m.group(1) for subject in campaign.subject
                     for m in _DEFAULTED.finditer(subject) if m.group(1) in CUSTOMERS.c})
    if not fields:
        return []
    members = members_query(compiled(specs, campaign.segment, scope), CUSTOMERS.c.id)
    with reading(engine) as conn:
        for field in fields:
            total, missing = missing_counts(conn, members, field)
            if total and missing:
                notes.append(Problem(
                    f"campaigns/{slug}.yaml", None, "subject",
                    f"uses the default {field} for {round(100 * missing / total)}% of its "
                    f"segment ({missing} of {total} customers)", warning=True))
    return notes
