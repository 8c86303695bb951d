"""The web app's tests: `reel up --demo` (the e2e suite's stack) and the Debian Chromium."""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser

from tests.control.conftest import (  # noqa: F401 - the control app, for the server-side tests
    alice,
    bob,
    client,
    database,
    make_client,
    postgres,
    store,
)
from tests.e2e.conftest import Demo, demo  # noqa: F401 - the stack, shared by the browser tests
from tests.player import chromium

PASSWORD = "correct horse battery"


def api(base: str, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
    """A JSON call to control; returns (status, body)."""
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    if data is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def new_account(base: str, name: str) -> dict:
    """A fresh user, signed in: the session as POST /api/v1/sessions answers it."""
    email = f"{name.lower().replace(' ', '.')}.{secrets.token_hex(4)}@example.com"
    status, _ = api(base, "POST", "/api/v1/users", {"email": email, "password": PASSWORD, "name": name})
    assert status == 201
    status, session = api(base, "POST", "/api/v1/sessions", {"email": email, "password": PASSWORD})
    assert status == 201
    return session


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium per module: sync Playwright holds an event loop while it runs, which the
    async (aiohttp) tests beside these cannot share."""
    with chromium() as b:
        yield b


@pytest.fixture(scope="session")
def catalog(demo: Demo) -> list[str]:  # noqa: F811 - the fixture imported above
    """The demo video and four copies of it (admin copies share its renditions): enough videos
    for the short feed to swipe three times with three more warmed ahead."""
    token = (demo.up.data / "admin-token").read_text().strip()
    copies = [{"title": f"short number {n}", "tags": ["short"]} for n in range(1, 5)]
    status, body = api(demo.control, "POST", f"/api/v1/videos/{demo.video_id}/copies",
                       {"copies": copies}, token)
    assert status == 201, body
    return [demo.video_id, *(v["id"] for v in body["items"])]
