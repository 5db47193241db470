"""Open and click tracking in a rendered mail (DESIGN §6). Pure: keys are passed in.

Every `http(s)` link of the HTML part becomes a signed click link, so the redirect
can only ever lead where the mail pointed (no open redirect); the store's own
signed links (unsubscribe, preferences, browser, ratings) and `mailto:` stay as
they are. An open pixel goes before `</body>`. The text part is left alone: a
plain-text reader sees real URLs.

Two forms of click link (docs/engagement.md):

- `/c/<click token>/<n>`: a link the campaign version holds (`held_links`: its
  templates' literal URLs, and those made only of `store` and `campaign` values).
  The mail's one click token (purpose `clicks`) names the version; `n` is the
  link's place in the version's list. One signature a mail, however many links.
- `/c/<token>`: any other link (a personal URL: a coupon code, a customer id, a
  product of the reader's recommendations), its target signed into its own token
  (purpose `click`). Mails sent before the first form keep working this way.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping
from typing import Any

import jinja2
from jinja2 import meta

from mailer.mail.links import signed_url

_HREF = re.compile(r'(<a\b[^>]*?\bhref=")(https?://[^"]+)(")', re.IGNORECASE)
# an <a href> of a template's source, Jinja and all
_SOURCE_HREF = re.compile(r'<a\b[^>]*?\bhref="([^"]*)"', re.IGNORECASE)
_URL = re.compile(r"https?://[^\s\"'<>]+")
# the context names that are the same for every mail of a version (mailer.yaml, the
# campaign file): a link made of these alone is held by the version
VERSION_NAMES = frozenset({"store", "campaign"})


def held_links(sources: Iterable[str], values: Mapping[str, Any],
               env: jinja2.Environment) -> list[str]:
    """The links a campaign version holds, in the order of SOURCES (its HTML template,
    then the parts it imports), each once: every `<a href>` that is a literal `http(s)`
    URL or a Jinja expression of VALUES' names (VERSION_NAMES) alone, rendered with
    them in ENV. Anything else a mail prints is personal and signs its own link."""
    found: dict[str, None] = {}
    for source in sources:
        for match in _SOURCE_HREF.finditer(source):
            written = match.group(1)
            if "{" in written:
                if "{%" in written or "{#" in written:
                    continue
                try:
                    parsed = env.parse(written)
                    if not meta.find_undeclared_variables(parsed) <= VERSION_NAMES:
                        continue
                    written = env.from_string(written).render(values)
                except (jinja2.TemplateError, ArithmeticError, TypeError, ValueError,
                        LookupError, AttributeError):
                    continue  # not a link this version can know
            target = html.unescape(written)
            if _URL.fullmatch(target):
                found.setdefault(target, None)
    return list(found)


_WRITTEN: dict[int, tuple[Mapping[str, int], dict[str, int]]] = {}


def _as_written(held: Mapping[str, int]) -> dict[str, int]:
    """HELD keyed by each link as an href of the compiled HTML writes it (`&` as
    `&amp;`): most held links are found without html.unescape, 2 µs a link with a query.
    Made once per version's mapping (Version.held is one dict a version)."""
    if not held:
        return {}
    hit = _WRITTEN.get(id(held))
    if hit is not None and hit[0] is held:
        return hit[1]
    if len(_WRITTEN) >= 64:
        _WRITTEN.clear()
    written = {target.replace("&", "&amp;"): number for target, number in held.items()
               if "&amp;" not in target}  # a target with a literal "&amp;" takes the long way
    _WRITTEN[id(held)] = (held, written)
    return written


def tracked(body: str, *, base_url: str, customer: str, campaign: str, message: str,
            key: str, clicks: bool = True, opens: bool = True,
            held: Mapping[str, int] | None = None, version: int | None = None) -> str:
    """BODY (an HTML part) with its links turned into click links and an open pixel.
    HELD: the version's links and their numbers (Version.held), VERSION its id: a held
    link becomes `/c/<click token>/<n>`, the click token signed once for the mail."""
    own = base_url.rstrip("/") + "/"
    numbers = held if held and version is not None and version >= 0 else {}
    written = _as_written(numbers)
    prefix: list[str] = []  # the mail's click link prefix, signed at its first use

    def wrap(match: re.Match[str]) -> str:
        target = match.group(2)
        number = written.get(target)  # a held link as the compiled HTML writes it
        if number is None:
            if "&" in target:  # html.unescape costs more than the test
                target = html.unescape(target)
            number = numbers.get(target)
        if target.startswith(own):
            return match.group(0)
        if number is not None:
            if not prefix:
                prefix.append(signed_url(base_url, "clicks", customer, campaign, message, key,
                                         str(version)) + "/")
            url = f"{prefix[0]}{number}"
        else:
            url = signed_url(base_url, "click", customer, campaign, message, key, target)
        return f"{match.group(1)}{url}{match.group(3)}"

    if clicks:
        body = _HREF.sub(wrap, body)
    if opens:
        pixel = signed_url(base_url, "open", customer, campaign, message, key)
        tag = (f'<img src="{pixel}" width="1" height="1" alt="" '
               'style="display:block;border:0;width:1px;height:1px">')
        # compiled templates write tags in lower case (lxml); lower() copies the whole part
        at = body.rfind("</body>")
        if at < 0:
            at = body.lower().rfind("</body>")
        body = body + tag if at < 0 else body[:at] + tag + body[at:]
    return body
