"""The Outbox page's mails (`mailer console --outbox DIR`): a `mailer sink` Maildir read as
Mailpit shows it: the list (newest first), a search, one mail's parts, headers and raw
source, and the checks a marketer wants before a campaign goes out.

Read only: the console never moves, flags or deletes a file of the Maildir. A mail is
named by its file name, looked up among the folder's entries (never joined as a path
from the request). Headers are parsed once per file and kept (files do not change).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email import message_from_bytes
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.policy import default
from email.utils import parsedate_to_datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from mailer.core.errors import NotFoundError

PAGE = 50  # mails a list shows
MAX_MAIL = 20 * 1024 * 1024  # a caught mail bigger than this is not shown
_NAME = re.compile(r"[A-Za-z0-9._,:=+-]{1,255}")  # what a Maildir file name is made of


@dataclass(frozen=True)
class Caught:
    name: str  # the file's name in new/ or cur/
    date: str | None  # the Date header, ISO 8601
    sender: str
    to: str
    subject: str
    size: int

    def as_json(self) -> dict[str, Any]:
        return {"id": self.name, "date": self.date, "from": self.sender, "to": self.to,
                "subject": self.subject, "size": self.size}


class Outbox:
    """A Maildir's caught mails."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._seen: dict[str, Caught] = {}

    def _files(self) -> dict[str, Path]:
        files: dict[str, Path] = {}
        for sub in ("new", "cur"):
            place = self.folder / sub
            if place.is_dir():
                for path in place.iterdir():
                    if path.is_file() and _NAME.fullmatch(path.name):
                        files[path.name] = path
        return files

    def _caught(self, name: str, path: Path) -> Caught:
        found = self._seen.get(name)
        if found is None:
            with path.open("rb") as file:
                head = BytesHeaderParser(policy=default).parse(file)
            date = None
            try:
                date = parsedate_to_datetime(str(head["Date"])).isoformat() \
                    if head["Date"] else None
            except (TypeError, ValueError):
                date = None
            found = Caught(name, date, str(head.get("From", "")), str(head.get("To", "")),
                           str(head.get("Subject", "")), path.stat().st_size)
            self._seen[name] = found
        return found

    def mails(self, search: str = "", *, offset: int = 0) -> dict[str, Any]:
        """The mails whose subject, sender or recipient holds SEARCH (any case), newest
        first, PAGE of them from OFFSET."""
        files = self._files()
        wanted = search.strip().lower()[:200]
        caught = [self._caught(name, path) for name, path in files.items()]
        if wanted:
            caught = [c for c in caught if wanted in c.subject.lower()
                      or wanted in c.sender.lower() or wanted in c.to.lower()]
        caught.sort(key=lambda c: (c.date or "", c.name), reverse=True)
        return {"q": wanted, "total": len(caught), "offset": offset, "limit": PAGE,
                "mails": [c.as_json() for c in caught[offset:offset + PAGE]]}

    def raw(self, name: str) -> bytes:
        path = self._files().get(name) if _NAME.fullmatch(name) else None
        if path is None:
            raise NotFoundError(f"no caught mail {name[:80]!r}")
        if path.stat().st_size > MAX_MAIL:
            raise NotFoundError(f"the caught mail {name[:80]!r} is over "
                                f"{MAX_MAIL // 1024 // 1024} MB")
        return path.read_bytes()

    def mail(self, name: str) -> tuple[dict[str, Any], str | None]:
        """One mail's document (headers, text, checks) and its HTML part, if any."""
        data = self.raw(name)
        message = message_from_bytes(data, policy=default)
        assert isinstance(message, EmailMessage)
        html_part, text_part = message.get_body(("html",)), message.get_body(("plain",))
        html = str(html_part.get_content()) if html_part is not None else None
        text = str(text_part.get_content()) if text_part is not None else None
        headers = [(key, str(value)) for key, value in message.items()]
        return {"id": name, "subject": str(message.get("Subject", "")),
                "from": str(message.get("From", "")), "to": str(message.get("To", "")),
                "headers": headers, "text": text, "has_html": html is not None,
                "size": len(data), "checks": checks(message, html, text)}, html


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            href = dict(attrs).get("href")
            if href and href.startswith(("http://", "https://")):
                self.links.append(href)


_URL = re.compile(r"https?://[^\s<>()\"']+")


def html_links(html: str) -> list[str]:
    parser = _Links()
    parser.feed(html)
    return parser.links


def checks(message: EmailMessage, html: str | None, text: str | None) -> list[dict[str, Any]]:
    """What a mail should have: List-Unsubscribe with an https URL and one-click, a DKIM
    signature, the same links in its HTML and its text. Each: {check, ok, detail}."""
    found: list[dict[str, Any]] = []
    unsubscribe = str(message.get("List-Unsubscribe", ""))
    https = re.findall(r"<(https://[^>]+)>", unsubscribe)
    found.append({"check": "List-Unsubscribe", "ok": bool(https),
                  "detail": "an https URL" if https else
                  ("no https URL: " + unsubscribe[:200]) if unsubscribe else "missing"})
    post = str(message.get("List-Unsubscribe-Post", ""))
    found.append({"check": "List-Unsubscribe-Post", "ok": post == "List-Unsubscribe=One-Click",
                  "detail": post or "missing (RFC 8058 one-click)"})
    dkim = message.get("DKIM-Signature")
    found.append({"check": "DKIM-Signature", "ok": dkim is not None,
                  "detail": "present" if dkim is not None else "missing"})
    if html is not None and text is not None:
        in_html, in_text = set(html_links(html)), set(_URL.findall(text))
        only_html, only_text = sorted(in_html - in_text), sorted(in_text - in_html)
        found.append({"check": "links in HTML and text", "ok": not only_html and not only_text,
                      "detail": f"{len(in_html)} in the HTML, {len(in_text)} in the text; "
                                f"{len(only_html)} only in the HTML, {len(only_text)} only "
                                "in the text",
                      "only_html": only_html[:20], "only_text": only_text[:20]})
    else:
        found.append({"check": "links in HTML and text", "ok": False,
                      "detail": "the mail has no " + ("text" if text is None else "HTML")
                                + " part"})
    return found
