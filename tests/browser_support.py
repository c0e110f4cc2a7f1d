"""Headless Chromium for the browser tests (Debian's /usr/bin/chromium driven by playwright).

Skips with a reason when Chromium or playwright is missing, unless REQUIRE_BROWSER=1 (set by
.ci/run), where a missing browser is a failure. The launch flags keep Chromium off the
network: these machines have none.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.web_support import ThreadedServer, cached_app

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--no-first-run"]


def browser_or_skip():
    problem = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        problem, sync_playwright = "the playwright package is not installed", None
    if problem is None and not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        problem = f"Chromium not found at {CHROMIUM}"
    if problem:
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(f"REQUIRE_BROWSER=1 but {problem}")
        pytest.skip(problem)
    return sync_playwright


def serve(model_path):
    """A live threaded server of the real app for ``model_path``; yields its base URL."""
    server = ThreadedServer(cached_app(str(model_path)))
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser():
    sync_playwright = browser_or_skip()
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS, headless=True)
        try:
            yield instance
        finally:
            instance.close()
