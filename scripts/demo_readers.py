"""The demo's recipients at work: `make demo` runs this against `mailer serve` and the
mails the sink caught. Forty readers open a Black Friday mail and a
few click its first link, a few answer the feedback survey on its page (the link's
GET, which records nothing, then the page's one POST; one of them unhappy, overall
2 of 5), one unsubscribes with one click (the RFC 8058 POST a mailbox provider sends).
Only the links' paths are used, so the service may listen on any port.

    python scripts/demo_readers.py OUTBOX PORT
"""

from __future__ import annotations

import email
import email.policy
import http.client
import re
import sys
import urllib.parse
from email.message import EmailMessage
from pathlib import Path


def _mails(outbox: Path) -> list[EmailMessage]:
    found = []
    for file in sorted((outbox / "new").iterdir()):
        message = email.message_from_bytes(file.read_bytes(), policy=email.policy.default)
        if isinstance(message, EmailMessage):
            found.append(message)
    return found


def _html(message: EmailMessage) -> str:
    part = message.get_body(("html",))
    return str(part.get_content()) if part is not None else ""


def _request(port: int, method: str, url: str, body: str = "") -> int:
    path = urllib.parse.urlsplit(url).path
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
    conn.request(method, path, body=body or None, headers=headers)
    status = conn.getresponse().status
    conn.close()
    return status


# What the demo's survey readers answer (surveys/feedback.yaml); the second is unhappy.
SURVEY_ANSWERS = [
    {"overall": "5", "delivery": "4", "recommend": "9", "found_us": "friend",
     "comment": "Quick delivery, lovely box."},
    {"overall": "2", "delivery": "1", "recommend": "3", "found_us": "search",
     "comment": "Arrived a week late and the box was crushed."},
    {"overall": "4", "delivery": "4", "recommend": "8"},
    {"overall": "5", "recommend": "10", "found_us": "social"},
]


def main(outbox: Path, port: int) -> None:
    mails = _mails(outbox)
    promotion = [m for m in mails if "30%" in str(m["Subject"]) and "/c/" in _html(m)]
    opened = clicked = 0
    for number, reader in enumerate(promotion[:40]):  # forty readers open, a few click
        html = _html(reader)
        pixel = re.search(r'<img src="([^"]+/o/[^"]+)"', html)
        if pixel and _request(port, "GET", pixel.group(1)) == 200:
            opened += 1
        link = re.search(r'href="([^"]+/c/[^"]+)"', html)
        if link and number % 3 == 0 and _request(port, "GET", link.group(1)) == 302:
            clicked += 1
    print(f"{opened} readers opened a Black Friday mail, {clicked} clicked through")
    # the order survey's mails (the renewal mails ask another survey)
    surveyed = [m for m in mails if "/s/" in _html(m)
                and "how was your order" in str(m["Subject"]).lower()]
    for reader, answers in zip(surveyed, SURVEY_ANSWERS, strict=False):
        links = re.findall(r'href="([^"]+/s/[^"]+)"', _html(reader))
        first = int(answers["overall"])
        opened = _request(port, "GET", links[first - 1])  # the mail's "overall" button
        body = urllib.parse.urlencode(answers)
        status = _request(port, "POST", links[first - 1], body)
        said = ", ".join(f"{k} {v}" for k, v in answers.items() if k != "comment")
        print(f"{reader['To']} answered the feedback survey ({said}"
              f"{', a comment' if answers.get('comment') else ''}): page HTTP {opened}, "
              f"answers HTTP {status}")
    if not surveyed:
        print("no feedback survey mail in the outbox")
    leaver = promotion[-1] if promotion else (mails[0] if mails else None)
    if leaver is not None:
        url = str(leaver["List-Unsubscribe"]).split("<", 1)[1].split(">", 1)[0]
        status = _request(port, "POST", url, "List-Unsubscribe=One-Click")
        print(f"unsubscribed with one click from {leaver['Subject']!r}: HTTP {status}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
