"""Signed links: the format fixed for the HTTP side (DESIGN §4.4, §6)."""

from __future__ import annotations

import pytest

from mailer.mail.links import Claims, InvalidLink, recipient_links, sign, verify

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
