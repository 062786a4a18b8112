"""Headless Chromium for the tests that open a page (the endpoint's page, the documentation site): Debian's
Chromium driven by Playwright (the ``browser`` fixture in conftest.py launches it once per test module), and the
marks that skip such tests, saying why, where either is missing (``make test`` installs Debian's Chromium where
it can)."""

from __future__ import annotations

import importlib.util

import pytest

from kennel.browser import find_chromium

CHROMIUM = find_chromium()
NEEDS_CHROMIUM = [
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None, reason="the playwright package is absent"),
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (make test installs Debian's where it can)"),
]
