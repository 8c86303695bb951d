"""The load generator's LL-HLS viewers against the synthetic origin: they follow the stream part
by part, and a viewer whose rendition is gone (404, a rung the ladder dropped) moves to another
one, as hls.js does, instead of hammering the missing one."""

from __future__ import annotations

import asyncio
import time

from aiohttp.test_utils import TestServer

from loadtest import llviewers
from loadtest.liveorigin import SyntheticLive, app


async def test_viewers_follow_the_stream_and_leave_a_dropped_rendition() -> None:
    live = SyntheticLive("live0001", ("v360",), 0.2)
    clock = asyncio.create_task(live.run())
    server = TestServer(app(live))
    await server.start_server()
    try:
        await asyncio.sleep(1.5)  # a few parts on the air
        now = time.time()
        log = await llviewers.viewers(server.host, server.port, 2, llviewers.Window(now + 0.5, now + 2.5),
                                      0, 0, "", "live0001", ["v999", "v360"])
    finally:
        clock.cancel()
        await server.close()
    assert log["failures"] == []
    keys = [key for key, _ in log["answered"]]
    assert keys and all(key.startswith("/live/live0001/v360/?_HLS_msn=") for key in keys)
    # Both viewers (the one that began on the missing rendition too) were answered part after part.
    assert len(keys) >= 2 * len(set(keys)) - 2 and len(set(keys)) >= 3
    assert log["latency"] and max(log["latency"]) < 5
