"""The MIME message: every header parsed back as a mail client would (DESIGN §6)."""

from __future__ import annotations

import html
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default

import pytest

from mailer.mail.message import SUBJECT_LIMIT, Mail, build, message_id

MAIL = Mail(
    sender="Pine & Co <hello@shop.example>",
    recipient_name="Zoë Müller",
    recipient_email="zoe@example.com",
    subject="Zoë, 48 hours only: 30% off — 🎁",
    html="<p>Hello Zoë</p>",
    text="Hello Zoë\n",
    date=datetime(2026, 11, 27, 8, 0, tzinfo=UTC),
    message_id=message_id(campaign="black-friday", occurrence="main", customer="C1",
                          domain="shop.example"),
    unsubscribe_url="https://mail.shop.example/u/abc.def",
    unsubscribe_mailto="unsubscribe@shop.example",
    reply_to="care@shop.example",
)


def parse(data: bytes) -> EmailMessage:
    parsed = message_from_bytes(data, policy=default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_every_header_parses_back() -> None:
    data = build(MAIL)
    mail = parse(data)
    assert mail["From"] == "Pine & Co <hello@shop.example>"
    assert mail["To"] == "Zoë Müller <zoe@example.com>"
    assert mail["Reply-To"] == "care@shop.example"
    assert mail["Subject"] == "Zoë, 48 hours only: 30% off — 🎁"
    assert mail["Date"] == "Fri, 27 Nov 2026 08:00:00 +0000"
    assert mail["Message-ID"] == MAIL.message_id
    assert mail["List-Unsubscribe"] == ("<https://mail.shop.example/u/abc.def>, "
                                        "<mailto:unsubscribe@shop.example?subject=unsubscribe>")
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert mail.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in mail.iter_parts()] == ["text/plain", "text/html"]
    text = mail.get_body(("plain",))
    assert text is not None and text.get_content() == "Hello Zoë\r\n"
    # RFC 2047 on the wire, CRLF line endings, no line over 998 octets
    assert b"=?utf-8?" in data
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))
    assert b"\n" not in data.replace(b"\r\n", b"")


def test_message_id_is_stable_for_its_row() -> None:
    again = message_id(campaign="black-friday", occurrence="main", customer="C1",
                       domain="shop.example")
    other = message_id(campaign="black-friday", occurrence="main", customer="C2",
                       domain="shop.example")
    assert again == MAIL.message_id != other


def test_newlines_in_data_never_make_headers() -> None:
    hostile = Mail(**{**MAIL.__dict__,
                      "recipient_name": "Eve\r\nBcc: everyone@example.org",
                      "subject": "Hi\nX-Injected: yes\r\n\r\nbody"})
    mail = parse(build(hostile))
    assert mail.get_all("To") == ['"Eve Bcc: everyone@example.org" <zoe@example.com>']
    assert mail["Bcc"] is None and mail["X-Injected"] is None
    assert mail["Subject"] == "Hi X-Injected: yes body"


def test_long_subjects_fold_under_998_octets_and_stop_at_the_limit() -> None:
    data = build(Mail(**{**MAIL.__dict__, "subject": "Sale " * 400}))
    assert all(len(line) <= 78 for line in data.partition(b"\r\n\r\n")[0].split(b"\r\n"))
    assert parse(data)["Subject"] == ("Sale " * 400)[:SUBJECT_LIMIT - 1].rstrip() + "…"


def parts(data: bytes) -> dict[str, tuple[str, str]]:
    """Each part's subtype: (its Content-Transfer-Encoding, its decoded content)."""
    mail = parse(data)
    return {part.get_content_subtype(): (str(part["Content-Transfer-Encoding"]),
                                         str(part.get_content()))
            for part in mail.iter_parts()}


def test_ascii_parts_go_7bit_and_the_html_writes_non_ascii_as_references() -> None:
    data = build(Mail(**{**MAIL.__dict__, "html": "<p>Hello Zoë — 20% off</p>\n",
                         "text": "Hello there\n"}))
    got = parts(data)
    assert got["plain"] == ("7bit", "Hello there\r\n")
    assert got["html"] == ("7bit", "<p>Hello Zo&#235; &#8212; 20% off</p>\r\n")
    assert html.unescape(got["html"][1]) == "<p>Hello Zoë — 20% off</p>\r\n"
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))
    assert not any(byte > 127 for byte in data)


def test_lines_of_998_octets_go_as_7bit() -> None:
    html_part = ("<p>short</p>\n" * 300 + "y" * 998 + "\n") * 3
    encoding, content = parts(build(Mail(**{**MAIL.__dict__, "html": html_part})))["html"]
    assert encoding == "7bit" and content.replace("\r\n", "\n") == html_part


@pytest.mark.parametrize(("html_part", "why"), [
    ('<style>q:before { content: "»" }</style><p>Zoë</p>\n', "CSS does not read references"),
    ("<p>" + "x" * 1200 + "</p>\n", "a line over 998 octets"),
    ("<p>short</p>\n" * 300 + "y" * 999 + "\n<p>end</p>\n", "one line of 999 after many"),
    ("<p>a\x00b\x0bc\rd</p>\n", "control characters"),
])
def test_what_7bit_cannot_carry_goes_quoted_printable_and_parses_back(html_part: str,
                                                                      why: str) -> None:
    data = build(Mail(**{**MAIL.__dict__, "html": html_part}))
    encoding, content = parts(data)["html"]
    assert encoding == "quoted-printable", why
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))
    if "\r" not in html_part:
        assert content.replace("\r\n", "\n") == html_part
    # the text part has non-ASCII ("Zoë"): quoted-printable too
    assert parts(data)["plain"] == ("quoted-printable", "Hello Zoë\r\n")
