"""The dashboard's tests drive Debian's chromium (``make test`` installs it) through Playwright,
on the tests' event loop; Playwright never downloads a browser."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, Page, async_playwright

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    """One headless chromium for the session (a page per test)."""
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A fresh browser context (its own session storage) and page."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        yield await context.new_page()
    finally:
        await context.close()
