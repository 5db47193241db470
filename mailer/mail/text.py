"""The text part of a mail: an HTML template's text twin, made once at compile time."""

from __future__ import annotations

import re

from mailer.mail.templates import with_tags_parked


def html_to_text(markup: str) -> str:
    """A plain-text version of an HTML mail: paragraphs kept, links as "text (url)"."""
    from html.parser import HTMLParser

    class _Text(HTMLParser):
        def __init__(self) -> None:
            super().__init__(convert_charrefs=True)
            self.out: list[str] = []
            self.href: list[str | None] = []
            self.skip = 0

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag in ("style", "script", "head", "title"):
                self.skip += 1
            elif tag == "a":
                self.href.append(dict(attrs).get("href"))
                self.out.append("\x00")
            elif tag in ("br",):
                self.out.append("\n")
            elif tag in ("p", "div", "tr", "h1", "h2", "h3", "li", "table"):
                self.out.append("\n\n" if tag in ("p", "h1", "h2", "h3") else "\n")

        def handle_endtag(self, tag: str) -> None:
            if tag in ("style", "script", "head", "title"):
                self.skip = max(0, self.skip - 1)
            elif tag == "a" and self.href:
                href = self.href.pop()
                start = len(self.out) - 1 - self.out[::-1].index("\x00")
                label = "".join(self.out[start + 1:]).strip()
                self.out[start:] = [label if not href or href == label or href.startswith("#")
                                    else f"{label} ({href})" if label else href]
            elif tag in ("p", "h1", "h2", "h3", "tr", "li"):
                self.out.append("\n")

        def handle_data(self, data: str) -> None:
            if not self.skip:
                self.out.append(re.sub(r"\s+", " ", data))

    parser = _Text()
    parser.feed(markup)
    text = "".join(parser.out).replace("\x00", "")
    lines = [line.strip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def text_template(source: str) -> str:
    """The text twin of an HTML template source, made once at compile time: the HTML is
    turned into text with the Jinja tags parked, so per mail only values are filled in
    (converting each rendered mail would cost more than rendering it)."""
    return with_tags_parked(source, html_to_text)
