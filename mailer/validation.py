"""`mailer validate`: every problem in every workspace file, never just the first.

Settings, segments and campaigns are checked as files; then each campaign is
compiled and rendered for a synthetic customer with every optional field empty
(unknown variables, sandbox refusals and runtime errors are reported with the
template's file and line), and the rendered mail must carry the unsubscribe
link and the store's postal address.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

from mailer.campaign import Campaign
from mailer.errors import ConfigError, Problem
from mailer.render import RenderError
from mailer.settings import Settings, load_settings
from mailer.workspace import load_campaigns, load_segments


def validate_workspace(root: Path, *, now: datetime | None = None) -> list[Problem]:
    """Problems and warnings of the workspace at ROOT."""
    settings: Settings | None
    try:
        settings, problems = load_settings(root)
    except ConfigError as err:
        settings, problems = None, list(err.problems)
    specs, segment_problems = load_segments(root)
    campaigns, campaign_problems = load_campaigns(root, set(specs))
    problems += segment_problems + campaign_problems
    if settings is not None:
        for slug, campaign in campaigns.items():
            problems += check_rendering(root, settings, slug, campaign,
                                        now or datetime.now(UTC))
    return problems


def synthetic_customer() -> SimpleNamespace:
    """A customer with only the required fields: every optional one is missing."""
    return SimpleNamespace(store_id="synthetic", email="synthetic@example.com",
                           first_name=None, last_name=None, birth_date=None, country=None,
                           city=None, locale=None, timezone=None, tags=None, attributes=None,
                           signed_up_at=None, referral_code=None)


def check_rendering(root: Path, settings: Settings, slug: str, campaign: Campaign,
                    now: datetime) -> list[Problem]:
    """Compile and render the campaign for a synthetic customer; check compliance."""
    from mailer.compose import compile_version, compose
    from mailer.context import build_context
    from mailer.links import PREVIEW_KEY

    path = f"campaigns/{slug}.yaml"
    try:
        version = compile_version(slug, campaign, root / "templates", checking=True)
        context = build_context(synthetic_customer(), None, settings=settings, slug=slug,
                                campaign=campaign, now=now, key=PREVIEW_KEY, message="preview")
        problems = []
        for variant in range(len(version.subjects)):
            mail = compose(version, context, variant=variant, member_of=set())
    except RenderError as err:
        return [err.problem()]
    unsubscribe = context["links"]["unsubscribe"]
    if unsubscribe not in mail.html:
        problems.append(Problem(path, 1, "template",
                                f"the rendered mail of {campaign.template} lacks the "
                                "unsubscribe link ({{ links.unsubscribe }})"))
    if settings.store.address not in mail.html and \
            html.escape(settings.store.address) not in mail.html:
        problems.append(Problem(path, 1, "template",
                                f"the rendered mail of {campaign.template} lacks the store's "
                                "postal address ({{ store.address }})"))
    return problems
