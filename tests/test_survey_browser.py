"""The survey page in headless Chromium at phone width (DESIGN §7): a reader opens the
mail's link, answers, presses the button and sees the thank-you; the rows are recorded,
and nothing is wider than a 375 px screen. Screenshots in test-artifacts/."""

from __future__ import annotations

import re
from email.message import EmailMessage

import pytest

from tests.conftest import Workspace
from tests.test_preview_browser import ARTIFACTS
from tests.test_serve import Service
from tests.test_serve_browser import chromium
from tests.test_survey_page import answers, survey_links, version_hash
from tests.test_survey_page import served as served  # the fixture

WIDTH = 375


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_a_reader_answers_the_survey_on_a_phone(
        db: Workspace, served: tuple[Service, dict[str, EmailMessage]]) -> None:
    service, mails = served
    link = survey_links(mails["anna@example.com"])[1]  # "2" in the mail
    url = f"http://127.0.0.1:{service.port}" + re.sub(r"^https?://[^/]+", "", link)
    with chromium() as browser:
        page = browser.new_page(viewport={"width": WIDTH, "height": 740}, is_mobile=True,
                                has_touch=True, device_scale_factor=2)
        page.goto(url)
        assert page.locator("h1").inner_text() == "How was your order?"
        assert page.locator("#overall-2").is_checked()  # the mail's click, carried over
        assert answers(db) == []  # opening the page records nothing
        assert _overflow(page) == []
        page.screenshot(path=str(ARTIFACTS / "survey-page.png"), full_page=True)
        page.locator("label[for=overall-1]").click()  # changed her mind
        page.locator("label[for=delivery-4]").click()
        page.locator("label[for=recommend-10]").click()
        page.get_by_label("social").check()
        page.fill("#comment", "Box was crushed & late <3")
        page.locator("#send").click()
        page.wait_for_selector("#thanks")
        assert "your 5 answers" in page.locator("main").inner_text()
        assert _overflow(page) == []
        page.screenshot(path=str(ARTIFACTS / "survey-thanks.png"), full_page=True)
        assert browser.contexts[0].cookies() == []
    row = ("anna@example.com", "asked", "once", "order", version_hash(db))
    assert answers(db) == [(*row, "comment", None, "Box was crushed & late <3"),
                           (*row, "delivery", 4, None), (*row, "found_us", None, "social"),
                           (*row, "overall", 1, None), (*row, "recommend", 10, None)]


def _overflow(page: object) -> list[str]:
    """The elements reaching past the viewport's right edge, and the page's own scroll
    width when it is wider than the screen."""
    found: list[str] = page.evaluate("""() => {
        const width = document.documentElement.clientWidth, wide = [];
        if (document.documentElement.scrollWidth > width)
            wide.push(`page ${document.documentElement.scrollWidth}px`);
        for (const el of document.querySelectorAll('main *')) {
            const box = el.getBoundingClientRect();
            if (box.right > width + 0.5) wide.push(`${el.tagName}#${el.id} ${box.right}px`);
        }
        return wide;
    }""")  # type: ignore[attr-defined]
    return found
