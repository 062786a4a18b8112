"""Headless Chromium for screenshots and page tests: the system's browser, never a downloaded one."""

from __future__ import annotations

import shutil
from pathlib import Path

# Without the networking flags Chromium tries Google's services at start-up, which an offline machine refuses.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def find_chromium() -> Path | None:
    """Debian's ``chromium`` (what ``make test`` installs where it can), or another on the PATH."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return Path(found)
    return None
