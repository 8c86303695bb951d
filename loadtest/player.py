"""A Locust HLS viewer: master through geo, one variant, its segments on a playback clock.

    locust -f loadtest/player.py --headless -u 20 -r 5 -t 30s --host http://127.0.0.1:8400 \
        --video-id ID

Each simulated viewer fetches the master playlist through geo (following the redirect to its edge),
picks a variant, loads the init segment, then fetches media segments only as fast as it would play
them, keeping a small buffer ahead: the request pattern of a real player, not a flood.
"""

from __future__ import annotations

import time
from urllib.parse import urljoin

import m3u8
from locust import HttpUser, events, task

BUFFER_AHEAD = 12.0  # seconds of media a player keeps buffered


@events.init_command_line_parser.add_listener
def _options(parser) -> None:  # noqa: ANN001 - locust's parser type
    parser.add_argument("--video-id", required=True, help="video to watch")
    parser.add_argument("--rendition", type=int, default=-1,
                        help="variant index in the master (-1: the lowest bitrate)")


class HlsViewer(HttpUser):
    """One viewer watching one video from the start."""

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.master_url = f"{self.host}/vod/{options.video_id}/master.m3u8"
        self.variant_index = options.rendition

    @task
    def watch(self) -> None:
        with self.client.get(self.master_url, name="master.m3u8", catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"master: {resp.status_code}")
                return
            master = m3u8.loads(resp.text, uri=resp.url)
        variants = sorted(master.playlists, key=lambda p: p.stream_info.bandwidth)
        variant_url = urljoin(resp.url, variants[self.variant_index].uri)
        media = m3u8.loads(self.client.get(variant_url, name="index.m3u8").text)
        self.client.get(urljoin(variant_url, media.segment_map[0].uri), name="init.mp4")
        started = time.monotonic()
        buffered = 0.0
        for segment in media.segments:
            # Wait until the buffer falls below BUFFER_AHEAD seconds, as a player would.
            playhead = time.monotonic() - started
            if buffered - playhead > BUFFER_AHEAD:
                time.sleep(buffered - playhead - BUFFER_AHEAD)
            with self.client.get(urljoin(variant_url, segment.uri), name="segment",
                                 catch_response=True) as seg:
                if seg.status_code != 200 or not seg.content:
                    seg.failure(f"segment: {seg.status_code}")
                    return
            buffered += segment.duration
