"""Fixtures for the control tests: a real control app on loopback with a DirectoryStore."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient, TestServer

from control.accounts import PasswordHasher
from control.app import make_app
from origin.store import DirectoryStore
from tests.control.pgserver import PostgresServer

TOKEN = "test-worker-token"
GEO = "http://geo.test:8000"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

PASSWORD = "correct horse battery"
FAST_HASHER = PasswordHasher(n=2**10)  # real scrypt, cheaper: tests sign up many users

MakeClient = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def store(tmp_path: Path) -> DirectoryStore:
    return DirectoryStore(tmp_path / "objects")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the whole session."""
    server = PostgresServer()
    try:
        # Its own thread and loop: it may be first asked for from inside a test's running loop.
        with ThreadPoolExecutor(1) as thread:
            thread.submit(asyncio.run, server.start()).result()
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest) -> AsyncIterator[str | None]:
    """Each app test runs twice: on SQLite (None: the default) and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield None
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    yield await server.empty_shared()


@pytest.fixture
async def make_client(tmp_path: Path, store: DirectoryStore,
                      database: str | None) -> AsyncIterator[MakeClient]:
    clients: list[TestClient] = []

    async def factory(max_upload_bytes: int = 64 * 1024 * 1024, **tuning: Any) -> TestClient:
        tuning.setdefault("password_hasher", FAST_HASHER)
        tuning.setdefault("database", database)
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


async def signup(client: TestClient, email: str = "owner@example.com",
                 name: str | None = None) -> dict[str, str]:
    """Sign up (or, when the account exists, sign in) and return the Authorization header."""
    body: dict[str, Any] = {"email": email, "password": PASSWORD}
    if name:
        body["name"] = name
    resp = await client.post("/api/v1/users", json=body)
    assert resp.status in (201, 409), await resp.text()
    resp = await client.post("/api/v1/sessions", json={"email": email, "password": PASSWORD})
    assert resp.status == 201, await resp.text()
    return {"Authorization": f"Bearer {(await resp.json())['token']}"}


@pytest.fixture
async def alice(client: TestClient) -> dict[str, str]:
    return await signup(client, "alice@example.com", "Alice")


@pytest.fixture
async def bob(client: TestClient) -> dict[str, str]:
    return await signup(client, "bob@example.com", "Bob")


def form(data: bytes, title: str | None = "A clip", filename: str = "clip.mp4") -> FormData:
    fd = FormData()
    if title is not None:
        fd.add_field("title", title)
    fd.add_field("file", data, filename=filename, content_type="video/mp4")
    return fd


async def upload(client: TestClient, data: bytes | None = None,
                 title: str | None = "A clip", headers: dict[str, str] | None = None,
                 **fields: str) -> dict[str, Any]:
    """Upload through multipart as `headers`' user (default: owner@example.com).

    Without `data`, fresh random bytes: identical content would be deduplicated."""
    headers = headers or await signup(client)
    fd = form(os.urandom(1000) if data is None else data, title)
    for name, value in fields.items():
        fd.add_field(name, value)
    resp = await client.post("/api/v1/videos", data=fd, headers=headers)
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
