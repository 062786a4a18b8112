"""kennel's pages in a real headless Chromium: the endpoint's (pick a photo, see the breed bars and the verdicts)
and a study's trials table where it is wider than the window.

Runs the real ``kennel.serve.app`` on a tiny generated artifact when the serving code is there, else the contract
stand-in from ``test_client`` serving the same ``index.html``. Skips when playwright or Chromium is absent.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from chromium import NEEDS_CHROMIUM
from test_client import CLASSES, photo_bytes, running, stand_in_app, tiny_artifact

pytestmark = [*NEEDS_CHROMIUM]


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


def trials_page(folder: Path, params: int) -> Path:
    """A study page's trials table with ``params`` parameters (as kennel's study page renders it)."""
    from kennel.report import Section, render_template
    from kennel.report.section import write_page

    names = [f"optim.parameter_{i}" for i in range(params)]
    rows = [
        {"number": n, "outcome": "complete", "status": "completed", "value": 0.5 + n / 10, "epochs": 3,
         "params": dict.fromkeys(names, 0.001 * (n + 1)), "seconds": 1.5, "job": f"job-{n}", "name": f"t00{n}",
         "link": None, "note": "debugger rule LossNotDecreasing: The TRAIN loss rose over the last 10 steps."}
        for n in range(3)
    ]  # fmt: skip

    def trials(_) -> str:
        return render_template("study_trials.html", rows=rows, params=names, objective="best_valid_accuracy")

    return write_page(folder / "report.html", "kennel study: wide", {}, [Section("trials", "Trials", trials)], None)


def test_a_trials_table_wider_than_the_page_says_it_scrolls_and_keeps_the_trial_in_view(browser, tmp_path) -> None:
    wide = trials_page(tmp_path / "wide", params=14)
    page = browser.new_page(viewport={"width": 1000, "height": 800})
    page.goto(wide.as_uri())
    assert page.is_visible(".scroll-cue") and "scroll it sideways" in page.inner_text(".scroll-cue")
    box = page.locator(".scroll")
    assert box.evaluate("b => b.scrollWidth > b.clientWidth")  # the table is wider than the page
    box.evaluate("b => { b.scrollLeft = b.scrollWidth; }")
    first_cell = page.locator("#trials-table tbody tr td").first.bounding_box()
    assert abs(first_cell["x"] - box.bounding_box()["x"]) < 2  # the trial number stays at the box's left edge
    page.close()

    narrow = trials_page(tmp_path / "narrow", params=1)
    page = browser.new_page(viewport={"width": 1600, "height": 800})
    page.goto(narrow.as_uri())
    assert page.locator(".scroll-cue").count() == 1 and not page.is_visible(".scroll-cue")  # it fits: no cue
    page.close()


def test_class_names_with_html_in_them_stay_text_on_the_page(browser, tmp_path: Path) -> None:
    from kennel.serve.app import ServeSettings, create_app

    hostile = ["<img src=x onerror=window.pwned=1>", "<b>Bold</b> & co"]
    artifact = tiny_artifact(tmp_path / "model", hostile)
    with running(create_app(artifact, ServeSettings(max_wait_ms=5))) as url:
        photo = tmp_path / "rex.jpg"
        photo.write_bytes(photo_bytes((20, 240, 30), size=96))
        page = open_page(browser, url)
        page.set_input_files("#file", str(photo))
        page.wait_for_selector("#breeds li")
        assert set(page.locator("#breeds .label").all_inner_texts()) == set(hostile)
        assert page.evaluate("window.pwned") is None
        assert page.locator("#breeds img, #breeds b").count() == 0
        page.close()
