"""Fixtures for the dashboard tests: the app served over real HTTP (waitress on loopback) on
the test's database, and a real headless Chromium (Debian's, driven by Playwright)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import REPO_DIR

from pgdyno.web.app import create_app
from pgdyno.web.server import RunningDashboard, start_background

#: Screenshots of each page, kept as test artefacts (gitignored).
ARTIFACTS = REPO_DIR / "test-artifacts" / "web"
CHROMIUM = os.environ.get("PGDYNO_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def reports_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "reports"
    folder.mkdir()
    return folder


@pytest.fixture
def start_dashboard(
    database_url: str, reports_dir: Path
) -> Iterator[Callable[..., RunningDashboard]]:
    """start_dashboard(**create_app kwargs) -> a dashboard on 127.0.0.1, stopped afterwards."""
    running: list[RunningDashboard] = []

    def start(**kwargs: Any) -> RunningDashboard:
        kwargs.setdefault("reports_dir", reports_dir)
        host = kwargs.pop("host", "127.0.0.1")
        dashboard = start_background(create_app(database_url, **kwargs), host=host)
        running.append(dashboard)
        return dashboard

    yield start
    for dashboard in running:
        dashboard.stop()


@pytest.fixture
def dashboard(start_dashboard: Callable[..., RunningDashboard]) -> RunningDashboard:
    return start_dashboard()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        if os.environ.get("PGDYNO_REQUIRE_BROWSER") == "1":
            pytest.fail(f"PGDYNO_REQUIRE_BROWSER=1 but {CHROMIUM} is missing (.ci/run installs it)")
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (or run .ci/run)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


class Page:
    """A browser tab that records console errors and failed requests; tests assert none."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.page, name)

    def screenshot_as(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def page(browser: Any) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    tab = Page(context.new_page())
    tab.set_default_timeout(15_000)
    yield tab
    errors = list(tab.errors)
    context.close()
    assert errors == [], f"console errors in the browser: {errors}"


# The local platform running a test Procfile (for the scaling timeline's 0 -> 1 -> 0 cycle).
from acceptance.conftest import start_platform  # noqa: E402, F401
