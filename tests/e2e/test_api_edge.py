"""`reel up` wires the edges to control: the API through every edge, shared reads cached there,
an edit seen through both at once."""

from __future__ import annotations

import aiohttp
import pytest

from tests.e2e.conftest import Demo


@pytest.mark.asyncio
async def test_the_api_through_both_edges(demo: Demo) -> None:
    path = f"/api/v1/videos/{demo.video_id}"
    admin = {"Authorization": f"Bearer {(demo.up.data / 'admin-token').read_text().strip()}"}
    async with aiohttp.ClientSession() as http:
        async with http.get(demo.control + path) as resp:
            direct = await resp.json()
        for edge in demo.edges:
            answers = []
            for _ in range(2):
                async with http.get(edge + path) as resp:
                    assert resp.status == 200
                    assert resp.headers["Cache-Control"].startswith("public, max-age=")
                    answers.append((resp.headers["X-Cache"], await resp.json()))
            assert answers[0][1]["title"] == direct["title"]
            assert answers[1][0] in ("HIT", "STALE")  # the second read is the edge's copy

        async with http.patch(demo.control + path, json={"title": "Retitled through reel up"},
                              headers=admin) as resp:
            assert resp.status == 200, await resp.text()
        for edge in demo.edges:  # control purged both edges' copies
            async with http.get(edge + path) as resp:
                assert (await resp.json())["title"] == "Retitled through reel up"

        async with http.patch(demo.control + path, json={"title": direct["title"]}, headers=admin):
            pass  # as the other tests know it
