"""A campaign version compiled once, and the mails rendered from it (DESIGN §3, §4.4).

`compile_version` flattens and inlines the HTML template, compiles the optional
`.txt` twin, the subjects and the intros, and reads the survey the campaign names
(surveys/NAME.yaml): once per campaign version. `compose`
then fills one recipient's context in and returns the finished parts; only
values change per mail.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import jinja2

from mailer.config.campaign import Campaign
from mailer.config.settings import SETTINGS_FILE, Settings, parse_settings
from mailer.config.survey import Survey
from mailer.core.occurrences import is_reminder
from mailer.mail.context import build_context, version_values
from mailer.mail.render import CompiledTemplate, add_parts, compile_html, compile_source
from mailer.mail.sandbox import environment
from mailer.mail.templates import TemplateFolder, VersionLoader, lines_of
from mailer.mail.text import text_template
from mailer.mail.tracking import held_links
from mailer.store.customers import Profile
from mailer.store.ledger import Row


@dataclass(frozen=True)
class Version:
    slug: str
    spec: Campaign
    html: CompiledTemplate
    text: CompiledTemplate
    subjects: tuple[CompiledTemplate, ...]
    intros: tuple[tuple[str, CompiledTemplate], ...]  # (segment or "default", intro) in file order
    reminder_subjects: tuple[CompiledTemplate, ...] = ()  # a reminder has its own
    # templates loaded by import, from and other tags the flattener leaves (name: source)
    parts: Mapping[str, str] = field(default_factory=dict)
    survey: Survey | None = None  # the survey the campaign names, as its file said then
    survey_source: str | None = None  # that file as written (the definition stores it)
    # the links the version holds (mailer.mail.tracking.held_links), as its definition
    # stores them: the click links `/c/<click token>/<n>` of its mails number these
    links: tuple[str, ...] = ()

    @cached_property
    def held(self) -> dict[str, int]:
        """Each held link's number n."""
        return {target: number for number, target in enumerate(self.links)}

    def subject_for(self, variant: int, occurrence: str) -> CompiledTemplate:
        """The subject template of a variant; a reminder (a promotion's, an abandoned
        checkout's) uses its own."""
        if is_reminder(occurrence) and self.reminder_subjects:
            return self.reminder_subjects[variant % len(self.reminder_subjects)]
        return self.subjects[variant % len(self.subjects)]


@dataclass(frozen=True)
class Composed:
    subject: str
    html: str
    text: str
    intro: str | None  # the intro segment that matched, if any
    variant: int


def compile_version(slug: str, spec: Campaign, templates: Path) -> Version:
    """Compile everything a campaign's mails share; RenderError names file and line.
    Every template is read through one TemplateFolder: nothing outside TEMPLATES."""
    env: jinja2.Environment = environment()
    folder = TemplateFolder(templates)
    folder.path(spec.template, where=(f"campaigns/{slug}.yaml", None))
    html = compile_html(env, spec.template, templates)
    text_name = Path(spec.template).with_suffix(".txt").name
    where = f"templates/{text_name}"
    if folder.path(text_name, where=(where, None)).is_file():
        text_source = folder.read(text_name, where=(where, None))
        add_parts(env, text_source, folder, lines_of(where))
    else:  # made from the HTML once; `.txt` in the name keeps autoescaping off
        text_name = f"{spec.template} (text).txt"
        text_source = text_template(html.source)
    text = compile_source(env, text_source, f"templates/{text_name}")
    version = _assemble(env, slug, spec, html, text)
    for compiled in (*version.subjects, *(intro for _, intro in version.intros),
                     *version.reminder_subjects):
        add_parts(env, compiled.source, folder, lines_of(compiled.name))
    assert isinstance(env.loader, VersionLoader)
    survey, survey_source = None, None
    if spec.survey is not None:  # the workspace is the templates folder's parent
        from mailer.config.workspace import read_survey

        survey, survey_source = read_survey(templates.parent, spec.survey)
    return _with_parts(version, env.loader.parts, survey, survey_source)


def _with_parts(version: Version, parts: Mapping[str, str], survey: Survey | None = None,
                survey_source: str | None = None) -> Version:
    return replace(version, parts=dict(parts), survey=survey, survey_source=survey_source)


def _assemble(env: jinja2.Environment, slug: str, spec: Campaign, html: CompiledTemplate,
              text: CompiledTemplate) -> Version:
    where = f"campaigns/{slug}.yaml"
    subjects = tuple(compile_source(env, subject, f"{where} subject")
                     for subject in spec.subject)
    intros = tuple((segment, compile_source(env, intro, f"{where} intros.{segment}"))
                   for segment, intro in spec.intros.items())
    reminder = tuple(compile_source(env, subject, f"{where} reminder.subject")
                     for subject in (spec.reminder.subject if spec.reminder else ()))
    return Version(slug=slug, spec=spec, html=html, text=text, subjects=subjects, intros=intros,
                   reminder_subjects=reminder)


def definition(version: Version, root: Path) -> dict[str, Any]:
    """What a worker needs to render the version's mails, whatever its own files say:
    the campaign file and mailer.yaml as written, and the flattened, inlined templates.
    Stored in campaign_versions, keyed by its content hash."""
    settings_source = (root / SETTINGS_FILE).read_text(encoding="utf-8")
    links = version_links(version, parse_settings(settings_source)[0])
    return {"campaign": version.slug,
            "campaign_source": (root / "campaigns" / f"{version.slug}.yaml").read_text(
                encoding="utf-8"),
            "settings_source": settings_source,
            "html": version.html.source, "text": version.text.source,
            "text_name": version.text.name,
            # only when there are any: the content hash of other versions stays the same
            **({"parts": dict(version.parts)} if version.parts else {}),
            # the survey as its file was: a response stores this version's hash, and an
            # edited question makes a new version (campaigns without one keep their hash)
            **({"survey": {"name": version.spec.survey, "source": version.survey_source}}
               if version.survey_source is not None else {}),
            # what the click links of its mails number (versions without any keep their hash)
            **({"links": links} if links else {})}


def version_links(version: Version, settings: Settings) -> list[str]:
    """The links VERSION holds under SETTINGS (mailer.mail.tracking.held_links)."""
    sources = [version.html.source, *(version.parts[name] for name in sorted(version.parts))]
    return held_links(sources, version_values(settings, version.slug, version.spec),
                      version.html.template.environment)


def from_definition(stored: dict[str, Any]) -> tuple[Version, Settings]:
    """The version and the settings a stored definition was planned with."""
    from mailer.config.campaign import parse_campaign
    from mailer.config.yamlsrc import load_yaml
    from mailer.core.errors import ConfigError

    slug = str(stored["campaign"])
    path = f"campaigns/{slug}.yaml"
    spec, problems = parse_campaign(load_yaml(stored["campaign_source"], path), path)
    if spec is None:
        raise ConfigError(problems)
    settings, _ = parse_settings(stored["settings_source"])
    parts = {str(name): str(source) for name, source in stored.get("parts", {}).items()}
    env = environment(parts=parts)  # renders what the version carries, never a file
    html = compile_source(env, stored["html"], f"templates/{spec.template}")
    text = compile_source(env, stored["text"], stored["text_name"])
    survey, survey_source = None, None
    if "survey" in stored:
        from mailer.config.workspace import parse_survey_source

        survey_source = str(stored["survey"]["source"])
        survey = parse_survey_source(survey_source, f"surveys/{stored['survey']['name']}.yaml")
    version = _with_parts(_assemble(env, slug, spec, html, text), parts, survey,
                          survey_source)
    links = tuple(str(target) for target in stored.get("links", ()))
    return (replace(version, links=links) if links else version), settings


def _tidy(text: str) -> str:
    """Blank lines left by template tags folded, as a person would write the text.
    String methods, not regular expressions: these scan every character at about
    30 ns each, which made this a fifth of a mail's cost; and `replace` on the whole
    text rather than a split into lines (a rendered text ends a few lines in a space)."""
    text = text.strip()
    # each pass takes one space or tab off the end of every line that has one; a line
    # with a long run of them leaves it to the split
    for _ in range(3):
        if " \n" not in text and "\t\n" not in text:
            break
        text = text.replace(" \n", "\n").replace("\t\n", "\n")
    else:
        text = "\n".join([line.rstrip(" \t") for line in text.split("\n")])
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text + "\n"


def pick_intro(version: Version, member_of: set[str]) -> str | None:
    """The first intro whose segment the customer is in, else `default`, else none."""
    return first_intro([segment for segment, _ in version.intros], member_of)


def first_intro(segments: Iterable[str], member_of: set[str]) -> str | None:
    """Of intro SEGMENTS in file order, the first the customer is in, else `default`."""
    for segment in segments:
        if segment == "default" or segment in member_of:
            return segment
    return None


def compose(version: Version, context: dict[str, Any], *, variant: int,
            member_of: set[str], occurrence: str = "") -> Composed:
    """Render one mail: the intro first (templates print it as `intro`), then the rest."""
    chosen = pick_intro(version, member_of)
    intros = dict(version.intros)
    values = dict(context)
    started = time.monotonic()  # the mail's parts share its CPU budget
    if chosen is not None:
        values["intro"] = intros[chosen].render(values, started).strip()
    subject = version.subject_for(variant, occurrence).render(values, started).strip()
    html = version.html.render(values, started)
    text = _tidy(version.text.render(values, started))
    return Composed(subject=subject, html=html, text=text, intro=chosen,
                    variant=variant % len(version.subjects))


def compile_subject_only(version: Version, context: dict[str, Any], variant: int,
                         occurrence: str = "") -> str:
    """The subject of one variant for one context (intros are not needed for it)."""
    return version.subject_for(variant, occurrence).render(context).strip()


def compose_row(version: Version, row: Row, person: Profile, stats: dict[str, Any] | None, *,
                settings: Settings, coupon: tuple[str, datetime] | None, now: datetime,
                key: str, checkout: dict[str, Any] | None = None,
                product: dict[str, Any] | None = None
                ) -> tuple[Composed, dict[str, Any]]:
    """A ledger row's mail as its reader gets it at NOW, and the context it was made from:
    what the sender sends and the browser view shows again."""
    context = build_context(
        person, stats, settings=settings, slug=row.campaign, campaign=version.spec, now=now,
        key=key, message=str(row.id), coupon_code=coupon[0] if coupon else None,
        coupon_expires_at=coupon[1] if coupon else None, survey=version.survey,
        occurrence=row.occurrence, checkout=checkout, product=product)
    mail = compose(version, context, variant=row.subject_variant, occurrence=row.occurrence,
                   member_of={row.intro} if row.intro else set())
    return mail, context
