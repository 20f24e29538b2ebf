"""Fixtures for the browser tests: a real daphne server and Debian's Chromium.

Run these in their own pytest process (`pytest -m browser tests/browser`):
Playwright's sync API cannot run inside pytest-asyncio's event loop. The
tests skip when Chromium is missing, except under CI=true, where they fail
so that CI cannot pass without running them.
"""

import os
import shutil

import pytest
from django.conf import settings

from tests.servers import ChatServer, free_port

CHROMIUM = os.environ.get("CHROMIUM_PATH") or "/usr/bin/chromium"
# Without the networking flags Chromium tries to reach Google's hosts, which
# are unreachable here; never run `playwright install`, which downloads a browser.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def browser():
    if not os.path.exists(CHROMIUM):
        message = f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)."
        if os.environ.get("CI") == "true":
            pytest.fail(message + " CI=true, so the browser tests must run.")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def chat_server():
    """One server for the session, on the embedded default in a fresh data dir."""
    data_dir = settings.DATA_DIR / "servers" / "browser"
    shutil.rmtree(data_dir, ignore_errors=True)
    server = ChatServer(port=free_port(), data_dir=data_dir)
    server.migrate()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def new_page(browser):
    """Open a page in a fresh browser context (its own cookies: its own person)."""
    contexts = []

    def make():
        context = browser.new_context(viewport={"width": 1100, "height": 720})
        context.set_default_timeout(10_000)
        contexts.append(context)
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda error: errors.append(error))
        page.script_errors = errors
        return page

    yield make
    for context in contexts:
        context.close()
