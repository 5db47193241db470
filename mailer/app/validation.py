"""`mailer validate`: every problem in every workspace file, never just the first.

Settings, segments, surveys and campaigns are checked as files; then each campaign is
compiled and rendered for a synthetic customer with every optional field empty
(unknown variables, sandbox refusals and runtime errors are reported with the
template's file and line), and the rendered mail must carry the unsubscribe
link and the store's postal address. Links must be https (RFC 8058) except on
this machine. Every template, subject and intro is also read without rendering
it (mailer.mail.sandbox.context_uses) and each context value it reads is
checked against the context's schema (mailer.mail.context): an unknown one is an
error with "did you mean"; an optional one a subject or intro prints without a
default is a warning saying who would get what, counted over the campaign's
segment when there is a store.
"""

from __future__ import annotations

import html
import ipaddress
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from mailer.config.campaign import Campaign
from mailer.config.conditions import SegmentSpec
from mailer.config.settings import SETTINGS_FILE, Settings, load_settings
from mailer.config.workspace import load_campaigns, load_segments, load_surveys
from mailer.config.yamlsrc import line_of, load_yaml
from mailer.core.errors import ConfigError, Problem
from mailer.mail.render import RenderError
from mailer.segments.compiler import Scope
from mailer.store.customers import Profile
from mailer.store.db import Engine

if TYPE_CHECKING:
    from mailer.mail.render import CompiledTemplate
    from mailer.mail.sandbox import Use
    from mailer.mail.version import Version


@dataclass(frozen=True)
class Checked:
    """What validate found, and how many files it read (YAML and templates)."""

    problems: list[Problem]
    files: int
    settings: Settings | None = None  # mailer.yaml's, when it loads


def validate_workspace(root: Path, *, now: datetime | None = None,
                       store: Callable[[], Engine | None] = lambda: None) -> list[Problem]:
    """Problems and warnings of the workspace at ROOT (check_workspace's)."""
    return check_workspace(root, now=now, store=store).problems


def _yaml_files(root: Path) -> list[str]:
    """The YAML files validate reads: mailer.yaml and those of campaigns/, segments/ and
    surveys/."""
    found = [SETTINGS_FILE] if (root / SETTINGS_FILE).is_file() else []
    for folder in ("campaigns", "segments", "surveys"):
        found += [f"{folder}/{file.name}" for file in (root / folder).glob("*.y*ml")
                  if file.suffix in (".yaml", ".yml")]
    return found


def check_workspace(root: Path, *, now: datetime | None = None,
                    store: Callable[[], Engine | None] = lambda: None) -> Checked:
    """Problems and warnings of the workspace at ROOT, each once. STORE gives the database
    when there is one: campaigns are then also rendered for real customers of each intro
    segment, fallbacks to default values are reported, and the optional values subjects
    and intros print without a default are counted over each campaign's segment."""
    settings: Settings | None
    files = set(_yaml_files(root))
    try:
        settings, problems = load_settings(root)
    except ConfigError as err:
        settings, problems = None, list(err.problems)
    specs, segment_problems = load_segments(root)
    campaigns, campaign_problems = load_campaigns(root, set(specs))
    # load_campaigns reports the surveys' errors; their warnings are validate's alone
    survey_warnings = [p for p in load_surveys(root)[1] if p.warning]
    problems += segment_problems + campaign_problems + survey_warnings
    if settings is None:
        return Checked(_once(problems), len(files))
    problems += check_tracking(root, settings)
    problems += check_cap_topics(root, settings, campaigns)
    problems += check_best_windows(root, settings, campaigns)
    moment = (now or datetime.now(UTC)).replace(microsecond=0)
    versions = {slug: _compiled(root, slug, campaign) for slug, campaign in campaigns.items()}
    checked = {slug: check_rendering(root, settings, slug, campaign, moment,
                                     version=versions[slug])
               for slug, campaign in campaigns.items()}
    reads = {slug: read_context(root, settings, slug, campaign, moment, version=versions[slug])
             for slug, campaign in campaigns.items()}
    for slug in campaigns:
        files.update(reads[slug].files)
        problems += reads[slug].problems + _not_found_already(checked[slug], reads[slug])
    engine = store() if not segment_problems else None
    for slug, campaign in campaigns.items():
        if engine is not None and not checked[slug] and not reads[slug].errors():
            problems += check_real_customers(engine, root, settings, specs, slug, campaign,
                                             moment, version=versions[slug])
        problems += unhandled(engine, settings, specs, slug, campaign, reads[slug], moment)
    return Checked(_once(problems), len(files), settings)


def template_errors(root: Path, settings: Settings, campaigns: dict[str, Campaign], *,
                    now: datetime) -> list[Problem]:
    """The unknown variables of the campaigns' templates, subjects and intros, each once:
    errors only, without a store. What the daemon's reload stops on besides the files'
    own problems; a warning never stops it."""
    return _once([problem for slug, campaign in campaigns.items()
                  for problem in read_context(root, settings, slug, campaign, now).errors()])


def _compiled(root: Path, slug: str, campaign: Campaign) -> Version | None:
    """The campaign's version, compiled once for every check; None when it does not
    compile (check_rendering reports why)."""
    from mailer.mail.version import compile_version

    try:
        return compile_version(slug, campaign, root / "templates")
    except RenderError:
        return None


def _once(problems: list[Problem]) -> list[Problem]:
    """Each problem once, in the order found (campaigns sharing a template find its
    problems each)."""
    return list(dict.fromkeys(problems))


def _not_found_already(rendered: list[Problem], read: ContextRead) -> list[Problem]:
    """The render's problems, but for the unknown variable it stopped at, which reading
    the sources has reported already (at its line, or by its name: a render error in a
    layout's head names no file)."""
    places = {(p.path, p.line) for p in read.errors()}
    undefined = {f"{name!r} is undefined" for name in read.unknown_names}
    return [p for p in rendered
            if (p.path, p.line) not in places and p.message not in undefined]


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


def check_best_windows(root: Path, settings: Settings,
                       campaigns: dict[str, Campaign]) -> list[Problem]:
    """A warning for each `send_at: best` campaign whose window lies in the quiet hours:
    no hour is left to choose, so its mails leave when the quiet hours end."""
    from mailer.planning.policy import allowed_hours

    notes = []
    for slug, campaign in sorted(campaigns.items()):
        quiet = settings.policy.quiet_hours
        if not campaign.best_hour or allowed_hours(campaign.send_window.hours(), quiet):
            continue
        path = f"campaigns/{slug}.yaml"
        data = load_yaml((root / path).read_text(encoding="utf-8"), path)
        key = "window" if "window" in data else "send_at"
        notes.append(Problem(path, line_of(data, (key,)), key,
                             f"every hour of the window {campaign.send_window} is in the "
                             f"quiet hours ({quiet}): mails leave when they end",
                             warning=True))
    return notes


def check_cap_topics(root: Path, settings: Settings,
                     campaigns: dict[str, Campaign]) -> list[Problem]:
    """A warning for each frequency cap whose topic no campaign has: it counts nothing
    (yet), which is allowed (a topic's first campaign may come later) but usually a typo."""
    from mailer.core.suggest import did_you_mean

    topics = sorted({campaign.topic for campaign in campaigns.values()})
    unknown = [(index, cap.topic) for index, cap in enumerate(settings.policy.frequency)
               if cap.topic is not None and cap.topic not in topics]
    if not unknown:
        return []
    data = load_yaml((root / SETTINGS_FILE).read_text(encoding="utf-8"), SETTINGS_FILE)
    return [Problem(SETTINGS_FILE, line_of(data, ("policy", "frequency", index, "topic")),
                    f"policy.frequency.{index}.topic",
                    f"no campaign has topic {topic!r}, so this cap counts no mail"
                    + did_you_mean(topic, topics, otherwise=(
                        f" (the campaigns' topics: {', '.join(topics)})" if topics else "")),
                    warning=True)
            for index, topic in unknown]


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
                    now: datetime, *, version: Version | None = None) -> list[Problem]:
    """Compile (unless given its VERSION) and render the campaign for a synthetic
    customer; check compliance."""
    from mailer.mail.context import build_context
    from mailer.mail.links import PREVIEW_KEY
    from mailer.mail.version import compile_version, compose

    path = f"campaigns/{slug}.yaml"
    try:
        version = version or compile_version(slug, campaign, root / "templates")
        context = build_context(synthetic_customer(), None, settings=settings, slug=slug,
                                campaign=campaign, now=now, key=PREVIEW_KEY, message="preview",
                                survey=version.survey)
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
    keep = context["links"]["keep_subscribed"]
    if campaign.trigger == "sunset" and keep not in mail.html:
        problems.append(Problem(path, 1, "template",
                                f"the rendered mail of {campaign.template} lacks the \"keep me "
                                "subscribed\" link ({{ links.keep_subscribed }}): a sunset "
                                "mail asks the reader to stay"))
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
                         now: datetime, *, version: Version | None = None) -> list[Problem]:
    """Render for real customers of each intro segment; report how often the subject
    falls back to a default value."""
    from mailer.app.preview import choose, render_samples
    from mailer.mail.version import compile_version
    from mailer.segments.runner import scope_for

    scope = scope_for(settings, now, engine)
    try:
        version = version or compile_version(slug, campaign, root / "templates")
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


# --- the context values templates, subjects and intros read -----------------------------------


@dataclass(frozen=True)
class Printed:
    """An optional value a subject or an intro prints without handling its absence."""

    path: str
    line: int | None
    field: str  # subject, reminder.subject or intros.SEGMENT
    key: tuple[str, ...]  # the value, as deep as the schema knows it
    intro: str | None  # the intro's segment; None for a subject, which everyone reads
    sample: str  # what a reader without it gets (the synthetic customer's render)


@dataclass(frozen=True)
class Attribute:
    """A `customer.attributes.X` read: whether the store has X is known only there."""

    path: str
    line: int | None
    field: str | None
    name: str


@dataclass
class ContextRead:
    """What a campaign's sources read of the context: problems found from the schema
    alone, the reads that need the store to say more, and the template files read."""

    problems: list[Problem] = field(default_factory=list)
    printed: list[Printed] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)
    unknown_names: set[str] = field(default_factory=set)
    files: list[str] = field(default_factory=list)

    def errors(self) -> list[Problem]:
        return [p for p in self.problems if not p.warning]


@dataclass(frozen=True)
class _Source:
    """One template, subject or intro: where its lines are, and what it renders to for
    the synthetic customer (subjects and intros only)."""

    text: str
    where: Callable[[int], tuple[str | None, int | None]]
    field: str | None = None
    intro: str | None = None
    sample: str | None = None
    # A part included or imported with context sees the names its includer binds (a loop
    # variable, a `set`): a name unknown here may be one of those.
    part: bool = False


def _campaign_sources(path: str, data: object, version: Version,
                      context: dict[str, Any]) -> list[_Source]:
    """The subjects, reminder subjects and intros of a campaign file, at their lines, with
    what each renders to for CONTEXT (empty when it cannot: check_rendering says why)."""
    def at(*loc: str | int) -> Callable[[int], tuple[str | None, int | None]]:
        line = line_of(data, loc)
        return lambda _: (path, line)

    def rendered(compiled: CompiledTemplate) -> str:
        try:
            return compiled.render(context).strip()
        except RenderError:
            return ""

    found = [_Source(subject.source, at("subject", index), "subject",
                     sample=rendered(subject))
             for index, subject in enumerate(version.subjects)]
    found += [_Source(subject.source, at("reminder", "subject", index), "reminder.subject",
                      sample=rendered(subject))
              for index, subject in enumerate(version.reminder_subjects)]
    found += [_Source(intro.source, at("intros", segment), f"intros.{segment}",
                      intro=segment, sample=rendered(intro))
              for segment, intro in version.intros]
    return found


def read_context(root: Path, settings: Settings, slug: str, campaign: Campaign,
                 now: datetime, *, version: Version | None = None) -> ContextRead:
    """Check every context value the campaign's template (with its layouts, includes,
    `.txt` twin and imported parts), subjects and intros read against the schema."""
    from mailer.mail.context import build_context
    from mailer.mail.links import PREVIEW_KEY
    from mailer.mail.sandbox import context_uses, environment, marked_template
    from mailer.mail.templates import TemplateFolder, lines_of, origin
    from mailer.mail.version import compile_version

    read = ContextRead()
    folder = TemplateFolder(root / "templates")
    path = f"campaigns/{slug}.yaml"
    try:
        html = marked_template(campaign.template, folder, read.files)
        version = version or compile_version(slug, campaign, root / "templates")
        context = build_context(synthetic_customer(), None, settings=settings, slug=slug,
                                campaign=campaign, now=now, key=PREVIEW_KEY, message="preview",
                                survey=version.survey)
        sources = [_Source(html, lambda line: origin(html, line))]
        text_name = Path(campaign.template).with_suffix(".txt").name
        if folder.path(text_name).is_file():
            read.files.append(f"templates/{text_name}")
            sources.append(_Source(folder.read(text_name), lines_of(f"templates/{text_name}")))
        for name, part in version.parts.items():
            read.files.append(f"templates/{name}")
            sources.append(_Source(part, lines_of(f"templates/{name}"), part=True))
        data = load_yaml((root / path).read_text(encoding="utf-8"), path)
        sources += _campaign_sources(path, data, version, context)
    except RenderError:  # check_rendering reports it
        return read
    env = environment()
    for source in sources:
        for use in context_uses(env, source.text):
            _check_use(read, source, use, context)
    return read


def _check_use(read: ContextRead, source: _Source, use: Use, context: dict[str, Any]) -> None:
    """Note what READ must say about USE: an unknown variable, an attribute to look up
    in the store, or an optional value a subject or intro prints without a default."""
    from mailer.mail.context import ALWAYS, CAMPAIGN, CONTEXT_SCHEMA, has, look_up

    known = look_up(use.path)
    where, line = source.where(use.line)
    path = where or "templates"
    if isinstance(known, str):
        if source.part and use.path[0] not in CONTEXT_SCHEMA:
            read.problems.append(Problem(
                path, line, source.field, f"{known}; fine if the template including this "
                "one sets it (a loop variable, a `set`)", warning=True))
            return
        read.problems.append(Problem(path, line, source.field, known))
        if use.path[0] not in CONTEXT_SCHEMA:
            read.unknown_names.add(use.path[0])
        return
    if known.open:
        read.attributes.append(Attribute(path, line, source.field, known.key[-1]))
    if known.key == ("links", "survey") and not use.guarded and not has(context, known.key):
        # every mail would fail to render: the links exist only for a campaign's survey
        read.problems.append(Problem(path, line, source.field, "links.survey is not set for "
                                     "this campaign: it names no survey (survey: NAME)"))
        return
    if source.sample is None or source.field is None or use.guarded \
            or known.presence == ALWAYS:
        return
    if known.presence == CAMPAIGN:
        if not has(context, known.key):
            read.problems.append(Problem(
                path, line, source.field, f"{'.'.join(known.key)} is not set for this "
                f"campaign: every reader would get {_quoted(source)}", warning=True))
        return
    read.printed.append(Printed(path, line, source.field, known.key, source.intro,
                                source.sample))


def _quoted(source: _Source | Printed) -> str:
    if source.sample:
        return f'"{source.sample}"'
    return "an empty subject" if source.intro is None else "an empty intro"


@dataclass
class Readers:
    """Who reads a campaign's subject (its segment, key None) and each intro (the members
    who get it), and how many of them lack each value asked about."""

    total: Counter[str | None] = field(default_factory=Counter)
    missing: Counter[tuple[str | None, tuple[str, ...]]] = field(default_factory=Counter)
    attributes: set[str] = field(default_factory=set)  # the attribute names they have


READERS_BATCH = 500


def count_readers(engine: Engine, settings: Settings, specs: dict[str, SegmentSpec],
                  slug: str, campaign: Campaign, now: datetime,
                  keys: set[tuple[str, ...]]) -> Readers:
    """Build each segment member's context as a mail would (in batches) and count who
    lacks each of KEYS, by the intro they would get."""
    from mailer.mail.context import build_context, has, load_customers, load_stats
    from mailer.mail.links import PREVIEW_KEY
    from mailer.mail.version import first_intro
    from mailer.segments.runner import count, member_ids, memberships, reading, scope_for

    scope = scope_for(settings, now, engine)
    size = count(engine, specs, campaign.segment, scope)
    ids = member_ids(engine, specs, campaign.segment, scope, limit=size) if size else []
    intros = list(campaign.intros)
    readers = Readers()
    for start in range(0, len(ids), READERS_BATCH):
        batch = ids[start:start + READERS_BATCH]
        with reading(engine) as conn:
            people = load_customers(conn, batch)
            stats = load_stats(conn, batch, now=now, currency=settings.store.currency)
        groups = memberships(engine, specs, intros, scope, batch)
        for customer_id in batch:
            context = build_context(people[customer_id], stats.get(customer_id),
                                    settings=settings, slug=slug, campaign=campaign, now=now,
                                    key=PREVIEW_KEY, message="preview")
            intro = first_intro(intros, groups[customer_id])
            if intro is not None:
                context["intro"] = intro
            readers.attributes.update(context["customer"].get("attributes", {}))
            for audience in {None, intro}:
                readers.total[audience] += 1
                readers.missing.update((audience, key) for key in keys
                                       if not has(context, key))
    return readers


def unhandled(engine: Engine | None, settings: Settings, specs: dict[str, SegmentSpec],
              slug: str, campaign: Campaign, read: ContextRead,
              now: datetime) -> list[Problem]:
    """Warnings for the attributes the campaign's segment does not have and for the
    optional values its subjects and intros print without a default: with a store, how
    many readers lack each; without, what one who lacks it gets."""
    from mailer.core.suggest import did_you_mean

    if not read.printed and not read.attributes:
        return []
    readers = None
    if engine is not None:
        readers = count_readers(engine, settings, specs, slug, campaign, now,
                                {printed.key for printed in read.printed})
        if not readers.total[None]:
            readers = None  # an empty segment: nothing to count or compare with
    problems, unknown = [], set()
    for attribute in read.attributes:
        if readers is not None and attribute.name not in readers.attributes:
            unknown.add(attribute.name)
            whose = "its" if attribute.path == f"campaigns/{slug}.yaml" else f"{slug}'s"
            problems.append(Problem(
                attribute.path, attribute.line, attribute.field,
                f"unknown attribute customer.attributes.{attribute.name}: none of the "
                f"{readers.total[None]:,} customers in {whose} segment has it"
                + did_you_mean(attribute.name, readers.attributes), warning=True))
    for printed in read.printed:
        if printed.key[:2] != ("customer", "attributes") or printed.key[2] not in unknown:
            problems.append(Problem(printed.path, printed.line, printed.field,
                                    _who_gets(printed, readers), warning=True))
    return problems


def _who_gets(printed: Printed, readers: Readers | None) -> str:
    """'26 of 683 customers in its segment have no first_name and would get ", 20% off"'."""
    label = ".".join(printed.key[1:] if printed.key[0] == "customer" else printed.key)
    gets = _quoted(printed)
    if readers is None:
        return f"a customer with no {label} would get {gets}"
    audience = "in its segment" if printed.intro is None else "who get this intro"
    total = readers.total[printed.intro]
    missing = readers.missing[(printed.intro, printed.key)]
    if not total:
        return f"a customer with no {label} would get {gets}"
    if not missing:
        return (f"none of the {total:,} customers {audience} lacks {label} today; one who "
                f"does would get {gets}")
    return (f"{missing:,} of {total:,} customers {audience} {'has' if missing == 1 else 'have'}"
            f" no {label} and would get {gets}")
