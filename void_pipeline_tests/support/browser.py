"""Debian's chromium driven by Playwright, headless, as the browser tests launch it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright


@contextmanager
def chromium() -> Iterator[Browser]:
    """The system's chromium under Playwright; the test fails saying how to install it when it is missing."""
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("chromium is not installed: `make setup-system` installs it (apt-get install chromium)")
    with sync_playwright() as playwright:
        # no sandbox: it cannot start as root in a container; no /dev/shm: a container's is often too small
        flags = ["--no-sandbox", "--disable-dev-shm-usage"]
        launched = playwright.chromium.launch(executable_path=executable, headless=True, args=flags)
        try:
            yield launched
        finally:
            launched.close()


@contextmanager
def recorded(page: Page, artifacts: Path, name: str) -> Iterator[None]:
    """A screenshot of the page when the block ends; on a failure also its HTML, then the failure goes on."""
    artifacts.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        page.screenshot(path=artifacts / f"{name}-failed.png", full_page=True)
        (artifacts / f"{name}-failed.html").write_text(page.content())
        raise
    page.screenshot(path=artifacts / f"{name}.png", full_page=True)
