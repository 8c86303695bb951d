"""Fixtures shared by every part's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page

from tests.player import chromium
from tests.s3server import S3Server


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium (Debian's), once per module: Playwright's sync API holds an event loop
    while it runs, which asyncio tests in later modules must not find running."""
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A real S3 API server (SeaweedFS) on loopback, once per test session."""
    server = S3Server()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The standard AWS variables pointing at `s3_server`, for this test (and what it starts)."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server
