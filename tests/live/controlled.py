"""A real control app on loopback for the live tests that go through it (admission, heartbeats,
viewer counts, grace periods), and a bounded wait for what it reports."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from aiohttp.test_utils import TestClient, TestServer

from control.app import make_app
from control.live import LiveSettings
from origin.store import DirectoryStore
from tests.control.conftest import FAST_HASHER, GEO, TOKEN
from tests.live.publishers import BOUND

T = TypeVar("T")


@asynccontextmanager
async def live_control(root: Path, **settings: Any) -> AsyncIterator[TestClient]:
    """Control with live streams (`settings`: LiveSettings fields), its data under `root`."""
    app = make_app(root / "data", DirectoryStore(root / "objects"), GEO, TOKEN, 1024 * 1024,
                   password_hasher=FAST_HASHER,
                   live=LiveSettings(rtmp_url="rtmp://127.0.0.1:1935/live", **settings))
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


async def until(check: Callable[[], Awaitable[T]], what: str, every: float = 0.2) -> T:
    """Poll the async `check` until it returns something true (a bound, not a measure)."""
    deadline = asyncio.get_running_loop().time() + BOUND
    while not (value := await check()):
        assert asyncio.get_running_loop().time() < deadline, f"never {what}"
        await asyncio.sleep(every)
    return value
