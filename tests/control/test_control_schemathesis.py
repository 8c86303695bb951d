"""The API against its own OpenAPI document, with every schemathesis check: the `st` command line
(examples, coverage and fuzzing phases) against the running app, as a signed-in user and, for the
job and ingest APIs, as a worker. Besides never a 5xx and answers as documented, that is: every schema-valid
request accepted (2xx, or 401/403/404/409 for what a schema cannot know), every invalid one
refused, missing or ignored credentials refused with 401, undeclared methods answered 405.
Bounded: a few deterministic cases per operation."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from aiohttp import web

pytest.importorskip("schemathesis")

from control.app import make_app  # noqa: E402
from control.ratelimit import RateLimits  # noqa: E402
from origin.store import DirectoryStore  # noqa: E402
from tests.control.conftest import FAST_HASHER, GEO, PASSWORD, TOKEN  # noqa: E402
from tests.control.pgserver import PostgresServer  # noqa: E402

EXAMPLES = 8  # per operation and phase
ST = Path(sys.executable).with_name("st")
# tus answers a missing or unsupported Tus-Resumable with 412 and an Upload-Length over
# Tus-Max-Size with 413, as its protocol says: refusals as good as schemathesis's default 400s.
CONFIG = """
[checks.negative_data_rejection]
expected-statuses = [400, 401, 403, 404, 405, 406, 409, 412, 413, 415, 422, 428]
[checks.missing_required_header]
expected-statuses = [400, 401, 403, 406, 412, 415, 422]
"""
# One exception: schemathesis cannot read back a multipart body holding a binary part, and its
# negation of a negated character class can stay valid (it appends "*" to a text field), so it
# reports an accepted "invalid" upload form that is valid as sent. The upload form runs without
# that one check; its fields are refused as the JSON API refuses them (test_control_videos.py).
UPLOAD = "POST /api/v1/videos"


class ServerThread:
    """The control app on a loopback port, in its own thread and loop (schemathesis is sync)."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(app)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.url = ""

    def __enter__(self) -> ServerThread:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)
        return self

    async def _start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerThread]:
    url = None
    if request.param == "postgresql":
        postgres: PostgresServer = request.getfixturevalue("postgres")
        url = asyncio.run(postgres.empty_shared())
    app = make_app(tmp_path / "data", DirectoryStore(tmp_path / "objects"), GEO, TOKEN,
                   1024 * 1024, password_hasher=FAST_HASHER, rate_limits=RateLimits.off(),
                   database=url)
    with ServerThread(app) as running:
        yield running


def _schemathesis(url: str, token: str, config: Path, *filters: str) -> str:
    """`st run` with every check against `url`; its report when anything failed, else ""."""
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.control.schemathesis_hooks",
           "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [str(ST), "--no-color", "--config-file", str(config), "run",
         f"{url}/api/v1/openapi.json", "--checks", "all", "--phases", "examples,coverage,fuzzing",
         "--max-examples", str(EXAMPLES), "--generation-deterministic",
         "--header", f"Authorization: Bearer {token}", *filters],
        env=env, cwd=config.parent, capture_output=True, text=True, timeout=600, check=False)
    return "" if done.returncode == 0 else done.stdout[-20000:] + done.stderr[-2000:]


def test_api_conforms_to_its_openapi_document(server: ServerThread, tmp_path: Path) -> None:
    http = requests.Session()
    account = {"email": "fuzz@example.com", "password": PASSWORD}
    assert http.post(f"{server.url}/api/v1/users", json=account).status_code == 201
    token = http.post(f"{server.url}/api/v1/sessions", json=account).json()["token"]
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    # Signing out would end the session the other operations use.
    users = _schemathesis(server.url, token, config, "--exclude-name", UPLOAD,
                          "--exclude-path-regex", "^/api/v1/(jobs/|ingest/|sessions/current)")
    form = _schemathesis(server.url, token, config, "--include-name", UPLOAD,
                         "--exclude-checks", "negative_data_rejection")
    workers = _schemathesis(server.url, TOKEN, config, "--include-path-regex",
                            "^/api/v1/(jobs|ingest)/")
    assert not users, users
    assert not form, form
    assert not workers, workers
