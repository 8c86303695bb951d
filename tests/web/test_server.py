"""The pages as HTML, before any script runs: server-rendered lists, escaping, 404s, filters; and
GET /api/v1/videos (public ready videos, newest first), the one API addition the pages need."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from aiohttp.test_utils import TestClient

from control.pages import search_query
from reel.playback_token import KeyRing
from tests.control.conftest import AUTH, MakeClient, claim, signup, upload


async def _ready(client: TestClient, headers: dict, title: str, **fields: str) -> str:
    vid = (await upload(client, title=title, headers=headers, **fields))["video"]["id"]
    job = await claim(client)
    resp = await client.post(f"/api/v1/jobs/{job['id']}/complete", json={"duration": 75},
                             headers=AUTH)
    assert resp.status == 200
    return vid


async def test_latest_lists_public_ready_videos_newest_first(client: TestClient, alice: dict) -> None:
    first = await _ready(client, alice, "first")
    second = await _ready(client, alice, "second")
    await _ready(client, alice, "hidden", privacy="unlisted")
    await upload(client, title="still queued", headers=alice)
    body = await (await client.get("/api/v1/videos?limit=1")).json()
    assert [v["id"] for v in body["items"]] == [second]
    rest = await (await client.get(f"/api/v1/videos?limit=5&cursor={body['next_cursor']}")).json()
    assert [v["id"] for v in rest["items"]] == [first] and rest["next_cursor"] is None
    assert (await client.get("/api/v1/videos?cursor=nonsense")).status == 400


async def test_home_search_channel_and_watch_render_without_scripts(client: TestClient,
                                                                    alice: dict, bob: dict) -> None:
    vid = await _ready(client, alice, "<b>Cats</b> & dogs", tags="pets")
    await client.post(f"/api/v1/videos/{vid}/comments", json={"text": "so <i>cute</i>"}, headers=bob)
    home = await (await client.get("/")).text()
    assert f'href="/watch/{vid}"' in home and "&lt;b&gt;Cats&lt;/b&gt; &amp; dogs" in home
    assert "<b>Cats" not in home and "1:15" in home and "Alice" in home
    found = await (await client.get("/search?q=cats")).text()
    assert f'href="/watch/{vid}"' in found
    none = await (await client.get("/search?q=cats&duration=long")).text()
    assert 'id="no-results"' in none and "removing a filter" in none
    watch = await (await client.get(f"/watch/{vid}")).text()
    assert "so &lt;i&gt;cute&lt;/i&gt;" in watch and 'data-follow="' in watch
    owner = re.search(r'href="/channel/([^"]+)"', watch).group(1)
    channel = await (await client.get(f"/channel/{owner}")).text()
    assert f'href="/watch/{vid}"' in channel and "Alice" in channel


async def test_not_found_and_private_pages(client: TestClient, alice: dict) -> None:
    vid = await _ready(client, alice, "secret", privacy="private")
    for path in (f"/watch/{vid}", "/watch/nosuchvideo", "/watch/a%3Fb", "/channel/nobody",
                 "/channel/a%2Fb", "/v/a%3Fb", "/static/app/..%2Fpages.py", "/static/app/x%00.js"):
        resp = await client.get(path)
        assert resp.status == 404, path
        assert resp.content_type in ("text/html", "application/problem+json"), path
    # A bearer header does not make a page personal (pages never act on the API's behalf).
    assert (await client.get(f"/watch/{vid}", headers=alice)).status == 404
    resp = await client.get(f"/v/{vid}", allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"] == f"/watch/{vid}"


async def test_the_owner_opens_a_private_video_with_the_watch_cookie(make_client: MakeClient) -> None:
    client = await make_client(playback_keys=KeyRing({"k1": b"k" * 16}, "k1"))
    alice = await signup(client, "alice@example.com", "Alice")
    bob = await signup(client, "bob@example.com", "Bob")
    vid = await _ready(client, alice, "secret", privacy="private")
    await client.post(f"/api/v1/videos/{vid}/comments", json={"text": "note to self"}, headers=alice)
    mine = alice["Authorization"].split()[1]
    resp = await client.get(f"/watch/{vid}", cookies={"reel_watch": mine})
    page = await resp.text()
    assert resp.status == 200 and "secret" in page and "note to self" in page
    assert resp.headers["Cache-Control"] == "private, no-store" and resp.headers["Vary"] == "Cookie"
    # Its media URLs carry a playback token: the poster, and so the storyboard beside it.
    assert re.search(rf"/vod/{vid}/~[^/\"]+/thumbs/poster\.jpg", page)
    # Someone else's session, an ended one, or none: the same 404 as for a video that is not there.
    for cookies in ({"reel_watch": bob["Authorization"].split()[1]}, {"reel_watch": "ended"}, {}):
        client.session.cookie_jar.clear()
        resp = await client.get(f"/watch/{vid}", cookies=cookies)
        assert resp.status == 404 and "secret" not in await resp.text(), cookies
    public = await _ready(client, alice, "open to all")
    resp = await client.get(f"/watch/{public}", cookies={"reel_watch": mine})
    assert resp.status == 200 and resp.headers["Cache-Control"] == "no-cache"


async def test_follow_state(client: TestClient, alice: dict, bob: dict) -> None:
    alice_id = (await (await client.get("/api/v1/me", headers=alice)).json())["id"]
    url = f"/api/v1/users/{alice_id}/follow"
    assert await (await client.get(url, headers=bob)).json() == {"following": False}
    assert (await client.put(url, headers=bob)).status == 204
    assert await (await client.get(url, headers=bob)).json() == {"following": True}
    assert (await client.get(url)).status == 401


async def test_live_now_lists_public_streams_on_air_and_home_shows_them(client: TestClient,
                                                                        alice: dict) -> None:
    streams = []
    for title, privacy in (("<i>on air</i>", "public"), ("hidden show", "private"),
                           ("not yet", "public")):
        resp = await client.post("/api/v1/live", json={"title": title, "privacy": privacy},
                                 headers=alice)
        assert resp.status == 201
        streams.append(await resp.json())
    for created in streams[:2]:  # a publisher connects to the first two
        resp = await client.post("/api/v1/ingest/authorize", headers=AUTH,
                                 json={"stream_key": created["stream_key"]})
        handle = (await resp.json())["publisher"]
        resp = await client.post(f"/api/v1/ingest/streams/{handle}/connected", headers=AUTH)
        assert resp.status == 200
    on_air = streams[0]["video"]["id"]
    body = await (await client.get("/api/v1/videos?state=live")).json()
    assert [v["id"] for v in body["items"]] == [on_air]
    assert (await client.get("/api/v1/videos?state=gone")).status == 400
    home = await (await client.get("/")).text()
    row = home.split('id="live-now"')[1].split("</section>")[0]
    assert f'href="/watch/{on_air}"' in row and "&lt;i&gt;on air" in row
    assert "LIVE" in row and "0 watching" in row and "hidden show" not in home
    watch = await (await client.get(f"/watch/{on_air}")).text()
    assert 'id="live-badge">LIVE' in watch and "0 watching" in watch
    waiting = await (await client.get(f"/watch/{streams[2]['video']['id']}")).text()
    assert "Waiting for the stream to start" in waiting
    assert "Go live" in await (await client.get("/live")).text()
    assert on_air not in await (await client.get("/shorts")).text()  # shorts are videos


async def test_scripts_styles_and_tus_client_are_served(client: TestClient) -> None:
    for path, kind in (("/static/app/app.js", "text/javascript"), ("/static/app/app.css", "text/css"),
                       ("/static/tus.min.js", "text/javascript")):
        resp = await client.get(path)
        assert resp.status == 200 and resp.content_type == kind, path


def test_search_filters_become_api_bounds() -> None:
    now = datetime(2026, 1, 31, tzinfo=UTC)
    query = search_query({"q": " cats ", "duration": "medium", "uploaded": "week"}, now)
    assert query == {"q": "cats", "limit": "24", "min_duration": "240", "max_duration": "1200",
                     "uploaded_after": "2026-01-24T00:00:00+00:00"}
    assert search_query({"q": "x", "duration": "bogus", "uploaded": "bogus"}, now) == {
        "q": "x", "limit": "24"}
    assert search_query({"q": "x", "cursor": "24"}, now)["cursor"] == "24"


async def test_search_pages_on(client: TestClient, alice: dict) -> None:
    for n in range(26):
        await _ready(client, alice, f"kitten {n}")
    first = await (await client.get("/search?q=kitten&duration=short")).text()
    assert first.count('class="card"') == 24
    more = re.search(r'href="([^"]*cursor=24[^"]*)">More results', first).group(1)
    assert "duration=short" in more
    rest = await (await client.get(more.replace("&amp;", "&"))).text()
    assert rest.count('class="card"') == 2 and "More results" not in rest
    bad = await (await client.get("/search?q=kitten&cursor=x")).text()
    assert 'class="error"' in bad and "cursor" in bad
