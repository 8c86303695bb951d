"""An LL-HLS viewer that behaves as hls.js does in low-latency mode: the master through geo, a
variant by the simulated link, a plain reload to tune in and a start PART-HOLD-BACK behind the
live edge, then for every part the blocking reload (`_HLS_msn`/`_HLS_part`) and the
preload-hinted part at once; on an ABR switch, the new rendition's first reload is placed with
the RENDITION-REPORT of the old one. The audio rendition the variant's AUDIO group names is
followed the same way beside it, in a greenlet of its own (requests named "live audio ...");
`--no-live-audio`, or a master without audio: video only. It speaks HTTP only.

What Locust does not measure goes to the tally: `live.latency` (a video part's arrival minus its
end by PROGRAM-DATE-TIME), stalls (a part of either rendition arriving after its play time, the
viewer playing in real time from its start: a player without sound waits too), switches, and
the parts each edge served (`tally.parts`, audio's included, `live.audio_parts` of them), against
which the edges' upstream part requests are counted.
"""

from __future__ import annotations

import random
import time
from urllib.parse import urljoin, urlsplit

import gevent
from locust import FastHttpUser, between, task

from loadtest.hls import Master, Variant, parse_master
from loadtest.llhls import LivePlaylist
from loadtest.runtime import Run, edge_of
from loadtest.users import Aborted, Link, choose


class LiveViewer(FastHttpUser):
    """One viewer of one live stream at a time: the celebrity's (`--celebrity-share` of them) or
    one of the long tail's, for about `--watch-seconds` (exponential), then another."""

    abstract = True
    wait_time = between(0.5, 2.0)
    needs_catalog = False

    def on_start(self) -> None:
        self.run: Run = self.environment.reel  # type: ignore[attr-defined]
        self.options = self.environment.parsed_options
        self.rng = random.Random()
        self.link = Link(self.rng, self.options.link_mbps)
        streams = [s for s in self.options.live.split(",") if s]
        if not streams:
            raise SystemExit("reel loadtest live: give --live ID[,ID...] (the celebrity's first)")
        self.streams = streams

    def pick(self) -> str:
        if len(self.streams) == 1 or self.rng.random() < self.options.celebrity_share:
            return self.streams[0]
        return self.rng.choice(self.streams[1:])

    @task
    def watch(self) -> None:
        tally = self.run.tally
        tally.count("player.views")
        stream = self.pick()
        if stream == self.streams[0]:
            tally.count("player.views.hot")
        try:
            LiveView(self, stream).play()
        except Aborted:
            tally.count("player.views.failed")

    def get(self, url: str, name: str, kind: str,
            follow: bool = True) -> tuple[int, str, bytes, float, str | None]:
        """GET `url`: (status, final url, body, seconds, Location). A non-200 (other than a
        redirect not followed) fails the request in Locust and raises Aborted."""
        started = time.perf_counter()
        with self.client.get(url, name=name, catch_response=True, allow_redirects=follow) as resp:
            ttfb = time.perf_counter() - started
            body = resp.content or b""
            took = time.perf_counter() - started
            location = (resp.headers or {}).get("Location") if not follow else None
            if resp.status_code != 200 and location is None:
                resp.failure(f"{name}: HTTP {resp.status_code}")
                raise Aborted
            tally = self.run.tally
            if cache := (resp.headers or {}).get("X-Cache"):
                tally.count(f"cache.{cache}")
                tally.edges.add(edge_of(url))
            if kind != "blocking":  # a blocking reload's wait is the stream's, not the server's
                tally.observe(f"ttfb.{kind}", ttfb)
        return resp.status_code, url, body, took, location


class LiveView:
    def __init__(self, viewer: LiveViewer, stream: str) -> None:
        self.viewer, self.stream = viewer, stream
        self.tally = viewer.run.tally
        self.play_origin: float | None = None  # wall time minus PDT: when a given PDT plays
        self.inits: set[str] = set()
        self.audio: Audio | None = None

    def master(self) -> Master:
        viewer = self.viewer
        steer = viewer.options.entry == "steer"
        geo = f"{viewer.host}{'/steer' if steer else ''}/live/{self.stream}/master.m3u8"
        status, url, body, _, location = viewer.get(geo, "master (geo)", "geo", follow=False)
        if location is not None:
            url = urljoin(geo, location)
            _, url, body, _, _ = viewer.get(url, "master.m3u8", "playlist")
        try:
            return parse_master(body.decode("utf-8", "replace"), url)
        except ValueError:
            raise Aborted from None

    def playlist(self, url: str, name: str = "playlist", kind: str = "playlist") -> LivePlaylist:
        _, _, body, _, _ = self.viewer.get(url, name, kind)
        try:
            return LivePlaylist(body.decode("utf-8", "replace"))
        except ValueError:
            raise Aborted from None

    def play(self) -> None:
        viewer, options = self.viewer, self.viewer.options
        began = time.monotonic()
        master = self.master()
        variant = choose(master.variants, viewer.link.bps)
        playlist = self.playlist(variant.uri)
        watch_until = time.monotonic() + viewer.rng.expovariate(1.0 / max(options.watch_seconds or 60.0, 1.0))
        edge = playlist.live_edge()
        if edge is None:
            raise Aborted
        # hls.js starts PART-HOLD-BACK behind the live edge.
        self.play_origin = time.time() + playlist.hold - edge
        self.tally.observe("player.startup", time.monotonic() - began)
        self.listen(master, variant, watch_until)
        try:
            while time.monotonic() < watch_until:
                if self.audio is not None and self.audio.failed:
                    raise Aborted  # hls.js: an audio track that cannot load is fatal
                playlist, hint, now = self.step(variant.uri, playlist, VIDEO)
                end = playlist.ends.get(hint[1])
                if end is not None:
                    self.tally.observe("live.latency", max(now - end, 1e-4))
                    self.played(now, end, playlist.target)
                viewer.link.wander()
                better = choose(master.variants, viewer.link.bps)
                if better != variant:
                    playlist = self.switch(variant, better, playlist)
                    variant = better
                    self.listen(master, variant, watch_until)
        except BaseException:
            if self.audio is not None:  # aborted, or the user stopped: no request left behind
                self.audio.stop(wait=False)
            raise
        if self.audio is not None:
            self.audio.stop()

    def listen(self, master: Master, variant: Variant, until: float) -> None:
        """Follow the audio rendition `variant`'s group names (if it is another than the one
        followed: a switch between groups), unless the master has none or audio is off."""
        uri = None if self.viewer.options.no_live_audio else master.audio_for(variant)
        if self.audio is not None and self.audio.uri == uri:
            return
        if self.audio is not None:
            self.audio.stop(wait=False)  # hls.js drops the old track's loads
        self.audio = Audio(self, uri, until) if uri else None

    def step(self, uri: str, playlist: LivePlaylist,
             names: dict[str, str]) -> tuple[LivePlaylist, tuple[str, tuple[int, int]], float]:
        """One part of the rendition at `uri`: its init once, the blocking reload for the next
        part and the hinted part at once; (the reload's playlist, the hint, when both were in)."""
        viewer = self.viewer
        if playlist.init and urljoin(uri, playlist.init) not in self.inits:
            init = urljoin(uri, playlist.init)
            viewer.get(init, names["init"], "segment")
            self.inits.add(init)
        wanted, hint = playlist.next(), playlist.hint
        if wanted is None or hint is None:
            raise Aborted
        reload_url = _with_query(uri, f"_HLS_msn={wanted[0]}&_HLS_part={wanted[1]}")
        part_url = urljoin(uri, hint[0])
        # Both at once, as hls.js asks for the hinted part while its reload is held.
        part = gevent.spawn(viewer.get, part_url, names["part"], "segment")
        playlist = self.playlist(reload_url, names["blocking"], "blocking")
        part.join()
        if part.exception is not None:
            raise Aborted
        self.tally.parts.add(f"{edge_of(part_url)} {urlsplit(part_url).path}")
        return playlist, hint, time.time()

    def played(self, now: float, end: float, target: float) -> None:
        """A part (video or audio) ending at `end` by PDT arrived at `now`: late for its play
        time, a stall (the player waits for both)."""
        assert self.play_origin is not None
        due = self.play_origin + end - target  # when the part starts playing
        if now > due:
            self.tally.count("player.stalls")
            self.tally.observe("player.stall", now - due)
            self.play_origin += now - due  # it plays from now: later by the stall

    def switch(self, old: Variant, new: Variant, playlist: LivePlaylist) -> LivePlaylist:
        """A switch: the new rendition's reload placed by the old one's RENDITION-REPORT."""
        self.tally.count("player.switch.up" if new.bandwidth > old.bandwidth else "player.switch.down")
        report = next((part for uri, part in playlist.reports.items()
                       if urljoin(old.uri, uri) == new.uri.partition("?")[0]), None)
        if report is None:
            return self.playlist(new.uri)
        self.tally.count("live.rendition_report")
        return self.playlist(_with_query(new.uri, f"_HLS_msn={report[0]}&_HLS_part={report[1]}"),
                             "playlist (blocking)", "blocking")


VIDEO = {"init": "init", "part": "part", "blocking": "playlist (blocking)"}
AUDIO = {"init": "live audio init", "part": "live audio part", "blocking": "live audio playlist (blocking)"}


class Audio:
    """The audio rendition of a view, followed as the video is (a plain reload, then a blocking
    reload and the hinted part per part) in a greenlet beside it until `until` or `stop`."""

    def __init__(self, view: LiveView, uri: str, until: float) -> None:
        self.view, self.uri, self.until = view, uri, until
        self.failed = False
        self.greenlet = gevent.spawn(self.follow)

    def follow(self) -> None:
        view = self.view
        try:
            playlist = view.playlist(self.uri, "live audio playlist")
            while time.monotonic() < self.until:
                playlist, hint, now = view.step(self.uri, playlist, AUDIO)
                view.tally.count("live.audio_parts")
                end = playlist.ends.get(hint[1])
                if end is not None:
                    view.played(now, end, playlist.target)
        except Aborted:
            self.failed = True

    def stop(self, wait: bool = True) -> None:
        """Stop; with `wait`, once the request in flight has ended (a part at most)."""
        self.until = 0.0
        if wait:
            self.greenlet.join(timeout=30)
        self.greenlet.kill(block=False)


def _with_query(uri: str, query: str) -> str:
    return f"{uri}{'&' if '?' in uri else '?'}{query}"
