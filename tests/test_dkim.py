"""DKIM signatures checked by two independent verifiers: dkimpy and Perl's Mail::DKIM
(Debian's libmail-dkim-perl). RFC 6376 §5.4 (over-signing), RFC 8058 §4.

Mail::DKIM reads the public key through a replaced DNS lookup, so nothing leaves the
machine. In CI (CI set) a missing Mail::DKIM fails the run; elsewhere those checks skip.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from email import message_from_bytes
from email.policy import default

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailer.mail.dkim import Signer
from mailer.mail.message import Mail, build

DOMAIN, SELECTOR = "shop.example", "mail"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RECORD = b"v=DKIM1; k=rsa; p=" + base64.b64encode(KEY.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
SIGN = Signer(DOMAIN, SELECTOR, KEY)

MAIL = Mail(
    sender="Pine & Co <hello@shop.example>",
    recipient_name="Zoë Müller",
    recipient_email="zoe@example.com",
    subject="Zoë, 48 hours only: 30% off — 🎁 " + "and more " * 12,
    html="<p>Hello Zoë</p>\n",
    text="Hello Zoë\n",
    date=datetime(2026, 11, 27, 8, 0, tzinfo=UTC),
    message_id="<0123456789abcdef@shop.example>",
    unsubscribe_url="https://mail.shop.example/u/abc.def",
    unsubscribe_mailto="unsubscribe@shop.example",
    reply_to="Care <care@shop.example>",
)

# Mail::DKIM::Verifier on each file named on the command line, one verdict a line; the
# TXT record comes from DKIM_RECORD for DKIM_NAME.
PERL_VERIFIER = r"""
use strict;
use warnings;
use Mail::DKIM::Verifier;
use Net::DNS::RR;
no warnings 'redefine';
*Mail::DKIM::DNS::query = sub {
    my ($name, $type) = @_;
    return () unless lc $name eq lc $ENV{DKIM_NAME} && $type eq 'TXT';
    my $strings = join ' ', map { qq{"$_"} } unpack('(A200)*', $ENV{DKIM_RECORD});
    return (Net::DNS::RR->new("$name 300 IN TXT $strings"));
};
for my $file (@ARGV) {
    open(my $in, '<:raw', $file) or die "$file: $!";
    my $verifier = Mail::DKIM::Verifier->new();
    while (my $line = <$in>) { $verifier->PRINT($line); }
    $verifier->CLOSE();
    print $verifier->result(), "\n";
}
"""


def _perl_available() -> bool:
    if shutil.which("perl") is None:
        return False
    return subprocess.run(["perl", "-MMail::DKIM::Verifier", "-e", "1"],
                          capture_output=True).returncode == 0


Verify = Callable[..., list[str]]


@pytest.fixture(scope="module")
def mail_dkim(tmp_path_factory: pytest.TempPathFactory) -> Verify:
    """Perl Mail::DKIM's verdict ("pass", "fail", ...) on each message, in one run."""
    if not _perl_available():
        message = "Mail::DKIM is missing: apt-get install libmail-dkim-perl (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)

    folder = tmp_path_factory.mktemp("dkim")

    def verify(*messages: bytes) -> list[str]:
        files = []
        for number, message in enumerate(messages):
            files.append(folder / f"{number}.eml")
            files[-1].write_bytes(message)
        env = {**os.environ, "DKIM_NAME": f"{SELECTOR}._domainkey.{DOMAIN}",
               "DKIM_RECORD": RECORD.decode()}
        done = subprocess.run(["perl", "-e", PERL_VERIFIER, *map(str, files)], env=env,
                              capture_output=True, check=True, timeout=30)
        return done.stdout.decode().splitlines()

    return verify


def dkimpy(message: bytes) -> bool:
    return bool(dkim.verify(message, dnsfunc=lambda name, timeout=5: RECORD))


def signed_names(message: bytes) -> list[str]:
    header = message_from_bytes(message, policy=default)["DKIM-Signature"]
    h = re.search(r"\bh=([^;]*)", str(header))
    assert h is not None
    return [name.strip() for name in h.group(1).split(":")]


def add_header(message: bytes, line: bytes, *, on_top: bool) -> bytes:
    """MESSAGE with LINE added above every header (after the signature) or below them."""
    head, _, body = message.partition(b"\r\n\r\n")
    if on_top:
        signature, rest = re.match(rb"(DKIM-Signature:.*?\r\n)(?![ \t])(.*)", head,
                                   re.DOTALL).groups()  # type: ignore[union-attr]
        head = signature + line + b"\r\n" + rest
    else:
        head += b"\r\n" + line
    return head + b"\r\n\r\n" + body


@pytest.mark.parametrize("mail", [
    MAIL,
    Mail(**{**MAIL.__dict__, "recipient_email": "zoë@bücher.example", "reply_to": None}),
], ids=["ascii-address", "utf8-address-no-reply-to"])
def test_both_verifiers_pass_our_signature(mail: Mail, mail_dkim: Verify) -> None:
    message = SIGN(build(mail))
    assert all(len(line) <= 78 for line in message.partition(b"\r\n\r\n")[0].split(b"\r\n")
               if line.startswith((b"DKIM", b"\t")))
    assert dkimpy(message)
    assert mail_dkim(message) == ["pass"]


def test_reply_to_and_both_list_unsubscribe_headers_are_signed() -> None:
    names = signed_names(SIGN(build(MAIL)))
    for name in ("reply-to", "list-unsubscribe", "list-unsubscribe-post", "date",
                 "message-id"):
        assert name in names


def test_from_to_and_subject_are_over_signed() -> None:
    # RFC 6376 §5.4: a name listed once more than it occurs signs its absence.
    names = signed_names(SIGN(build(MAIL)))
    for name in ("from", "to", "subject"):
        assert names.count(name) == 2, names


ADDED = [
    b"From: Pine & Co Support <support@attacker.example>",
    b"Subject: Your account is locked",
    b"To: someone-else@example.org",
    b"Reply-To: refunds@attacker.example",
    b"List-Unsubscribe: <https://attacker.example/u>",
]


def test_a_header_added_after_signing_breaks_the_signature(mail_dkim: Verify) -> None:
    message = SIGN(build(MAIL))
    cases = {(line, on_top): add_header(message, line, on_top=on_top)
             for line in ADDED for on_top in (True, False)}
    verdicts = mail_dkim(message, *cases.values())
    assert dkimpy(message) and verdicts[0] == "pass"
    for (line, on_top), verdict in zip(cases, verdicts[1:], strict=True):
        where = "above" if on_top else "below"
        assert not dkimpy(cases[line, on_top]), (line, where)
        assert verdict == "fail", (line, where)


def test_a_changed_subject_breaks_the_signature(mail_dkim: Verify) -> None:
    message = SIGN(build(Mail(**{**MAIL.__dict__, "subject": "A note for you"})))
    tampered = message.replace(b"A note for", b"A n0te for")
    assert not dkimpy(tampered)
    assert mail_dkim(tampered) == ["fail"]
