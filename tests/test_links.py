"""Signed links: the format fixed for the HTTP side (DESIGN §4.4, §6)."""

from __future__ import annotations

import pytest

from mailer.mail.links import Claims, InvalidLink, recipient_links, sign, verify
from mailer.mail.sandbox import environment
from mailer.mail.tracking import held_links, tracked

KEY, OLD = "current-key", "previous-key"
CLAIMS = Claims("unsubscribe", "C1", "black-friday", "42")


def test_round_trip_and_old_keys() -> None:
    token = sign(CLAIMS, KEY)
    assert verify(token, "unsubscribe", [KEY]) == CLAIMS
    assert verify(sign(CLAIMS, OLD), "unsubscribe", [KEY, OLD]) == CLAIMS


def test_tampered_tokens_are_refused() -> None:
    token = sign(CLAIMS, KEY)
    payload, signature = token.split(".")
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    other = sign(Claims("unsubscribe", "C2", "black-friday", "42"), KEY)
    for bad in (f"{payload}.{flipped}", f"{other.split('.')[0]}.{signature}", payload, "",
                "ü.ü", token + "x"):
        with pytest.raises(InvalidLink):
            verify(bad, "unsubscribe", [KEY])
    with pytest.raises(InvalidLink, match="signature"):
        verify(token, "unsubscribe", ["another-key"])


def test_a_click_token_cannot_unsubscribe() -> None:
    click = sign(Claims("click", "C1", "black-friday", "42", "https://shop.example/x"), KEY)
    assert verify(click, "click", [KEY]).extra == "https://shop.example/x"
    with pytest.raises(InvalidLink, match="not a unsubscribe link"):
        verify(click, "unsubscribe", [KEY])


def test_a_mails_click_token_opens_nothing_but_its_held_links() -> None:
    clicks = sign(Claims("clicks", "C1", "black-friday", "42", "7"), KEY)
    assert verify(clicks, "clicks", [KEY]).extra == "7"
    for purpose in ("unsubscribe", "preferences", "browser", "click", "rating", "survey",
                    "keep_subscribed", "open"):
        with pytest.raises(InvalidLink, match=f"not a {purpose} link"):
            verify(clicks, purpose, [KEY])


HELD = """<html><body>
<a href="https://shop.example/boots?size=42&amp;colour=red">boots</a>
<a href="{{ store.url }}/sale">sale</a> <a href="{{ store.url }}/sale">again</a>
<a class="b" href="{{ store.url }}/{{ campaign.slug }}">this campaign</a>
<a href="{{ store.url }}/cart?c={{ customer.id }}">personal</a>
{% for p in products %}<a href="{{ store.url }}/p/{{ p }}">a product</a>{% endfor %}
<a href="{{ links.unsubscribe }}">unsubscribe</a> <a href="mailto:help@shop.example">help</a>
<a href="{{ store.nowhere | default('#') }}">nothing</a>
<a href="https://shop.example/{% if customer.vip %}vip{% endif %}">condition</a>
</body></html>"""


def test_a_version_holds_its_literal_links_and_those_made_of_store_and_campaign_alone() -> None:
    values = {"store": {"url": "https://shop.example"}, "campaign": {"slug": "bf"}}
    assert held_links([HELD], values, environment()) == [
        "https://shop.example/boots?size=42&colour=red", "https://shop.example/sale",
        "https://shop.example/bf"]


def test_held_links_share_the_mails_one_click_token_and_personal_ones_sign_their_own() -> None:
    body = ('<a href="https://shop.example/sale">1</a><a href="https://shop.example/cart?c=C1">2'
            '</a><a href="https://shop.example/boots?a=1&amp;b=2">3</a>'
            '<a href="https://mail.shop.example/u/abc">own</a>')
    held = {"https://shop.example/boots?a=1&b=2": 0, "https://shop.example/sale": 1}
    out = tracked(body, base_url="https://mail.shop.example", customer="C1", campaign="bf",
                  message="42", key=KEY, opens=False, held=held, version=7)
    links = [part.split('"', 1)[0] for part in out.split('href="')[1:]]
    first, second, third, own = links
    assert own == "https://mail.shop.example/u/abc"
    token, number = first.removeprefix("https://mail.shop.example/c/").split("/")
    assert number == "1" and third == f"https://mail.shop.example/c/{token}/0"
    assert verify(token, "clicks", [KEY]) == Claims("clicks", "C1", "bf", "42", "7")
    assert verify(second.rsplit("/", 1)[1], "click", [KEY]) == Claims(
        "click", "C1", "bf", "42", "https://shop.example/cart?c=C1")
    # without a stored version (a dry run, a version stored before), every link signs its own
    alone = tracked(body, base_url="https://mail.shop.example", customer="C1", campaign="bf",
                    message="42", key=KEY, opens=False, held=held, version=None)
    targets = [verify(part.split('"', 1)[0], "click", [KEY]).extra
               for part in alone.split('href="https://mail.shop.example/c/')[1:]]
    assert targets == ["https://shop.example/sale", "https://shop.example/cart?c=C1",
                       "https://shop.example/boots?a=1&b=2"]


def test_recipient_links_live_under_the_tracking_url() -> None:
    links = recipient_links("https://mail.shop.example/", customer="C1", campaign="bf",
                            message="7", key=KEY)
    assert set(links) == {"unsubscribe", "preferences", "browser", "rating", "keep_subscribed"}
    assert links["unsubscribe"].startswith("https://mail.shop.example/u/")
    assert sorted(links["rating"]) == [1, 2, 3, 4, 5]
    four = links["rating"][4]
    assert four.startswith("https://mail.shop.example/r/")
    assert verify(four.rsplit("/", 1)[1], "rating", [KEY]) == Claims("rating", "C1", "bf", "7",
                                                                     "4")
    token = links["unsubscribe"].rsplit("/", 1)[1]
    assert verify(token, "unsubscribe", [KEY]) == Claims("unsubscribe", "C1", "bf", "7")
