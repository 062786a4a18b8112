"""The endpoint's web page in a real headless Chromium: pick a photo, see the breed bars and the verdicts.

Runs the real ``kennel.serve.app`` on a tiny generated artifact when the serving code is there, else the contract
stand-in from ``test_client`` serving the same ``index.html``. Skips when playwright or Chromium is absent.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from test_client import CLASSES, photo_bytes, running, stand_in_app, tiny_artifact

from kennel.browser import CHROMIUM_ARGS, find_chromium

CHROMIUM = find_chromium()

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None, reason="the playwright package is absent"),
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (make test installs Debian's where it can)"),
]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module", params=["stand-in", "kennel"])
def server(request, tmp_path_factory: pytest.TempPathFactory):
    """The page served by the contract stand-in (exact answers) and by the real ``kennel.serve.app``."""
    if request.param == "stand-in":
        app = stand_in_app()
    else:
        serving = pytest.importorskip("kennel.serve.app", reason="the serving code (kennel.serve.app) is absent")
        artifact = tiny_artifact(tmp_path_factory.mktemp("artifact"), CLASSES)
        app = serving.create_app(artifact, serving.ServeSettings(max_wait_ms=5))
    with running(app) as url:
        yield request.param, url


def open_page(browser, url: str):
    page = browser.new_page()
    page.set_default_timeout(15_000)
    page.goto(url + "/")
    return page


def test_a_photo_shows_breed_bars_and_verdicts(browser, server, tmp_path: Path) -> None:
    kind, url = server
    photo = tmp_path / "rex.jpg"
    photo.write_bytes(photo_bytes((20, 240, 30), size=96))
    page = open_page(browser, url)
    page.set_input_files("#file", str(photo))
    page.wait_for_selector("#breeds li")
    labels = page.locator("#breeds .label").all_inner_texts()
    percents = page.locator("#breeds .percent").all_inner_texts()
    assert labels and len(labels) == len(percents) == min(5, len(CLASSES))
    assert set(labels) <= set(CLASSES)
    assert all(re.fullmatch(r"\d{1,3}\.\d%", p) for p in percents), percents
    widths = [w.rstrip("%") for w in page.locator("#breeds .bar span").evaluate_all("ns => ns.map(n => n.style.width)")]
    for width, percent in zip(widths, percents, strict=True):
        assert float(width) == pytest.approx(max(0.5, float(percent.rstrip("%"))), abs=0.06)
    assert re.fullmatch(r"Dog: (yes|no) \(score \d\.\d\d\)", page.inner_text("#dog-verdict"))
    assert page.inner_text("#face-verdict").startswith("Human face found: ")
    assert page.is_visible("#preview")
    assert page.inner_text("#status") == ""
    if kind == "stand-in":  # its answers are known exactly
        assert labels[0] == "Bulldog" and percents[0] == "80.0%"
        assert page.inner_text("#dog-verdict") == "Dog: yes (score 0.90)"
        assert "yes (1)" in page.inner_text("#face-verdict") and "resembles" in page.inner_text("#face-verdict")
    page.close()


def test_a_bad_file_shows_the_server_message(browser, server, tmp_path: Path) -> None:
    kind, url = server
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo at all")
    page = open_page(browser, url)
    page.set_input_files("#file", str(text))
    page.wait_for_selector("#status.error")
    status = page.inner_text("#status")
    assert status.startswith("The server could not read this photo: ") and len(status) > 45, status
    if kind == "stand-in":
        assert "not an image" in status
    assert page.is_hidden("#result")
    page.close()
