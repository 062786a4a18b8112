"""The documentation site in a real headless Chromium: built with ``mkdocs build --strict`` as ``make docs`` does,
served over HTTP (the search index is fetched, which a file:// page cannot do), then opened: the search box finds
a page, the navigation names a page per verb, each verb's page renders with its title, images load, and no
internal link of any page leads to a missing page or anchor.

Skips when playwright or Chromium is absent, as the other browser tests do.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlsplit

import pytest
from chromium import NEEDS_CHROMIUM
from test_docs import build_site

VERBS = ["data", "train", "run", "tune", "jobs", "report", "debug", "profile"]
VERBS += ["serve", "predict", "models", "monitor", "export", "ui", "doctor", "demo"]

pytestmark = [pytest.mark.slow, *NEEDS_CHROMIUM]


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """The built site's folder and the address it is served at."""
    folder = tmp_path_factory.mktemp("docs") / "site"
    done = build_site(folder)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def title(page) -> str:
    """The page's h1 without the permalink sign MkDocs adds to every heading."""
    return page.locator("article h1").first.inner_text().replace("\u00b6", "").strip()


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(15_000)
    page.goto(url)
    return page


def test_the_home_page_has_the_search_box_and_a_navigation_naming_every_verb(browser, site) -> None:
    _, url = site
    page = open_page(browser, url + "/")
    assert "kennel" in page.title()
    assert title(page) == "kennel"
    links = page.locator("nav.md-nav--primary a.md-nav__link").all_inner_texts()
    names = {" ".join(text.split()) for text in links}
    missing = [verb for verb in VERBS if f"kennel {verb}" not in names]
    assert not missing, f"the navigation lacks {missing}: {sorted(names)}"
    for guide in ("SageMaker users", "Operating the endpoint", "Benchmarks", "Recipe log", "Getting started"):
        assert guide in names, guide
    search = page.locator("input.md-search__input")
    assert search.count() == 1
    search.click()
    found = []
    for _ in range(30):  # the search index loads in a worker after the page; a query typed before it finds nothing
        search.fill("")
        search.type("torchrun")
        try:
            page.wait_for_selector(".md-search-result__item", timeout=1_000)
        except Exception:  # playwright's TimeoutError: not ready yet
            continue
        found = page.locator(".md-search-result__item").all_inner_texts()
        break
    assert any("processes" in text.lower() or "torchrun" in text.lower() for text in found), found
    page.close()


@pytest.mark.parametrize("verb", VERBS)
def test_each_verb_has_a_page_that_renders(browser, site, verb: str) -> None:
    _, url = site
    page = open_page(browser, f"{url}/commands/{verb}/")
    assert title(page) == f"kennel {verb}"
    assert page.locator("article p").count() > 0
    assert page.locator("nav.md-nav--secondary").count() > 0 or page.locator("article h2").count() == 0
    page.close()


def local_file(site_dir: Path, path: str) -> Path:
    """The file the test server answers ``path`` with (a folder: its index.html)."""
    relative = unquote(path).lstrip("/")
    target = site_dir / relative
    return target / "index.html" if relative == "" or relative.endswith("/") or target.is_dir() else target


def test_no_internal_link_is_broken_and_every_image_loads(browser, site) -> None:
    site_dir, url = site
    origin = urlsplit(url).netloc
    to_visit, seen, broken, pages = ["/"], set(), [], 0
    ids: dict[Path, set[str]] = {}
    while to_visit:
        path = to_visit.pop()
        if path in seen:
            continue
        seen.add(path)
        page = open_page(browser, url + path)
        pages += 1
        unloaded = page.eval_on_selector_all(
            "article img", "imgs => imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)"
        )
        if unloaded:
            broken.append(f"{path}: images that did not load: {unloaded}")
        hrefs = page.eval_on_selector_all("a[href]", "links => links.map(a => a.href)")
        page.close()
        for href in hrefs:
            address, fragment = urldefrag(href)
            parts = urlsplit(address)
            if parts.scheme not in ("http", "https") or parts.netloc != origin:
                continue
            target = local_file(site_dir, parts.path)
            if not target.is_file():
                broken.append(f"{path}: {href} leads nowhere")
                continue
            if target.suffix == ".html":
                if fragment:
                    if target not in ids:
                        ids[target] = set(re.findall(r'\bid="([^"]+)"', target.read_text(encoding="utf-8")))
                    if unquote(fragment) not in ids[target]:
                        broken.append(f"{path}: {href}: no #{fragment} there")
                if target.name == "index.html" and target.parent.name != "search":
                    to_visit.append(parts.path if parts.path.endswith("/") else parts.path + "/")
    assert not broken, "\n".join(broken)
    expected = len(list(site_dir.rglob("index.html"))) - 1  # every page but the search folder's, if any
    assert pages >= min(expected, 25), f"visited {pages} pages of {expected}"
