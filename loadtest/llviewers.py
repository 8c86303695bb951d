"""Thousands of LL-HLS viewers in a few processes (asyncio + httptools), each doing what hls.js
does in low-latency mode: the master, then on its video rendition and on the audio rendition the
master names for it (the variant's AUDIO group; none, video only), each on connections of its
own, a plain reload to tune in, then for every part the blocking reload for the next part
(`_HLS_msn`/`_HLS_part`, as hls.js computes them) and the preload-hinted part, both at once.
Latency is the video's (its parts by PROGRAM-DATE-TIME); a stall is a part of either rendition
arriving after its play time (a player with no audio waits as well). Shared by
loadtest/bench_live_edge.py (a synthetic origin) and loadtest/bench_live.py --load (a real
stream, beside a real hls.js player).

A child process runs `python -m loadtest.llviewers HOST PORT COUNT SINCE UNTIL RAMP FIRST MARK
VIDEO RENDITIONS [--no-audio]` and prints its log as JSON when UNTIL passes or on SIGTERM (the
viewers then finish the request they are in and stop). `--no-audio`: video only, no master read
(the viewers as they were). Besides the viewers' own figures (`answered`: every blocking reload
answered, audio's too; `audio`: how many of them were audio's) the log has the process's CPU
seconds and its event loop's lag (how late a 50 ms timer fires): a starved viewer process shows
there, not as the server's fault.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httptools

from loadtest.hls import Master, parse_master
from loadtest.llhls import LivePlaylist

ROOT = Path(__file__).resolve().parent.parent


class _Answer(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection's responses, parsed by httptools as they arrive."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiting: asyncio.Future | None = None
        self.body: list[bytes] = []
        self.headers: dict[bytes, bytes] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail(exc or ConnectionResetError("closed"))

    def _fail(self, exc: Exception) -> None:
        if self.waiting is not None and not self.waiting.done():
            self.waiting.set_exception(exc if isinstance(exc, OSError) else OSError(str(exc)))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.waiting is not None and not self.waiting.done():
            # Stamped as it arrives: what a viewer measures is not its process's own backlog.
            self.waiting.set_result((self.parser.get_status_code(), self.headers, b"".join(self.body),
                                     time.time()))


class Http:
    """One keep-alive connection, reopened when it breaks: thousands run in one process."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.protocol: _Answer | None = None

    async def get(self, path: str) -> tuple[int, dict[bytes, bytes], bytes, float]:
        for attempt in (0, 1):
            if self.protocol is None or self.protocol.transport is None:
                loop = asyncio.get_running_loop()
                async with asyncio.timeout(30):
                    _, self.protocol = await loop.create_connection(_Answer, self.host, self.port)
            protocol = self.protocol
            protocol.waiting = asyncio.get_running_loop().create_future()
            protocol.body, protocol.headers = [], {}
            assert protocol.transport is not None
            protocol.transport.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
            try:
                async with asyncio.timeout(30):
                    return await protocol.waiting
            except (OSError, TimeoutError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.protocol is not None and self.protocol.transport is not None:
            self.protocol.transport.close()
        self.protocol = None


class Playlists:
    """Playlists read once per process: every viewer of a rendition gets the same bytes (`parse`
    reads one: a media playlist by default, or the master)."""

    def __init__(self, bound: int = 256, parse: Callable[[bytes], Any] | None = None) -> None:
        self._parsed: dict[bytes, Any] = {}
        self._bound = bound
        self._parse = parse or (lambda body: LivePlaylist(body.decode()))

    def __call__(self, body: bytes) -> Any:
        playlist = self._parsed.get(body)
        if playlist is None:
            if len(self._parsed) > self._bound:
                self._parsed.clear()
            playlist = self._parsed[body] = self._parse(body)
        return playlist


@dataclass
class Window:
    """Viewers join before `since`, are measured from it, and stop at `until` (moved to now on
    SIGTERM)."""

    since: float
    until: float


def audio_of(master: Master, base: str) -> str | None:
    """The path ("/live/VIDEO/a128/") of the audio rendition the variant at `base` names (a rung
    the master no longer lists: the group of the first variant that has one), else None."""
    variant = next((v for v in master.variants if urlsplit(v.uri).path == base + "index.m3u8"), None)
    variants = [variant] if variant is not None else master.variants
    uri = next((u for v in variants if (u := master.audio_for(v))), None)
    return urlsplit(uri).path.rpartition("/")[0] + "/" if uri else None


class Viewer:
    """One viewer: the master (unless `audio` is off), then its video rendition and the audio
    rendition the master names, each followed by a `Follower` of its own, as hls.js does. Both
    play on one clock: a part of either arriving after its play time is a stall."""

    def __init__(self, host: str, port: int, path: str, window: Window, log: dict[str, list],
                 parsed: Playlists, mark: str = "", others: tuple[str, ...] = (),
                 masters: Playlists | None = None) -> None:
        self.host, self.port = host, port
        self.video = Follower(self, path, others)
        self.mark = mark  # the probe's: its requests are told apart in the origin's count
        self.window, self.log, self.parsed = window, log, parsed
        self.masters = masters  # None: video only, the master unread
        self.play_origin: float | None = None  # wall time at which media time 0 plays

    async def run(self) -> None:
        followers = [self.video]
        try:
            if self.masters is not None:
                master = self.video.base.rsplit("/", 2)[0] + "/master.m3u8"
                status, _, body, _ = await self.video.playlist_conn.get(master + self.mark)
                if status != 200:
                    self.log["failures"].append(status)
                    return
                audio = audio_of(self.masters(body), self.video.base)
                if audio is not None:
                    followers.append(Follower(self, audio, (), audio=True))
            await asyncio.gather(*(self._follow(f) for f in followers))
        except (OSError, ValueError, TimeoutError) as exc:
            self.log["failures"].append(type(exc).__name__)
        finally:
            for follower in followers:
                follower.close()

    async def _follow(self, follower: Follower) -> None:
        """One rendition to its end; a broken one is a failure and stops alone (the other one
        must not be left running unwatched)."""
        try:
            await follower.run()
        except (OSError, ValueError, TimeoutError) as exc:
            self.log["failures"].append(type(exc).__name__)

    def played(self, now: float, end: float, target: float) -> None:
        """A part ending at `end` (PDT) arrived at `now`: a stall if it is late for its play time."""
        if now < self.window.since:  # still joining: not measured, the start moves with the stream
            self.play_origin = now - end + target if self.play_origin is None \
                else max(self.play_origin, now - end + target)
        elif self.play_origin is not None and now > self.play_origin + end - target:
            self.log["stalls"].append(now)
            self.play_origin = now - end + target  # rebuffered: plays from here


class Follower:
    """One rendition of a viewer: a plain reload to tune in, then for every part the blocking
    reload for the next part and the preload-hinted part at once, on two keep-alive connections
    of its own (a held reload keeps one busy). Video measures latency; both can stall."""

    def __init__(self, viewer: Viewer, base: str, others: tuple[str, ...], audio: bool = False) -> None:
        self.viewer, self.audio = viewer, audio
        self.base = base  # "/live/VIDEO/RENDITION/"
        self.others = list(others)  # where to go when the rendition is dropped (404), as hls.js
        self.playlist_conn = Http(viewer.host, viewer.port)
        self.part_conn = Http(viewer.host, viewer.port)

    def close(self) -> None:
        self.playlist_conn.close()
        self.part_conn.close()

    async def run(self) -> None:
        viewer = self.viewer
        window, log, mark = viewer.window, viewer.log, viewer.mark
        status, _, body, _ = await self.playlist_conn.get(self.base + "index.m3u8")
        while status == 404 and self.others:  # a rung the ladder dropped: the next one
            self.base = self.others.pop(0)
            status, _, body, _ = await self.playlist_conn.get(self.base + "index.m3u8")
        if status != 200:
            log["failures"].append(status)
            return
        playlist = viewer.parsed(body)
        if viewer.play_origin is None and playlist.last is not None and playlist.last in playlist.ends:
            # Start PART-HOLD-BACK behind the live edge, playing in real time from now.
            viewer.play_origin = time.time() + playlist.hold - playlist.ends[playlist.last]
        while time.time() < window.until:
            wanted = playlist.next()
            hint = playlist.hint
            if wanted is None or hint is None:
                return
            query = f"?_HLS_msn={wanted[0]}&_HLS_part={wanted[1]}"
            reload, part = await asyncio.gather(
                self.playlist_conn.get(self.base + "index.m3u8" + query + mark.replace("?", "&")),
                self.part_conn.get(self.base + hint[0] + mark))
            now = max(reload[3], part[3])
            if reload[0] != 200 or part[0] != 200:
                if now >= window.since:
                    log["failures"].append(reload[0] if reload[0] != 200 else part[0])
                await asyncio.sleep(0.5)
                status, _, body, _ = await self.playlist_conn.get(self.base + "index.m3u8")
                if status == 404 and self.others:  # the ladder dropped this rung: leave it
                    self.base = self.others.pop(0)
                    status, _, body, _ = await self.playlist_conn.get(self.base + "index.m3u8")
                playlist = viewer.parsed(body) if status == 200 else playlist
                continue
            playlist = viewer.parsed(reload[2])
            # Parts the reload lists past the hinted one (a stream that published several at
            # once): hls.js loads them too, one after the other.
            for later in sorted(p for p in playlist.uris if p > hint[1]):
                got = await self.part_conn.get(self.base + playlist.uris[later] + mark)
                now = max(now, got[3])
            end = playlist.ends.get(playlist.last or hint[1], playlist.ends.get(hint[1]))
            if now >= window.since:
                log["answered"].append((self.base + query, reload[3]))
                if self.audio:
                    log["audio"].append(now)
                elif end is not None:
                    log["latency"].append(now - end)  # latency is the picture's, as before
            if end is not None:
                viewer.played(now, end, playlist.target)


async def _loop_lag(window: Window, lags: list[float], every: float = 0.05) -> None:
    """How late a timer fires in this process (measured window only): its CPU starvation."""
    while time.time() < window.until:
        asked = time.monotonic()
        await asyncio.sleep(every)
        if time.time() >= window.since:
            lags.append(time.monotonic() - asked - every)


async def viewers(host: str, port: int, count: int, window: Window, ramp: float, first: int,
                  mark: str, video: str, renditions: list[str], audio: bool = True) -> dict:
    """`count` viewers of `video`'s `renditions` (round-robin from `first`), each with the audio
    rendition its master names unless `audio` is off."""
    log: dict[str, list] = {"latency": [], "stalls": [], "failures": [], "answered": [], "audio": [],
                            "loop_lag": []}
    lag = asyncio.create_task(_loop_lag(window, log["loop_lag"]))
    parsed = Playlists()
    url = f"http://{host}:{port}/live/{video}/master.m3u8"
    masters = Playlists(8, lambda body: parse_master(body.decode("utf-8", "replace"), url)) if audio else None
    tasks = []
    for i in range(count):
        paths = [f"/live/{video}/{renditions[(first + i + k) % len(renditions)]}/"
                 for k in range(len(renditions))]
        tasks.append(asyncio.create_task(
            Viewer(host, port, paths[0], window, log, parsed, mark, tuple(paths[1:]), masters).run()))
        await asyncio.sleep(ramp / max(count, 1))
    await asyncio.gather(*tasks)
    await lag
    return log


def child(argv: list[str]) -> None:
    audio = "--no-audio" not in argv
    host, port, count, since, until, ramp, first, mark, video, renditions = \
        [a for a in argv if a != "--no-audio"]
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    window = Window(float(since), float(until))
    signal.signal(signal.SIGTERM, lambda *_: setattr(window, "until", min(window.until, time.time())))
    log = runner(viewers(host, int(port), int(count), window, float(ramp), int(first),
                         mark.strip(), video, renditions.split(","), audio))
    # The answers by key (every time a key was answered), for added latency against a probe.
    answered: dict[str, list[float]] = {}
    for key, at in log.pop("answered"):
        answered.setdefault(key, []).append(at)
    cpu = time.process_time()
    json.dump({**log, "answered": answered, "audio": len(log["audio"]), "cpu": cpu,
               "seconds": time.time() - window.since}, sys.stdout)


def spawn(host: str, port: int, count: int, window: Window, ramp: float, first: int, video: str,
          renditions: list[str], mark: str = "", nice: int = 0, audio: bool = True) -> subprocess.Popen:
    """One child process of `count` viewers (its JSON log on stdout when it ends), at `nice`;
    `audio` off: video only, the master unread (as before viewers followed audio)."""
    return subprocess.Popen(
        [sys.executable, "-m", "loadtest.llviewers", host, str(port), str(count), str(window.since),
         str(window.until), str(ramp), str(first), mark or " ", video, ",".join(renditions),
         *(() if audio else ("--no-audio",))],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=ROOT,
        preexec_fn=(lambda: os.nice(nice)) if nice else None)


def spread(host: str, port: int, viewers: int, procs: int, window: Window, ramp: float, video: str,
           renditions: list[str], nice: int = 0, audio: bool = True) -> list[subprocess.Popen]:
    """`viewers` viewers over `procs` child processes, round-robin over `renditions`."""
    per = -(-viewers // procs)
    return [spawn(host, port, min(per, viewers - i * per), window, ramp, i * per, video, renditions,
                  nice=nice, audio=audio) for i in range(procs) if viewers - i * per > 0]


def collect(children: list[subprocess.Popen], timeout: float) -> dict:
    """The children's logs merged (call after they were told to stop or their window ended)."""
    logs = [json.loads(c.communicate(timeout=timeout)[0]) for c in children]
    lags = sorted(x for log in logs for x in log["loop_lag"])
    answered: dict[str, list[float]] = {}
    for log in logs:
        for key, times in log["answered"].items():
            answered.setdefault(key, []).extend(times)
    return {"latency": [x for log in logs for x in log["latency"]],
            "stalls": sum(len(log["stalls"]) for log in logs),
            "failures": [f for log in logs for f in log["failures"]],
            "answered": answered, "answers": sum(len(t) for t in answered.values()),
            "audio_answers": sum(log.get("audio", 0) for log in logs),
            "cpu": sum(log["cpu"] for log in logs), "procs": len(logs),
            "loop_lag_p99": lags[min(len(lags) - 1, int(0.99 * len(lags)))] if lags else float("nan"),
            "seconds": max((log["seconds"] for log in logs), default=0.0)}


def lag_buckets(metrics: str) -> dict[float, float]:
    """An edge's reel_edge_waiter_lag_seconds histogram (its /metrics text): cumulative count by
    upper bound."""
    buckets = {}
    for line in metrics.splitlines():
        if line.startswith("reel_edge_waiter_lag_seconds_bucket"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[float(bound)] = float(line.rsplit(" ", 1)[1])
    return buckets


def bucket_percentile(before: dict[float, float], after: dict[float, float], p: float) -> tuple[float, int]:
    """(the upper bound of the bucket holding the p-th percentile, the count) of what was added."""
    added = {bound: after[bound] - before.get(bound, 0.0) for bound in sorted(after)}
    total = added.get(float("inf"), 0.0)
    for bound, count in added.items():
        if total and count >= p / 100 * total:
            return bound, int(total)
    return float("nan"), int(total)


if __name__ == "__main__":
    child(sys.argv[1:])
