"""The OpenAPI document against the running API: schemathesis generates requests for every
operation from /api/v1/openapi.json and checks each answer (no 5xx; status code, content type,
headers and body as documented). Bounded: a few cases per operation, derandomized."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from aiohttp import web

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from control.app import make_app  # noqa: E402
from control.ratelimit import RateLimits  # noqa: E402
from origin.store import DirectoryStore  # noqa: E402
from tests.control.conftest import FAST_HASHER, GEO, PASSWORD, TOKEN  # noqa: E402
from tests.control.pgserver import PostgresServer  # noqa: E402

EXAMPLES = 10  # per operation
# What the document promises: never a 5xx, and status code, content type, headers and body as
# documented. (Whether every schema-valid request is accepted, or every invalid one refused, is
# beyond what a JSON Schema can say about this API: emails, quotas, duplicates, states.)
CHECKS = [schemathesis.checks.not_a_server_error, schemathesis.checks.status_code_conformance,
          schemathesis.checks.content_type_conformance,
          schemathesis.checks.response_headers_conformance,
          schemathesis.checks.response_schema_conformance]


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


def _fuzz(operation: schemathesis.APIOperation, base_url: str, http: requests.Session,
          headers: dict[str, str], failures: list[str]) -> int:
    """Run EXAMPLES generated cases (valid and invalid) of `operation`, with and without
    credentials; append what failed to `failures`. Returns how many ran."""
    calls = 0

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck), phases=["explicit", "generate"])
    @given(case=st.one_of(operation.as_strategy(), operation.as_strategy(
               generation_mode=schemathesis.GenerationMode.NEGATIVE)),
           anonymous=st.booleans())
    def check(case: schemathesis.Case, anonymous: bool) -> None:
        nonlocal calls
        calls += 1
        try:
            case.call_and_validate(base_url=base_url, session=http, checks=CHECKS,
                                   headers=None if anonymous else headers)
        except (Exception, BaseExceptionGroup) as exc:  # schemathesis raises a group
            failures.append(f"{operation.label}: {str(exc)[:600]}")
            raise

    try:
        check()
    except (Exception, BaseExceptionGroup):  # collected above, reported together by the caller
        pass
    return calls


def test_api_conforms_to_its_openapi_document(server: ServerThread) -> None:
    http = requests.Session()
    account = {"email": "fuzz@example.com", "password": PASSWORD}
    assert http.post(f"{server.url}/api/v1/users", json=account).status_code == 201
    token = http.post(f"{server.url}/api/v1/sessions", json=account).json()["token"]
    user = {"Authorization": f"Bearer {token}"}
    worker = {"Authorization": f"Bearer {TOKEN}"}
    document = http.get(f"{server.url}/api/v1/openapi.json").json()
    schema = schemathesis.openapi.from_dict(document)
    failures: list[str] = []
    calls = 0
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 30
    for operation in operations:
        if operation.path == "/api/v1/sessions/current":
            continue  # signing out would end the session the other operations use
        headers = worker if operation.path.startswith("/api/v1/jobs/") else user
        calls += _fuzz(operation, server.url, http, headers, failures)
    assert not failures, "\n\n".join(failures)
    assert calls >= 3 * len(operations)
