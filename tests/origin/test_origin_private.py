"""Private and unlisted videos at the origin: control's access marker, playback tokens, one 403
for every refusal (whether the video exists or not), X-Reel-Access for the edges."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from origin.app import make_app
from origin.dirstore import DirectoryStore
from origin.layout import access_key
from reel.playback_token import ACCESS_HEADER, KeyRing, token_path
from tests.edge.test_edge_private import altered

RING = KeyRing.parse(json.dumps(KeyRing.generate("k1")))
VID, PUBLIC, GHOST = "privatevid1", "publicvid1", "nosuchvid1"
KINDS = ("master.m3u8", "v360/index.m3u8", "v360/iframes.m3u8", "v360/init.mp4",
         "v360/seg_00001.m4s", "thumbs/poster.jpg", "thumbs/storyboard.vtt", "thumbs/storyboard_01.jpg")


@pytest.fixture
async def client(tmp_path) -> AsyncIterator[TestClient]:
    store = DirectoryStore(tmp_path / "objects")
    for video in (VID, PUBLIC):
        for name in KINDS:
            await store.write_bytes(f"vod/{video}/{name}", b"#EXTM3U\n#EXT-X-ENDLIST\n")
    await store.write_bytes(access_key(VID), b"unlisted")
    client = TestClient(TestServer(make_app(store, region="eu", ring=RING)))
    await client.start_server()
    yield client
    await client.close()


async def test_every_kind_needs_a_valid_token(client: TestClient) -> None:
    good = RING.sign(VID, 60)
    bad = (None, RING.sign(VID, -1), RING.sign(PUBLIC, 60), altered(good), "garbage")
    for name in KINDS:
        path = f"/vod/{VID}/{name}"
        async with client.get(token_path(path, good)) as resp:
            assert resp.status == 200 and resp.headers[ACCESS_HEADER] == "unlisted"
        for token in bad:
            for video in (VID, GHOST):
                target = path.replace(VID, video)
                async with client.get(target if token is None else token_path(target, token)) as resp:
                    assert resp.status == 403, (name, token, video)
                    assert resp.content_type == "application/problem+json"


async def test_public_videos_need_none_and_missing_objects_stay_404(client: TestClient) -> None:
    async with client.get(f"/vod/{PUBLIC}/master.m3u8") as resp:
        assert resp.status == 200 and ACCESS_HEADER not in resp.headers
    async with client.get(f"/vod/{PUBLIC}/v360/seg_00009.m4s") as resp:
        assert resp.status == 404
    # An unknown video: 404 only to a valid token's bearer, marked so edges refuse the others.
    async with client.get(token_path(f"/vod/{GHOST}/master.m3u8", RING.sign(GHOST, 60))) as resp:
        assert resp.status == 404 and resp.headers[ACCESS_HEADER] == "unknown"


async def test_the_marker_is_never_served(client: TestClient) -> None:
    async with client.get("/" + access_key(VID)) as resp:
        assert resp.status == 404
