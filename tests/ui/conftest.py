"""A real browser for the dashboard's tests: Debian's headless Chromium driven by Playwright.

Playwright is pointed at the system's ``chromium`` (``.ci/run`` installs Debian's package); its own
browser download is never used. Each page a test opens is watched for console errors and uncaught
exceptions, which fail the test.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import ColdbrewServer


def chromium_path() -> str | None:
    for candidate in (shutil.which("chromium"), "/usr/bin/chromium", shutil.which("chromium-browser")):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    # Not session-wide: Playwright's sync API marks an asyncio loop running on the main thread for
    # as long as it is open, and every later test that starts a loop there (asyncio.run) failed.
    path = chromium_path()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have Chromium (.ci/run installs Debian's chromium package)")
        pytest.skip("no chromium here (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # As root (CI, containers) Chromium's sandbox cannot start; the pages are our own.
        launched = playwright.chromium.launch(
            executable_path=path, args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"]
        )
        yield launched
        launched.close()


class Tab:
    """One browser page on a server, failing on any console error or uncaught exception."""

    def __init__(self, browser: Any, server: ColdbrewServer, shots: Path) -> None:
        self.server, self.shots = server, shots
        self.context = browser.new_context(viewport={"width": 1400, "height": 900}, base_url=server.url)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        self.page.set_default_timeout(30_000)

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text} at {message.location}")

    def open(self, path: str) -> Any:
        response = self.page.goto(path)
        assert response is not None and response.ok, (
            f"{path}: {response.status if response else 'no response'}"
        )
        self.page.wait_for_load_state("networkidle")
        self.assert_clean()
        return response

    def screenshot(self, name: str, full_page: bool = True) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path

    def assert_clean(self) -> None:
        assert not self.errors, self.errors

    def close(self) -> None:
        self.assert_clean()
        self.context.close()


@pytest.fixture
def tab(browser: Any, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Tab]:
    server: ColdbrewServer = request.getfixturevalue("ui_server")
    opened = Tab(browser, server, tmp_path)
    yield opened
    opened.close()
