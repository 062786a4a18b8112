"""The endpoint's web page in a real headless Chromium: pick a photo, see the breed bars and the verdicts.

Runs the real ``kennel.serve.app`` on a tiny generated artifact when the serving code is there, else the contract
stand-in from ``test_client`` serving the same ``index.html``. Skips when playwright or /usr/bin/chromium is absent.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from test_client import photo_bytes, running, stand_in_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None, reason="the playwright package is absent"),
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (the browser test needs it)"),
]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page_url():
    with running(stand_in_app()) as url:
        yield url


def open_page(browser, url: str):
    page = browser.new_page()
    page.set_default_timeout(15_000)
    page.goto(url + "/")
    return page


def test_a_photo_shows_breed_bars_and_verdicts(browser, page_url: str, tmp_path: Path) -> None:
    photo = tmp_path / "rex.jpg"
    photo.write_bytes(photo_bytes((20, 240, 30), size=96))
    page = open_page(browser, page_url)
    page.set_input_files("#file", str(photo))
    page.wait_for_selector("#breeds li")
    labels = page.locator("#breeds .label").all_inner_texts()
    percents = page.locator("#breeds .percent").all_inner_texts()
    assert labels and len(labels) == len(percents) <= 5
    assert labels[0] == "Bulldog"
    assert all(re.fullmatch(r"\d{1,3}\.\d%", p) for p in percents), percents
    assert percents[0] == "80.0%"
    width = page.locator("#breeds li:first-child .bar span").evaluate("node => node.style.width")
    assert float(width.rstrip("%")) == pytest.approx(80)
    assert re.fullmatch(r"Dog: yes \(score \d\.\d\d\)", page.inner_text("#dog-verdict"))
    assert "Human face found: yes" in page.inner_text("#face-verdict")
    assert "resembles" in page.inner_text("#face-verdict")
    assert page.is_visible("#preview")
    assert page.inner_text("#status") == ""
    page.close()


def test_a_bad_file_shows_the_server_message(browser, page_url: str, tmp_path: Path) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo at all")
    page = open_page(browser, page_url)
    page.set_input_files("#file", str(text))
    page.wait_for_selector("#status.error")
    assert "not an image" in page.inner_text("#status")
    assert page.is_hidden("#result")
    page.close()
