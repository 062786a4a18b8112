"""The documentation: a short README whose links resolve, and a MkDocs site that builds with ``--strict`` (no broken
link or anchor, no page missing from the nav), offline, with no outside fonts or scripts.

The browser's view of the built site is in ``test_docs_browser.py``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from markdown.extensions.toc import slugify

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
MAX_README_LINES = 300

# A Markdown link or image: [text](target) or ![alt](target "title").
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def build_site(site_dir: Path) -> subprocess.CompletedProcess:
    """``mkdocs build --strict`` into ``site_dir``, as ``make docs`` runs it."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)


def nav_pages(entries) -> list[str]:
    """Every page path the ``nav`` of mkdocs.yml names, depth first."""
    pages: list[str] = []
    for entry in entries:
        value = entry
        if isinstance(entry, dict):
            (value,) = entry.values()
        if isinstance(value, list):
            pages += nav_pages(value)
        elif isinstance(value, str) and not value.startswith(("http://", "https://")):
            pages.append(value)
    return pages


def mkdocs_config() -> dict:
    return yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))


def markdown_links(text: str) -> list[str]:
    """The link targets of a Markdown text, outside fenced code blocks."""
    return LINK.findall(FENCE.sub("", text))


def anchors(markdown_file: Path) -> set[str]:
    """The heading ids a Markdown page gets (Python-Markdown's toc slugs, as MkDocs makes them)."""
    text = FENCE.sub("", markdown_file.read_text(encoding="utf-8"))
    return {slugify(re.sub(r"[`*]", "", heading), "-") for heading in HEADING.findall(text)}


def test_the_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; the rest belongs in docs/"


def test_every_internal_link_of_the_readme_resolves() -> None:
    links = markdown_links(README.read_text(encoding="utf-8"))
    internal = [link for link in links if not re.match(r"[a-z]+:", link)]
    assert len(internal) >= 10, internal  # the README points into the docs
    broken = []
    for link in internal:
        path, _, fragment = link.partition("#")
        target = (ROOT / path) if path else README
        if not target.exists():
            broken.append(f"{link}: no file {target.relative_to(ROOT)}")
        elif fragment and target.suffix == ".md" and fragment not in anchors(target):
            broken.append(f"{link}: no heading #{fragment} in {target.relative_to(ROOT)}")
    assert not broken, "\n".join(broken)


def test_every_docs_page_is_in_the_nav() -> None:
    in_nav = nav_pages(mkdocs_config()["nav"])
    assert len(in_nav) == len(set(in_nav)), "a page is in the nav twice"
    pages = sorted(path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md"))
    orphans = sorted(set(pages) - set(in_nav))
    missing = sorted(set(in_nav) - set(pages))
    assert not orphans, f"pages not in mkdocs.yml's nav: {orphans}"
    assert not missing, f"nav entries with no page: {missing}"


def test_there_is_a_page_for_each_verb_and_the_guides() -> None:
    verbs = "data train run tune jobs report debug profile serve predict models monitor export ui doctor demo"
    for verb in verbs.split():
        page = DOCS / "commands" / f"{verb}.md"
        assert page.is_file(), page
        assert page.read_text(encoding="utf-8").startswith(f"# kennel {verb}\n"), page
    for guide in ("guides/sagemaker.md", "guides/endpoint.md", "results/benchmarks.md", "results/recipes.md"):
        assert (DOCS / guide).is_file(), guide


def test_the_console_screenshot_is_where_the_pages_point() -> None:
    png = DOCS / "console.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "docs/console.png" in markdown_links(README.read_text(encoding="utf-8"))
    assert "../console.png" in markdown_links((DOCS / "commands" / "ui.md").read_text(encoding="utf-8"))


def test_the_site_builds_strict_and_offline(tmp_path: Path) -> None:
    config = mkdocs_config()
    assert config["theme"]["name"] == "material" and config["theme"]["font"] is False  # no Google Fonts
    plugins = [p if isinstance(p, str) else next(iter(p)) for p in config.get("plugins", [])]
    assert set(plugins) <= {"search"}, f"plugins that may fetch at build time: {plugins}"
    site = tmp_path / "site"
    done = build_site(site)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    pages = sorted(site.rglob("*.html"))
    assert (site / "index.html").is_file() and (site / "search" / "search_index.json").is_file()
    assert (site / "console.png").is_file()
    outside = re.compile(r"<(?:script|link)\b[^>]*\b(?:src|href)=\"(?:https?:)?//", re.IGNORECASE)
    for page in pages:
        html = page.read_text(encoding="utf-8")
        assert "fonts.googleapis.com" not in html and "fonts.gstatic.com" not in html, page
        assert not outside.search(html), f"{page.relative_to(site)} loads a script or stylesheet from outside"


@pytest.mark.parametrize("page", sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")))
def test_doc_pages_speak_only_of_the_project(page: str) -> None:
    text = (DOCS / page).read_text(encoding="utf-8").lower()
    for words in ("todo", "coming soon", "not yet implemented"):
        assert not re.search(rf"\b{words}\b", text), f"{page} says {words!r}"
