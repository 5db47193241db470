"""Headers within RFC 5322 and RFC 2047 whatever the data (issue 15 item 9).

Property-based: arbitrary Unicode names and subjects, ASCII and international
addresses; each built message is parsed back with the email package's default
policy, as a mail client would.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email import message_from_bytes, message_from_string
from email.errors import NonASCIILocalPartDefect
from email.header import decode_header, make_header
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import compat32, default

import idna
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mailer.mail.message import NAME_LIMIT, SUBJECT_LIMIT, Mail, build
from tests.conftest import SETTINGS, Result, Workspace

BASE = Mail(
    sender="Pine & Co <hello@shop.example>",
    recipient_name="Zoë Müller",
    recipient_email="zoe@example.com",
    subject="Hello",
    html="<p>Hello</p>",
    text="Hello\n",
    date=datetime(2026, 11, 27, 8, 0, tzinfo=UTC),
    message_id="<0123456789abcdef@shop.example>",
    unsubscribe_url="https://mail.shop.example/u/abc.def",
    unsubscribe_mailto="unsubscribe@shop.example",
    reply_to="Care team <care@shop.example>",
)

# An RFC 2047 encoded-word as it appears on the wire (§2).
ENCODED_WORD = re.compile(rb"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def documented(value: str, limit: int) -> str:
    """What docs/delivery.md promises a reader sees: control characters made spaces,
    runs of white space one space, trimmed, and past LIMIT characters cut to LIMIT - 1
    characters (trailing white space dropped) plus an ellipsis."""
    value = re.sub(r"\s{2,}", " ", CONTROL.sub(" ", value)).strip()
    if len(value) > limit:
        value = value[:limit - 1].rstrip() + "…"
    return value


def parse(data: bytes) -> EmailMessage:
    """The message as a client reads it; a UTF-8 header (RFC 6532) is read as UTF-8 (the
    email package would otherwise keep its bytes as surrogates)."""
    head = data.partition(b"\r\n\r\n")[0]
    parsed = (message_from_bytes(data, policy=default) if head.isascii()
              else message_from_string(data.decode("utf-8"), policy=default))
    assert isinstance(parsed, EmailMessage)
    return parsed


def check_wire(data: bytes) -> None:
    """CRLF only, no line over 998 octets, every encoded-word at most 75 characters."""
    head = data.partition(b"\r\n\r\n")[0]
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))
    for word in ENCODED_WORD.findall(head):
        assert len(word) <= 75, word


def display_name(data: bytes, header: str = "To") -> str:
    """The display name as an RFC 2047 reader decodes it. Python's address parser keeps
    the white space between two adjacent encoded-words, which §6.2 says to ignore (mail
    clients do), so encoded names are decoded with email.header.decode_header."""
    raw = message_from_bytes(data, policy=compat32)[header]
    phrase = re.sub(r"\r?\n", "", str(raw)).rpartition("<")[0].strip()
    if phrase.startswith('"') or "=?" not in phrase:
        parsed = message_from_string(f"{header}: {phrase} <a@b.example>\r\n\r\n",
                                     policy=default)[header]
        return str(parsed.addresses[0].display_name) if phrase else ""
    return str(make_header(decode_header(phrase)))


def one_to(mail: EmailMessage) -> Address:
    assert len(mail.get_all("To") or []) == 1
    addresses = mail["To"].addresses
    assert len(addresses) == 1
    address: Address = addresses[0]
    return address


LOOK_ALIKES = ["=?utf-8?q?Free=20money?=", "=?UTF-8?B?SGFja2Vk?=", "a=?x?q?y?=b",
               "=?iso-8859-1?q?caf=E9?= =?utf-8?b?w6k=?="]
texts = st.one_of(st.text(), st.text(alphabet=st.characters(codec="ascii")),
                  st.text(min_size=900, max_size=1200),
                  st.sampled_from(LOOK_ALIKES),
                  st.lists(st.sampled_from(["Sale", "😀", "é", "=?", "?=", " ", "\t", "x" * 80,
                                            '"', "\\", "<a@b>", ",", ";", "(", "\u00a0",
                                            "\u0301", "Ω"]))
                  .map("".join))


@st.composite
def addresses(draw: st.DrawFn) -> str:
    """An ASCII address, one with an IDN domain, or one with a non-ASCII local part."""
    plain = draw(st.emails())
    kind = draw(st.sampled_from(["ascii", "idn", "utf8"]))
    if kind == "ascii":
        return plain
    local = plain.rsplit("@", 1)[0]
    domain = draw(st.sampled_from(["bücher.example", "例え.テスト", "xn--bcher-kva.example"]))
    if kind == "utf8":
        local = draw(st.sampled_from(["zoë", "用户", "δοκιμή"])) + "." + local.replace(".", "")
        local = local.rstrip(".")[:60]
    return f"{local}@{domain}"


def header_address(email: str) -> str:
    """The address as the To header must carry it: an ASCII local part with the domain
    in punycode, a non-ASCII one as UTF-8 (RFC 6532)."""
    local, _, domain = email.rpartition("@")
    return f"{local}@{idna.encode(domain).decode()}" if local.isascii() else email


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=texts, subject=texts, email=addresses())
@example(name="", subject="", email="a@example.com")
@example(name="=?utf-8?q?Admin?=", subject="=?utf-8?q?You_won?=", email="a@example.com")
@example(name="x" * 2000, subject="y" * 2000, email="a@example.com")
@example(name="Zoë " * 500, subject="🎁 " * 999, email="zoë@bücher.example")
def test_every_header_parses_back_within_the_rfcs(name: str, subject: str, email: str) -> None:
    data = build(Mail(**{**BASE.__dict__, "recipient_name": name,
                                   "subject": subject, "recipient_email": email}))
    check_wire(data)
    mail = parse(data)
    to = one_to(mail)
    assert to.addr_spec == header_address(email)
    assert display_name(data) == documented(name, NAME_LIMIT)
    assert mail["Subject"] == documented(subject, SUBJECT_LIMIT)
    assert len(mail.get_all("Subject") or []) == 1
    # Python's parser predates RFC 6532 and calls any UTF-8 local part a defect.
    to_defects = [d for d in mail["To"].defects if not isinstance(d, NonASCIILocalPartDefect)]
    assert not mail.defects and not to_defects and not mail["Subject"].defects


# mailer.yaml's sender: {from: "NAME <ADDRESS>"}, a name without address punctuation.
# codec="utf-8": no lone surrogates, which no UTF-8 mailer.yaml can hold (they failed the
# test at random as a UnicodeEncodeError in the email package).
sender_names = st.text(st.characters(codec="utf-8", exclude_characters='<>@,;:"()[]\\.'))


@settings(max_examples=100, deadline=None)
@given(name=sender_names, email=st.emails())
def test_sender_and_reply_to_names_obey_the_same_rules(name: str, email: str) -> None:
    sender = f"{name} <{email}>"
    data = build(Mail(**{**BASE.__dict__, "sender": sender, "reply_to": sender}))
    check_wire(data)
    mail = parse(data)
    for header in ("From", "Reply-To"):
        assert len(mail.get_all(header) or []) == 1
        assert mail[header].addresses[0].addr_spec == email


def test_encoded_word_look_alikes_are_encoded_not_passed_through() -> None:
    data = build(Mail(**{**BASE.__dict__, "recipient_name": "=?utf-8?q?Admin?=",
                                   "subject": "=?utf-8?b?WW91IHdvbg==?= a prize"}))
    # A client shows what the customer typed, not "Admin" or "You won".
    mail = parse(data)
    assert mail["Subject"] == "=?utf-8?b?WW91IHdvbg==?= a prize"
    assert one_to(mail).display_name == display_name(data) == "=?utf-8?q?Admin?="
    assert b"=?utf-8?q?Admin?=" not in data and b"WW91IHdvbg==?=" not in data


def test_a_subject_past_the_limit_ends_in_an_ellipsis() -> None:
    mail = parse(build(Mail(**{**BASE.__dict__, "subject": "Sale! " * 200})))
    assert mail["Subject"] == ("Sale! " * 200)[:SUBJECT_LIMIT - 1] + "…"


def test_an_idn_address_goes_in_the_to_header_as_punycode() -> None:
    data = build(Mail(**{**BASE.__dict__, "recipient_email": "anna@bücher.example"}))
    assert b"To: =?utf-8?" in data and b"<anna@xn--bcher-kva.example>" in data
    assert data.partition(b"\r\n\r\n")[0].isascii()


def test_a_non_ascii_local_part_goes_in_the_to_header_as_utf8() -> None:
    data = build(Mail(**{**BASE.__dict__, "recipient_email": "zoë@bücher.example"}))
    assert "<zoë@bücher.example>".encode() in data
    assert one_to(parse(data)).addr_spec == "zoë@bücher.example"


# RFC 8058 one-click unsubscribe: List-Unsubscribe carries an HTTPS URI.
def _tracking(ws: Workspace, url: str) -> Result:
    ws.write("mailer.yaml", SETTINGS.replace("https://mail.shop.example", f'"{url}"'))
    return ws.run("validate", "--json")


@pytest.mark.parametrize(("url", "like"), [
    ("http://mail.shop.example", "https://mail.shop.example"),
    ("http://203.0.113.9:8080/t", "https://203.0.113.9/t"),
])
def test_validate_refuses_plain_http_links_on_a_public_host(ws: Workspace, url: str,
                                                            like: str) -> None:
    result = _tracking(ws, url)
    assert result.code == 1
    assert result.json()["problems"] == [{
        "path": "mailer.yaml", "line": 4, "field": "tracking.base_url",
        "message": f"{url} is plain http: unsubscribe links must be https (RFC 8058; "
                   f"mail clients hide one-click unsubscribe otherwise), like {like}"}]


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "http://localhost:8080",
                                 "http://[::1]:8080", "http://127.1.2.3"])
def test_validate_warns_about_plain_http_on_a_loopback_host(ws: Workspace, url: str) -> None:
    result = _tracking(ws, url)
    assert result.code == 0, result.stderr
    assert result.json()["warnings"] == [{
        "path": "mailer.yaml", "line": 4, "field": "tracking.base_url",
        "message": f"{url} is plain http on this machine: fine for a local demo; "
                   "real readers need https"}]
    assert "mailer.yaml:4: warning: tracking.base_url: " in result.stderr


def test_validate_accepts_https_links(ws: Workspace) -> None:
    assert _tracking(ws, "https://mail.shop.example").json() == {"problems": [],
                                                                 "warnings": [], "files": 1}


def test_validate_warns_when_a_subject_is_longer_than_a_mail_shows(ws: Workspace) -> None:
    ws.write("segments/everyone.yaml", "description: all\nall: [{orders: {at_least: 0}}]\n")
    ws.write("templates/note.html", "<p>{{ store.address }} {{ links.unsubscribe }}</p>\n")
    ws.write("campaigns/note.yaml", "name: Note\ntrigger: once\nat: 2026-11-23T09:00\n"
                                    "segment: everyone\ntemplate: note.html\n"
                                    f"subject: [Hi, {'Sale! ' * 50}]\n")
    result = ws.run("validate", "--json")
    assert result.code == 0, result.stderr
    assert result.json()["warnings"] == [{
        "path": "campaigns/note.yaml", "line": None, "field": "subject",
        "message": f"variant 2 renders to 299 characters: mails cut it to {SUBJECT_LIMIT} "
                   "with an ellipsis"}]
