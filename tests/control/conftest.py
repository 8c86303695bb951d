"""Fixtures for the control tests: a real control app on loopback with a DirectoryStore."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient, TestServer

from control import make_app
from origin.store import DirectoryStore

TOKEN = "test-worker-token"
GEO = "http://geo.test:8000"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

MakeClient = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def store(tmp_path: Path) -> DirectoryStore:
    return DirectoryStore(tmp_path / "objects")


@pytest.fixture
async def make_client(tmp_path: Path, store: DirectoryStore) -> AsyncIterator[MakeClient]:
    clients: list[TestClient] = []

    async def factory(max_upload_bytes: int = 64 * 1024 * 1024, **tuning: Any) -> TestClient:
        app = make_app(tmp_path / "data", store, GEO, TOKEN, max_upload_bytes, **tuning)
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.close()


@pytest.fixture
async def client(make_client: MakeClient) -> TestClient:
    return await make_client()


def form(data: bytes, title: str | None = "A clip", filename: str = "clip.mp4") -> FormData:
    fd = FormData()
    if title is not None:
        fd.add_field("title", title)
    fd.add_field("file", data, filename=filename, content_type="video/mp4")
    return fd


async def upload(client: TestClient, data: bytes = b"\x00fake-media" * 100,
                 title: str | None = "A clip") -> dict[str, Any]:
    resp = await client.post("/api/v1/videos", data=form(data, title))
    assert resp.status == 202, await resp.text()
    return await resp.json()


async def claim(client: TestClient, worker: str = "w1") -> dict[str, Any] | None:
    resp = await client.post("/api/v1/jobs/claim", json={"worker": worker}, headers=AUTH)
    if resp.status == 204:
        return None
    assert resp.status == 200, await resp.text()
    return (await resp.json())["job"]


async def video(client: TestClient, video_id: str) -> dict[str, Any]:
    resp = await client.get(f"/api/v1/videos/{video_id}")
    assert resp.status == 200, await resp.text()
    return await resp.json()


def stored_files(store: DirectoryStore) -> list[str]:
    """Every object and temporary file the store holds."""
    return sorted(p.relative_to(store.root).as_posix() for p in store.root.rglob("*")
                  if p.is_file())


async def assert_problem(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    body = await resp.json(content_type=None)
    assert body["status"] == status
    assert set(body) >= {"type", "title", "status", "detail"}
    return body
