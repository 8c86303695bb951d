"""Search: ranked, prefix as you type, accent/case-insensitive, filters, cursors, hostile input."""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp.test_utils import TestClient

from control.app import DB_KEY
from tests.control.conftest import AUTH, assert_problem, claim, signup, upload


async def _ready(client: TestClient, headers: dict, title: str, duration: float = 10,
                 **fields: str) -> str:
    vid = (await upload(client, title=title, headers=headers, **fields))["video"]["id"]
    job = await claim(client)
    await client.post(f"/api/v1/jobs/{job['id']}/complete", json={"duration": duration},
                      headers=AUTH)
    return vid


async def _search(client: TestClient, **query: str) -> list[str]:
    resp = await client.get("/api/v1/search?" + urlencode(query))
    assert resp.status == 200, await resp.text()
    return [v["id"] for v in (await resp.json())["items"]]


async def test_ranked_accent_case_prefix(client: TestClient, alice: dict) -> None:
    in_title = await _ready(client, alice, "Crème brûlée at home")
    in_tags = await _ready(client, alice, "Dessert night", tags="creme,brulee")
    in_text = await _ready(client, alice, "Kitchen vlog", description="we also make creme brulee")
    await _ready(client, alice, "Skateboarding")
    assert await _search(client, q="CREME BRULEE") == [in_title, in_tags, in_text]
    assert await _search(client, q="crème") == [in_title, in_tags, in_text]
    assert await _search(client, q="brû") == [in_title, in_tags, in_text]  # as you type
    assert await _search(client, q="skate") != []
    assert await _search(client, q="kitchen vl") == [in_text]
    assert await _search(client, q="nothing matches this") == []


async def test_only_public_ready_videos_are_found(client: TestClient, alice: dict) -> None:
    public = await _ready(client, alice, "Harbour lights")
    private = await _ready(client, alice, "Harbour secret", privacy="private")
    unlisted = await _ready(client, alice, "Harbour unlisted", privacy="unlisted")
    await upload(client, title="Harbour queued", headers=alice)
    assert await _search(client, q="harbour") == [public]
    # edits move videos in and out of the index
    await client.patch(f"/api/v1/videos/{private}", json={"privacy": "public"}, headers=alice)
    await client.patch(f"/api/v1/videos/{public}", json={"title": "Night sky"}, headers=alice)
    assert await _search(client, q="harbour") == [private]
    assert await _search(client, q="night sky") == [public]
    await client.delete(f"/api/v1/videos/{private}", headers=alice)
    assert await _search(client, q="harbour") == []
    assert unlisted


async def test_filters_and_cursor(client: TestClient, alice: dict, bob: dict) -> None:
    short = await _ready(client, alice, "Sunset timelapse", duration=5)
    long = await _ready(client, alice, "Sunset timelapse long", duration=600)
    bobs = await _ready(client, bob, "Sunset timelapse by Bob", duration=30)
    bob_id = (await (await client.get("/api/v1/me", headers=bob)).json())["id"]
    assert await _search(client, q="sunset", creator=bob_id) == [bobs]
    assert set(await _search(client, q="sunset", min_duration="20")) == {long, bobs}
    assert await _search(client, q="sunset", max_duration="10") == [short]
    assert set(await _search(client, q="sunset", uploaded_after="2000-01-01")) == {
        short, long, bobs}
    assert await _search(client, q="sunset", uploaded_before="2000-01-01T00:00:00Z") == []
    seen, cursor = [], None
    while True:
        query = {"q": "sunset", "limit": "2"} | ({"cursor": cursor} if cursor else {})
        body = await (await client.get("/api/v1/search?" + urlencode(query))).json()
        seen += [v["id"] for v in body["items"]]
        if not (cursor := body["next_cursor"]):
            break
    assert sorted(seen) == sorted([short, long, bobs])
    for bad in ({"q": ""}, {"q": "x" * 201}, {"q": "a", "min_duration": "x"},
                {"q": "a", "uploaded_after": "yesterday"}, {"q": "a", "limit": "1000"},
                {"q": "a", "cursor": "bm90IGEgY3Vyc29y"}, {"q": "a", "max_duration": "nan"}):
        await assert_problem(await client.get("/api/v1/search?" + urlencode(bad)), 400)


async def test_hostile_queries_are_words_not_syntax(client: TestClient, alice: dict) -> None:
    vid = await _ready(client, alice, "Robert'); DROP TABLE videos; -- tables")
    hostile = ['"', "NEAR(a b)", "title:robert", "robert*", "a OR b", "a AND NOT b", "^robert",
               "robert\" OR \"x", "'; DROP TABLE videos; --", "\x00robert", "ｒｏｂｅｒｔ",
               "ROBERT", "👍🏽 robert", "r\u0301obert", "(", "*", "-robert", "{title}: x",
               "dʼart robert", "ŉ", "x\u02bcy", "robert ʹ"]
    for q in hostile:
        resp = await client.get("/api/v1/search?" + urlencode({"q": q}))
        assert resp.status == 200, (q, await resp.text())
        assert {v["id"] for v in (await resp.json())["items"]} <= {vid}, q
    for no_words in ('"', "(", "*", "!!! ???"):  # nothing to look for: nothing found
        assert await _search(client, q=no_words) == []
    assert await _search(client, q="drop table") == [vid]
    assert await _search(client, q="ROBERT") == [vid]
    assert (await client.app[DB_KEY].fetchone("SELECT count(*) FROM videos"))[0] == 1


async def test_search_is_open_to_anonymous_and_any_user(client: TestClient) -> None:
    carol = await signup(client, "carol@example.com")
    await _ready(client, carol, "Open search")
    assert len(await _search(client, q="open")) == 1
