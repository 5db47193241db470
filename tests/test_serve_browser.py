"""The unsubscribe page, the preference centre and the rating page in headless Chromium,
driven by Playwright (DESIGN §7); screenshots kept in test-artifacts/ (not committed)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.conftest import Workspace
from tests.test_preview_browser import ARTIFACTS, CHROMIUM, _chromium
from tests.test_serve import Service, consent, events, hrefs, sent_mail
from tests.test_serve import service as service  # the fixture


@contextmanager
def chromium() -> Iterator[Any]:
    """Playwright's Chromium; started after the mails are sent (the sync API runs an
    event loop of its own, and the in-process CLI runs one too)."""
    _chromium()
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield launched
        launched.close()


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_a_reader_unsubscribes_sets_preferences_and_rates_in_a_browser(
        db: Workspace, service: Service) -> None:
    _chromium()
    mails = sent_mail(db)
    with chromium() as browser:
        _read_the_mails(db, service, browser, mails)
    for name in ("serve-unsubscribe", "serve-unsubscribed", "serve-preferences",
                 "serve-rating"):
        assert (ARTIFACTS / f"{name}.png").stat().st_size > 5_000


def _read_the_mails(db: Workspace, service: Service, browser: Any, mails: Any) -> None:
    base = f"http://127.0.0.1:{service.port}"

    def local(url: str) -> str:
        return base + re.sub(r"^https?://[^/]+", "", url)

    page = browser.new_page(viewport={"width": 480, "height": 800})
    # the unsubscribe link: a page with a button; opening it changed nothing
    anna = hrefs(mails["anna@example.com"])
    page.goto(local(next(h for h in anna if "/u/" in h)))
    assert page.locator("h1").inner_text() == "Unsubscribe?"
    page.screenshot(path=str(ARTIFACTS / "serve-unsubscribe.png"), full_page=True)
    assert consent(db, "anna@example.com")[0] == "subscribed"
    page.locator("#unsubscribe").click()
    page.wait_for_selector("text=You are unsubscribed")
    page.screenshot(path=str(ARTIFACTS / "serve-unsubscribed.png"), full_page=True)
    assert consent(db, "anna@example.com")[:2] == ("unsubscribed", "link")
    assert browser.contexts[0].cookies() == []  # no cookies, ever
    # the preference centre: pause and a weekly cap
    bob = hrefs(mails["bob@example.com"])
    page.goto(local(next(h for h in bob if "/p/" in h)))
    page.get_by_label("Pause all mails for 30 days").check()
    page.select_option("#weekly_cap", "2")
    page.get_by_label("promotions").uncheck()
    page.locator("#save").click()
    page.wait_for_selector("#saved")
    page.screenshot(path=str(ARTIFACTS / "serve-preferences.png"), full_page=True)
    stored = consent(db, "bob@example.com")
    assert stored[2] is not None and stored[3] == 2
    assert "promotions" not in str(stored[4]) and "general" in str(stored[4])
    # "unsubscribe from everything" in the preference centre (a form to this service)
    chloe = hrefs(mails["chloe@example.com"])
    page.goto(local(next(h for h in chloe if "/p/" in h)))
    page.locator("#unsubscribe-all").click()
    page.wait_for_selector("text=You are unsubscribed")
    assert consent(db, "chloe@example.com")[0] == "unsubscribed"
    # a rating and its comment
    page.goto(local([h for h in bob if "/r/" in h][4]))
    assert "5 of 5" in page.locator("main").inner_text()
    page.fill("#comment", "Fast & friendly <3")
    page.locator("#send").click()
    page.wait_for_selector("#commented")
    page.screenshot(path=str(ARTIFACTS / "serve-rating.png"), full_page=True)
    assert [(e[0], e[4], e[5]) for e in events(db, "rating")] == [
        ("bob@example.com", 5, "Fast & friendly <3")]
