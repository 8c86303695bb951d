"""Watch page, hls.js, health, metrics, OpenAPI, and problem+json for every error."""

from __future__ import annotations

import json
import re
from pathlib import Path

from aiohttp.test_utils import TestClient

from tests.control.conftest import AUTH, MakeClient, assert_problem, claim, form, upload


async def test_watch_page_queued_then_ready(client: TestClient) -> None:
    up = await upload(client, title="<b>Cats</b> & dogs")
    vid = up["video"]["id"]
    resp = await client.get(f"/watch/{vid}")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    page = await resp.text()
    assert '<script src="/static/hls.min.js"></script>' in page
    assert "<video" in page
    assert "&lt;b&gt;Cats&lt;/b&gt; &amp; dogs" in page and "<b>Cats" not in page
    assert "window.hlsErrors" in page and "window.playedLevels" in page and "window.hls" in page
    data = json.loads(re.search(r'id="reel-video">(.*?)</script>', page, re.S).group(1))
    assert data["video"]["state"] == "queued" and data["video"]["playback_url"] is None
    assert data["api_url"] == f"/api/v1/videos/{vid}"

    job = await claim(client)
    await client.post(f"/api/v1/jobs/{job['id']}/complete", json={"duration": 4.0},
                      headers=AUTH)
    page = await (await client.get(f"/watch/{vid}")).text()
    data = json.loads(re.search(r'id="reel-video">(.*?)</script>', page, re.S).group(1))
    assert data["video"]["playback_url"].endswith(f"/steer/vod/{vid}/master.m3u8")


async def test_watch_unknown_is_404_html(client: TestClient) -> None:
    resp = await client.get("/watch/nosuchvideo")
    assert resp.status == 404
    assert resp.content_type == "text/html"


async def test_hlsjs_served_with_cache(client: TestClient) -> None:
    resp = await client.get("/static/hls.min.js")
    assert resp.status == 200
    assert "max-age=86400" in resp.headers["Cache-Control"]
    assert resp.content_type == "text/javascript"
    assert len(await resp.read()) > 100_000


async def test_hlsjs_missing_says_npm_ci(make_client: MakeClient, tmp_path: Path) -> None:
    client = await make_client(hlsjs_path=tmp_path / "nope" / "hls.min.js")
    problem = await assert_problem(await client.get("/static/hls.min.js"), 404)
    assert "npm ci" in problem["detail"]


async def test_hlsjs_from_env(make_client: MakeClient, tmp_path: Path, monkeypatch) -> None:
    js = tmp_path / "custom-hls.js"
    js.write_text("/* hls */")
    monkeypatch.setenv("REEL_HLSJS", str(js))
    client = await make_client()
    assert await (await client.get("/static/hls.min.js")).text() == "/* hls */"


async def test_healthz_and_metrics(client: TestClient) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200 and await resp.json() == {"status": "ok"}
    text = await (await client.get("/metrics")).text()
    for name in ("reel_control_uploads_total", "reel_control_upload_bytes_total",
                 "reel_control_jobs", "reel_control_request_seconds"):
        assert f"# TYPE {name}" in text
    assert 'route="/healthz"' in text


async def test_openapi_lists_every_route(client: TestClient) -> None:
    resp = await client.get("/api/v1/openapi.json")
    assert resp.status == 200
    doc = json.loads(await resp.text())
    assert doc["openapi"].startswith("3.1")
    served = {(r.method.lower(), r.resource.canonical) for r in client.app.router.routes()}
    documented = {(method, path) for path, ops in doc["paths"].items() for method in ops}
    # every route served is documented, and every documented one served (a GET answers HEAD too)
    implicit_head = {("head", path) for method, path in documented if method == "get"} - documented
    assert served - implicit_head == documented
    # every $ref resolves
    for ref in re.findall(r'"\$ref": "#/([^"]+)"', json.dumps(doc)):
        node = doc
        for piece in ref.split("/"):
            node = node[piece]


async def test_unknown_api_route_and_wrong_method(client: TestClient) -> None:
    await assert_problem(await client.get("/api/v1/nothing-here"), 404)
    await assert_problem(await client.get("/api/v1/jobs/claim"), 405)
    resp = await client.put("/api/v1/videos/abcdefgh")
    problem = await assert_problem(resp, 405)
    assert "GET" in resp.headers["Allow"] and "PUT" in problem["detail"]


async def test_unexpected_error_is_500_problem_without_traceback(client: TestClient,
                                                                  store, alice: dict[str, str]) -> None:
    import shutil

    shutil.rmtree(store.root)  # the store breaks under the app's feet
    resp = await client.post("/api/v1/videos", headers=alice, data=form(b"some media"))
    problem = await assert_problem(resp, 500)
    assert "Traceback" not in await resp.text()
    assert "unexpected" in problem["detail"]
    assert (await client.get("/healthz")).status == 200
