"""Headless Chromium for the browser tests: Debian's package, driven by Playwright.

Playwright's own browser download cannot work here, so the tests use
``/usr/bin/chromium`` (``scripts/ensure-chromium.sh`` installs it). Without it
the browser tests skip with a message, except under ``CI=true`` where a
missing browser is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Options for the browser contexts the tests drive pages in. The server's
#: Content-Security-Policy forbids eval and inline script, which Playwright's
#: ``wait_for_function`` (it evaluates its string) and ``add_script_tag`` (the
#: docs' example, a stand-in course page) rely on, and it forbids the demo page
#: connecting to another server (the LMS stand-in does). The page's own code
#: needs none of this: tests/test_browser.py opens it under the policy too.
HARNESS = {"bypass_csp": True}
#: Options for a context that enforces the server's policy, as a learner's
#: browser does: for tests of what the page itself does under it. Playwright's
#: ``wait_for_function`` cannot run there; wait with :func:`wait_attached`.
POLICY_ENFORCED = {"bypass_csp": False}
#: Milliseconds for any wait in a page: generous, since other test runs may share the cores.
WAIT_MS = 15_000


def unavailable(why: str) -> None:
    """Skip the test, or fail it under CI where the browser must be there."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why} (browser tests must run under CI)")
    pytest.skip(why)


def chromium() -> Iterator:
    """Yield a launched Chromium (a Playwright ``Browser``); close it afterwards."""
    if not os.access(CHROMIUM, os.X_OK):
        unavailable(f"{CHROMIUM} is not installed (scripts/ensure-chromium.sh installs it as root)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (pip install -r requirements-dev.txt)")
    with sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        except Exception as exc:
            unavailable(f"Chromium does not start: {exc}")
        yield launched
        launched.close()


def wait_attached(page, selector: str, timeout: int = WAIT_MS) -> None:
    """Wait until ``selector`` matches (a CSS selector needs no eval, so this works under the policy)."""
    page.locator(selector).first.wait_for(state="attached", timeout=timeout)
