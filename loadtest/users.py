"""The simulated people: an HLS player, a creator, an API viewer. They speak HTTP only.

Request names group Locust's stats by what was asked for (master, playlist, init, segment, ...),
never by URL. What Locust does not measure (X-Cache, TTFB, startup, stalls, rendition switches,
upload interruptions) goes to the process's tally (see loadtest.runtime), not into fake requests.
"""

from __future__ import annotations

import base64
import math
import random
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import gevent
from locust import FastHttpUser, HttpUser, between, task
from locust.exception import RescheduleTask

from loadtest.clip import make_clip
from loadtest.hls import Master, Media, Variant, parse_master, parse_media
from loadtest.popularity import WORDS
from loadtest.runtime import Run, edge_of

SAFETY = 0.8  # a player picks the best variant under this share of its throughput estimate
PASSWORD = "reel-loadtest-password"


class Aborted(Exception):
    """A request failed (already reported to Locust); the view or upload ends here."""


class Link:
    """A viewer's simulated access link: its throughput wanders around a median, per segment."""

    def __init__(self, rng: random.Random, median_mbps: float) -> None:
        self.rng = rng
        self.median = median_mbps * 1e6 * math.exp(rng.gauss(0, 0.5))  # this viewer's own median
        self.bps = self.median

    def wander(self) -> None:
        self.bps = min(self.median * 4, max(self.median / 4, self.bps * math.exp(self.rng.gauss(0, 0.35))))

    def hold(self, size: int, took: float) -> float:
        """Wait until `size` bytes would have crossed the link; the transfer's duration."""
        needed = size * 8 / self.bps
        if needed > took:
            gevent.sleep(needed - took)
        return max(needed, took)


class Estimate:
    """Throughput from measured segment downloads: two EWMAs, the lower one wins (as hls.js)."""

    def __init__(self, initial_bps: float) -> None:
        self.fast = self.slow = initial_bps

    def add(self, size: int, seconds: float) -> None:
        bps = size * 8 / max(seconds, 1e-3)
        self.fast = 0.5 * self.fast + 0.5 * bps
        self.slow = 0.85 * self.slow + 0.15 * bps

    @property
    def bps(self) -> float:
        return min(self.fast, self.slow)


def choose(variants: list[Variant], estimate_bps: float) -> Variant:
    fitting = [v for v in variants if v.bandwidth <= SAFETY * estimate_bps]
    return fitting[-1] if fitting else variants[0]


class HlsPlayer(FastHttpUser):
    """A viewer: master through geo, ABR over the variants from measured throughput, segments on
    a playback clock with a buffer, CMCD on every request. One task run is one view."""

    abstract = True
    needs_catalog = True
    wait_time = between(0.2, 1.5)  # between views

    def on_start(self) -> None:
        self.run: Run = self.environment.reel  # type: ignore[attr-defined]
        self.options = self.environment.parsed_options
        self.rng = random.Random()
        self.link = Link(self.rng, self.options.link_mbps)
        self.estimate = Estimate(self.link.bps)

    @task
    def view(self) -> None:
        assert self.run.catalog is not None
        video = self.run.catalog.pick(self.rng, self.run.elapsed())
        tally = self.run.tally
        tally.count("player.views")
        if video == self.run.catalog.hot:
            tally.count("player.views.hot")
        try:
            Playback(self, video).play()
        except Aborted:
            tally.count("player.views.failed")

    # -- requests --------------------------------------------------------------------------------

    def fetch(self, url: str, name: str, kind: str, cmcd: dict[str, Any] | None = None,
              follow: bool = True, parse: Callable[[str, str], Any] | None = None) -> Fetched:
        """GET `url`. Locust records the full response time; TTFB and X-Cache go to the tally.
        `parse(text, url)` reads a 200's body; a ValueError from it fails the request."""
        headers: dict[str, str] = {}
        if cmcd is not None and self.options.cmcd != "off":
            url, headers = _with_cmcd(url, cmcd, self.options.cmcd)
        started = time.perf_counter()
        with self.client.get(url, name=name, headers=headers, stream=True, catch_response=True,
                             allow_redirects=follow) as resp:
            ttfb = time.perf_counter() - started
            try:
                body = resp.content or b""
            except Exception as exc:  # noqa: BLE001 - a broken body is this request's failure
                resp.failure(f"{name}: body: {exc!r}")
                raise Aborted from None
            took = time.perf_counter() - started
            resp.request_meta["response_time"] = took * 1000
            resp.request_meta["response_length"] = len(body)
            redirect = not follow and resp.status_code in (301, 302, 303, 307, 308)
            if resp.status_code != 200 and not redirect:
                resp.failure(f"{name}: HTTP {resp.status_code}")
                raise Aborted
            parsed = None
            if parse is not None and not redirect:
                try:
                    parsed = parse(body.decode("utf-8", "replace"), url)
                except ValueError as exc:
                    resp.failure(f"{name}: {exc}")
                    raise Aborted from None
            tally = self.run.tally
            if cache := (resp.headers or {}).get("X-Cache"):
                tally.count(f"cache.{cache}")
                tally.edges.add(edge_of(url))
            tally.observe(f"ttfb.{kind}", ttfb)
            location = (resp.headers or {}).get("Location") if redirect else None
        return Fetched(len(body), took, parsed, location)


@dataclass(frozen=True)
class Fetched:
    size: int
    seconds: float
    parsed: Any = None
    location: str | None = None


def _with_cmcd(url: str, data: dict[str, Any], mode: str) -> tuple[str, dict[str, str]]:
    """CMCD (CTA-5004): keys sorted, strings quoted, true booleans bare."""
    def text(items: dict[str, Any]) -> str:
        parts = []
        for key in sorted(items):
            value = items[key]
            if value is True:
                parts.append(key)
            elif isinstance(value, str) and key not in ("ot", "sf", "st"):
                parts.append(f'{key}="{value}"')
            else:
                parts.append(f"{key}={value}")
        return ",".join(parts)

    if mode == "query":
        sep = "&" if "?" in url else "?"
        return f"{url}{sep}CMCD={quote(text(data), safe='')}", {}
    groups = {"CMCD-Request": ("bl", "mtp", "nor", "su"), "CMCD-Object": ("br", "d", "ot"),
              "CMCD-Session": ("cid", "sf", "sid", "st")}
    headers = {}
    for header, keys in groups.items():
        if chosen := {k: v for k, v in data.items() if k in keys}:
            headers[header] = text(chosen)
    return url, headers


class Playback:
    """One view: startup, then segments fetched as the buffer drains, with stalls when it runs dry."""

    def __init__(self, player: HlsPlayer, video: str) -> None:
        self.player = player
        self.video = video
        self.session = str(uuid.uuid4())
        self.tally = player.run.tally
        self.loaded = 0.0  # seconds of media in hand
        self.started_at: float | None = None  # wall time playback began
        self.stalled = 0.0  # seconds spent stalled since

    def cmcd(self, ot: str, **more: Any) -> dict[str, Any]:
        data = {"sid": self.session, "sf": "h", "st": "v", "ot": ot, **more}
        if self.started_at is None:
            data["su"] = True
        return data

    def playhead(self) -> float:
        if self.started_at is None:
            return 0.0
        return min(self.loaded, time.monotonic() - self.started_at - self.stalled)

    def play(self) -> None:
        player, options = self.player, self.player.options
        began = time.monotonic()
        master = self.master()
        variant = choose(master.variants, player.estimate.bps)
        media = self.media(variant.uri)
        audio_uri = master.audio_for(variant)
        audio = self.media(audio_uri, name="audio playlist") if audio_uri else None
        watch = media.duration
        if options.watch_seconds > 0:
            watch = min(watch, self.player.rng.expovariate(1.0 / options.watch_seconds))
        inits: set[str] = set()
        for index, segment in enumerate(media.segments):
            if self.started_at is not None and self.playhead() >= watch:
                break
            # Wait while the buffer is full, as a player does.
            ahead = self.loaded - self.playhead()
            if self.started_at is not None and ahead > options.buffer_seconds:
                gevent.sleep(ahead - options.buffer_seconds)
            size, took = 0, 0.0
            for m, kind in ((media, "v"), (audio, "a")):
                if m is None:
                    continue
                if m.init and m.init not in inits:
                    got = player.fetch(m.init, "init", "segment", self.cmcd(
                        "i", br=variant.bandwidth // 1000))
                    inits.add(m.init)
                    size, took = size + got.size, took + got.seconds
                seg = m.segments[min(index, len(m.segments) - 1)]
                following = m.segments[index + 1].uri if index + 1 < len(m.segments) else None
                extra = {"nor": following.rsplit("/", 1)[-1]} if following else {}
                got = player.fetch(seg.uri, "segment", "segment", self.cmcd(
                    kind, br=variant.bandwidth // 1000, d=round(seg.duration * 1000),
                    bl=int(max(0.0, self.loaded - self.playhead()) * 1000) // 100 * 100,
                    mtp=int(player.estimate.bps / 1000) // 100 * 100, **extra))
                size, took = size + got.size, took + got.seconds
            took = player.link.hold(size, took)
            player.estimate.add(size, took)
            player.link.wander()
            self.arrived(segment.duration, began)
            better = choose(master.variants, player.estimate.bps)
            if better != variant:
                self.tally.count("player.switch.up" if better.bandwidth > variant.bandwidth
                                 else "player.switch.down")
                variant = better
                media = self.media(variant.uri)
        # The viewer watches what is buffered (up to what they meant to watch) before leaving.
        if self.started_at is not None:
            rest = min(watch, self.loaded) - self.playhead()
            if rest > 0:
                gevent.sleep(rest)
        self.tally.count("player.watched_ms", int(self.playhead() * 1000))

    def arrived(self, seconds: float, began: float) -> None:
        now = time.monotonic()
        if self.started_at is None:
            self.started_at = now
            self.tally.observe("player.startup", now - began)
        else:
            dry_at = self.started_at + self.stalled + self.loaded  # when the buffer ran out
            if now > dry_at:
                self.tally.count("player.stalls")
                self.tally.observe("player.stall", now - dry_at)
                self.stalled += now - dry_at
        self.loaded += seconds

    def master(self) -> Master:
        """Geo answers a redirect to an edge, or (content steering) the master itself."""
        steer = self.player.options.entry == "steer"
        geo = f"{self.player.host}{'/steer' if steer else ''}/vod/{self.video}/master.m3u8"
        got = self.player.fetch(geo, "master (geo)", "geo", self.cmcd("m"), follow=False,
                                parse=parse_master)
        if got.location is not None:
            got = self.player.fetch(urljoin(geo, got.location), "master.m3u8", "playlist",
                                    self.cmcd("m"), parse=parse_master)
        return got.parsed

    def media(self, url: str, name: str = "playlist") -> Media:
        return self.player.fetch(url, name, "playlist", self.cmcd("m"), parse=parse_media).parsed


# -- control API users ----------------------------------------------------------------------------


class ControlUser:
    """Sign-up and sign-in against control, and 429 handling shared by creators and API viewers."""

    environment: Any
    client: Any

    def control_url(self, path: str) -> str:
        return self.environment.parsed_options.control.rstrip("/") + path

    def call(self, method: str, path: str, name: str, ok: tuple[int, ...] = (200,),
             **kw: Any) -> Any:
        with self.client.request(method, self.control_url(path), name=name, catch_response=True,
                                 **kw) as resp:
            if resp.status_code == 429:
                # Throttled: a failure an SRE should see; a polite client waits as told.
                resp.failure("429 throttled")
                self.environment.reel.tally.count("api.throttled")
                gevent.sleep(min(30.0, float(resp.headers.get("Retry-After") or 1)))
                raise RescheduleTask
            if resp.status_code not in ok:
                resp.failure(f"{name}: HTTP {resp.status_code} {resp.text[:200]}")
                raise RescheduleTask
            return resp

    def sign_up(self) -> dict[str, str]:
        account = {"email": f"lt-{uuid.uuid4().hex[:16]}@loadtest.invalid", "password": PASSWORD,
                   "name": f"load test {random.choice(WORDS)}"}
        self.call("POST", "/api/v1/users", "sign up", (201,), json=account)
        token = self.call("POST", "/api/v1/sessions", "sign in", (201,), json=account).json()["token"]
        return {"Authorization": f"Bearer {token}"}


def _bind_source(session: Any, address: str) -> None:
    """Make `session` (a FastHttpSession) connect from `address`: every connection pool it
    creates binds its sockets there before connecting."""
    clients = session.client.clientpool
    make = clients.get_client

    def get_client(url: Any) -> Any:
        client = make(url)
        pool = client._connection_pool
        if not getattr(pool, "reel_source", None):
            create = pool._create_tcp_socket

            def bound(family: int, socktype: int, protocol: int) -> socket.socket:
                sock = create(family, socktype, protocol)
                if family == socket.AF_INET:
                    sock.bind((address, 0))
                return sock

            pool._create_tcp_socket, pool.reel_source = bound, address
        return client

    clients.get_client = get_client


class Creator(ControlUser, HttpUser):
    """Signs up, then uploads small generated clips over tus (some cut mid-request and resumed
    from the offset the server reports), and edits each video's metadata."""

    abstract = True
    wait_time = between(1, 3)
    chunk = 64 * 1024

    def on_start(self) -> None:
        self.auth: dict[str, str] = {}

    @task
    def upload(self) -> None:
        if not self.auth:
            self.auth = self.sign_up()
        tally = self.environment.reel.tally
        clip = Clips.one(random.randrange(Clips.VARIANTS))
        title = f"{random.choice(WORDS)} {random.choice(WORDS)} by a creator"
        metadata = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}"
                            for k, v in (("filename", "clip.mp4"), ("title", title)))
        tus = {**self.auth, "Tus-Resumable": "1.0.0"}
        created = self.call("POST", "/api/v1/uploads", "tus create", (201,), headers={
            **tus, "Upload-Length": str(len(clip)), "Upload-Metadata": metadata})
        location = created.headers["Location"]
        path = urlsplit(location).path if "://" in location else location
        tally.count("creator.uploads")
        offset = 0
        if random.random() < self.environment.parsed_options.interrupt:
            self.cut(path, clip[: self.chunk])
            tally.count("creator.interrupted")
            head = self.call("HEAD", path, "tus head (resume)", (200,), headers=tus)
            offset = int(head.headers["Upload-Offset"])
            tally.count("creator.resumed_bytes", offset)
        video_id = None
        while offset < len(clip):
            part = clip[offset: offset + self.chunk]
            resp = self.call("PATCH", path, "tus patch", (204,), data=part, headers={
                **tus, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"})
            offset = int(resp.headers["Upload-Offset"])
            video_id = resp.headers.get("Reel-Video-Id") or video_id
        if video_id is None:
            raise RescheduleTask
        tally.count("creator.completed")
        self.call("PATCH", f"/api/v1/videos/{video_id}", "edit video", json={
            "description": f"All about {random.choice(WORDS)}.",
            "tags": random.sample(WORDS, 3), "category": "other"}, headers=self.auth)
        self.call("GET", f"/api/v1/videos/{video_id}", "video", headers=self.auth)

    def cut(self, path: str, part: bytes) -> None:
        """A PATCH that dies halfway: headers and half the promised bytes, then the connection
        drops (as a phone losing signal would)."""
        parts = urlsplit(self.environment.parsed_options.control)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        if parts.scheme != "http":
            return
        head = (f"PATCH {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nTus-Resumable: 1.0.0\r\n"
                f"Authorization: {self.auth['Authorization']}\r\nUpload-Offset: 0\r\n"
                f"Content-Type: application/offset+octet-stream\r\n"
                f"Content-Length: {len(part)}\r\n\r\n").encode()
        with socket.create_connection((parts.hostname, port), timeout=10) as sock:
            sock.sendall(head + part[: len(part) // 2])
            gevent.sleep(0.2)  # let the server take what arrived before the line drops
        gevent.sleep(0.2)


class Clips:
    """Small distinct clips made once per process by the ffmpeg command line (test sources)."""

    VARIANTS = 3
    _made: dict[int, bytes] = {}

    @classmethod
    def one(cls, variant: int, seconds: float = 2.0) -> bytes:
        if variant not in cls._made:
            cls._made[variant] = make_clip(seconds, tone=440 + 110 * variant)
        return cls._made[variant]


class LocalClient(FastHttpUser):
    """A user that speaks from an address of its own when control is on loopback (127.0.0.0/8
    is all local): two hundred people are two hundred addresses to control's per-address
    limits, not one."""

    abstract = True

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        host = urlsplit(environment.parsed_options.control).hostname or ""
        if host.startswith("127."):
            _bind_source(self.client, f"127.{random.randrange(1, 255)}.{random.randrange(256)}."
                                      f"{random.randrange(1, 255)}")


class ApiViewer(ControlUser, LocalClient):
    """Browses the API: search, a video, its comments, views, trending; a share are signed in and
    also comment and rate. Public data is read without credentials, as an app does so that edges
    may share it (a request with Authorization is the reader's own, never cached); the token goes
    where the answer is the user's: their rating, views, comments.

    A signed-in viewer signed in before the test, as a real app's viewer did (the token kept):
    the catalog's seeded sessions (`reel loadtest seed --viewers`). Only when none were seeded
    does one sign up here, and that shows under "sign up" and "sign in" in the stats."""

    abstract = True
    needs_catalog = True
    wait_time = between(0.5, 2)

    def on_start(self) -> None:
        self.run: Run = self.environment.reel  # type: ignore[attr-defined]
        self.rng = random.Random()
        self.auth: dict[str, str] = {}
        if self.rng.random() < self.environment.parsed_options.signed_in:
            assert self.run.catalog is not None
            if token := self.run.catalog.viewer():
                self.auth = {"Authorization": f"Bearer {token}"}
                self.run.tally.count("api.viewers.seeded")
                return
            try:
                self.auth = self.sign_up()
                self.run.tally.count("api.viewers.signed_up")
            except RescheduleTask:
                pass  # refused (and reported): this one browses anonymously

    def pick(self) -> str:
        assert self.run.catalog is not None
        return self.run.catalog.pick(self.rng, self.run.elapsed())

    @task(4)
    def search(self) -> None:
        self.call("GET", f"/api/v1/search?q={self.rng.choice(WORDS)}", "search")

    @task(3)
    def watch_page_data(self) -> None:
        video = self.pick()
        self.call("GET", f"/api/v1/videos/{video}", "video")
        self.call("GET", f"/api/v1/videos/{video}/comments", "comments")
        self.call("GET", f"/api/v1/videos/{video}/rating", "rating", headers=self.auth)
        self.call("POST", f"/api/v1/videos/{video}/views", "view", headers=self.auth)

    @task(1)
    def trending(self) -> None:
        self.call("GET", "/api/v1/trending", "trending")

    @task(2)
    def engage(self) -> None:
        if not self.auth:
            return
        video = self.pick()
        self.call("POST", f"/api/v1/videos/{video}/comments", "comment", (201,), headers=self.auth,
                  json={"text": f"Love the {self.rng.choice(WORDS)} part"})
        self.call("PUT", f"/api/v1/videos/{video}/rating", "rate", headers=self.auth,
                  json={"rating": self.rng.choice(("like", "dislike", "none"))})


class ApiFloor(ControlUser, LocalClient):
    """An API viewer's pace, every request the one cached read: the `api` suite's floor."""

    abstract = True
    wait_time = ApiViewer.wait_time

    @task
    def cached(self) -> None:
        self.call("GET", "/api/v1/trending", "trending (floor)")
