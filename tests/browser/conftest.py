"""Browser tests: the dashboard driven in real headless Chromium through Playwright.

They use the system's Chromium (Debian's ``chromium`` package, which ``.ci/run`` installs), not
a browser Playwright downloads. Without it they skip, except under CI (``CI=true``), where a
missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
#: Generous: the machines running these tests are small and busy.
TIMEOUT_MS = 30_000


def chromium_path() -> str | None:
    configured = os.environ.get("JOBQ_TEST_CHROMIUM")
    if configured:
        return configured
    for path in CHROMIUM_CANDIDATES:
        if os.path.exists(path):
            return path
    return shutil.which("chromium")


def _missing(why: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(why + " (CI=true: a missing browser is a failure, not a skip)")
    pytest.skip(why)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed (pip install -e '.[dev]')")
    path = chromium_path()
    if path is None:
        _missing("Chromium not found: apt-get install chromium (or set JOBQ_TEST_CHROMIUM)")
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=path, args=["--disable-dev-shm-usage", "--disable-gpu"]
        )
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (no cookies) with the overview's auto-refresh off, so that a
    reload never races a click; a dialog (``confirm``) is accepted, an ``alert`` is recorded."""
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    context.add_init_script("window.localStorage.setItem('jobq-autorefresh', 'off');")
    p = context.new_page()
    p.dialogs = []  # type: ignore[attr-defined]

    def on_dialog(dialog: Any) -> None:
        p.dialogs.append((dialog.type, dialog.message))  # type: ignore[attr-defined]
        dialog.accept()

    p.on("dialog", on_dialog)
    yield p
    context.close()
