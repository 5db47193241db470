"""The served preview page in headless Chromium, driven by Playwright (DESIGN §7).

Screenshots are kept in test-artifacts/ (not committed). Without Chromium the test
is skipped with one line, except in CI, where .ci/run installs Chromium and a
missing one fails the run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Workspace

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
NOW = "2026-11-23T10:00"


def _chromium() -> None:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("CI needs Chromium at /usr/bin/chromium", pytrace=False)
        pytest.skip("Chromium not installed (apt-get install chromium)")


@pytest.fixture
def server(ws: Workspace) -> Iterator[str]:
    _chromium()
    for part in ("campaigns", "segments", "surveys", "templates"):
        shutil.copytree(ROOT / part, ws.root / part)
    ws.write("customers.csv", "id,email,first_name,tags\nC1,anna@example.com,Anna,vip\n"
                              "C2,bob@example.org,Bob,\n")
    ws.write("orders.csv", "order_id,customer_id,placed_at,total,category\n"
                           "O1,C1,2026-11-01,120,coffee\nO2,C2,2026-10-01,15,books\n")
    assert ws.run("import", "customers", "customers.csv", "--now", NOW).code == 0
    assert ws.run("import", "orders", "orders.csv", "--now", NOW).code == 0
    process = subprocess.Popen(
        [sys.executable, "-m", "mailer.cli", "--workspace", str(ws.root), "preview",
         "black-friday", "--serve", "--port", "0", "--sample", "2", "--now", NOW],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("MAILER_")})
    try:
        assert process.stdout is not None
        first = process.stdout.readline().strip()
        assert first.startswith("listening on 127.0.0.1:"), process.stderr.read() if \
            process.stderr else first
        yield "http://" + first.removeprefix("listening on ")
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_preview_page_shows_campaigns_headers_html_and_text(server: str) -> None:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1000, "height": 1400})
        page.goto(server + "/")
        assert page.locator("tr.current a").inner_text() == "black-friday"
        assert page.get_by_text("newsletter").count() >= 1
        page.get_by_role("link", name="black-friday").first.click()
        page.get_by_role("link", name="Anna, 48 hours only: 30% off").click()
        assert page.locator("#subject").inner_text() == "Anna, 48 hours only: 30% off"
        headers = page.locator("#headers").inner_text()
        assert "Pine & Co <hello@shop.example>" in headers
        assert "List-Unsubscribe-Post" in headers
        frame = page.frame_locator("#html")
        assert frame.locator("h1").inner_text() == "30% off everything — for 48 hours"
        assert "As one of our best customers" in frame.locator("body").inner_text()
        text = page.locator("#text").inner_text()
        assert text.startswith("Pine & Co")
        assert "Unsubscribe (https://mail.shop.example/u/" in text
        page.screenshot(path=str(ARTIFACTS / "preview-page.png"), full_page=True)
        browser.close()
    assert (ARTIFACTS / "preview-page.png").stat().st_size > 10_000
