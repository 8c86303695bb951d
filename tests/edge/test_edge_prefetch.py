"""Prefetch: a viewer who keeps watching finds the next segments already at the edge."""

from __future__ import annotations

from urllib.parse import quote

from tests.edge.conftest import VID, metric, pattern
from tests.edge.test_edge_coalescing import until

REND = f"/vod/{VID}/v720"
SEGMENTS = [f"seg_{n:05d}.m4s" for n in range(1, 9)]


def playlist(names: list[str]) -> bytes:
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-TARGETDURATION:6", '#EXT-X-MAP:URI="init.mp4"']
    for name in names:
        lines += ["#EXTINF:6.0,", name]
    return ("\n".join([*lines, "#EXT-X-ENDLIST", ""])).encode()


def add_rendition(steer, names: list[str] = SEGMENTS) -> None:
    steer.add(f"{REND}/index.m3u8", playlist(names))
    for i, name in enumerate(names):
        steer.add(f"{REND}/{name}", pattern(200_000, i))


async def watch(client, name: str, **kw) -> str:
    async with client.get(f"{REND}/{name}", **kw) as resp:
        assert resp.status == 200
        await resp.read()
        return resp.headers["X-Cache"]


async def test_a_viewer_never_waits_on_a_cold_miss_after_the_first_segment(make_edge, upstream):
    steer, url = upstream
    add_rendition(steer)
    client = await make_edge([url], prefetch_segments=3)
    assert await watch(client, "index.m3u8") == "MISS"
    verdicts = [await watch(client, name) for name in SEGMENTS]
    assert verdicts[0] == "MISS"
    assert all(v in ("HIT", "COALESCED") for v in verdicts[1:]), verdicts
    assert all(steer.requests[f"{REND}/{name}"] == 1 for name in SEGMENTS)
    assert await metric(client, "reel_edge_prefetches_total") == len(SEGMENTS) - 1
    assert await metric(client, "reel_edge_prefetch_hits_total") == len(SEGMENTS) - 1


async def test_prefetch_reads_only_the_cached_playlist_and_stays_in_it(make_edge, upstream):
    steer, url = upstream
    add_rendition(steer, SEGMENTS[:3])
    client = await make_edge([url], prefetch_segments=5)
    assert await watch(client, SEGMENTS[0]) == "MISS"  # playlist not cached: nothing to go on
    assert await watch(client, SEGMENTS[1]) == "MISS"
    await watch(client, "index.m3u8")
    await watch(client, SEGMENTS[0])  # a HIT looks ahead too
    await until(lambda: metric(client, "reel_edge_inflight_fetches"), 0)
    assert await watch(client, SEGMENTS[2]) == "HIT"
    assert sum(steer.requests.values()) == 4  # three segments and the playlist, once each


async def test_cmcd_next_object_request_is_prefetched(make_edge, upstream):
    steer, url = upstream
    add_rendition(steer)
    client = await make_edge([url], prefetch_segments=0)
    cmcd = quote('bl=2000,br=3000,nor="seg_00005.m4s",sid="6e2fb550"')
    await watch(client, f"{SEGMENTS[0]}?CMCD={cmcd}")
    await until(lambda: metric(client, "reel_edge_inflight_fetches"), 0)
    assert await watch(client, "seg_00005.m4s") == "HIT"
    # The header form (CMCD-Request), and a path relative to the segment.
    await watch(client, SEGMENTS[1], headers={"CMCD-Request": 'nor="../v720/seg_00007.m4s"'})
    await until(lambda: metric(client, "reel_edge_inflight_fetches"), 0)
    assert await watch(client, "seg_00007.m4s") == "HIT"
    assert await metric(client, "reel_edge_prefetches_total") == 2


async def test_cmcd_cannot_send_the_edge_anywhere(make_edge, upstream):
    steer, url = upstream
    add_rendition(steer)
    client = await make_edge([url], prefetch_segments=0)
    for nor in ("../../../../etc/passwd", "http://elsewhere.example/x", "/sources/abcdef123/source",
                "%2e%2e/x", "..%2fx", "seg%00.m4s"):
        await watch(client, SEGMENTS[0], headers={"CMCD-Request": f'nor="{nor}"'})
    await watch(client, SEGMENTS[0], headers={"CMCD-Request": 'nor="seg_00002.m4s"'})  # this one is fine
    await until(lambda: metric(client, "reel_edge_inflight_fetches"), 0)
    assert await metric(client, "reel_edge_prefetches_total") == 1
    assert set(steer.requests) == {f"{REND}/{SEGMENTS[0]}", f"{REND}/{SEGMENTS[1]}"}


async def test_prefetches_are_bounded(make_edge, upstream):
    steer, url = upstream
    add_rendition(steer)
    steer.held.update(f"{REND}/{name}" for name in SEGMENTS[1:])  # prefetches stay in flight
    client = await make_edge([url], prefetch_segments=6, prefetch_concurrency=2)
    await watch(client, "index.m3u8")
    await watch(client, SEGMENTS[0])
    await until(lambda: metric(client, "reel_edge_inflight_fetches"), 2)
    assert await metric(client, "reel_edge_prefetches_total") == 2
    # Prefetches never queue up client requests: another object goes straight through.
    assert await watch(client, "index.m3u8") == "HIT"
    steer.add(f"{REND}/init.mp4", pattern(800))
    assert await watch(client, "init.mp4") == "MISS"
    steer.release.set()
