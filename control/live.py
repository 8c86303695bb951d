"""Live streams: the `live_streams` table, stream keys, and how publishers move a live video.

A live stream is a video of kind `live` (one id, from the first publish to the VOD):

    waiting --connected--> live --owner ends, or publisher gone > grace--> processing --VOD--> ready
       |                   |  ^                                               |
       |                   |  +-- a publisher back within the grace period    +--failed--> failed
       |                   |      (the same video: a resume)
       +--owner ends-------+--> failed (no_media: nothing was ever published)

Publishers come through ingest, which presents the worker token: `authorize` (a stream key ->
the stream, and a publisher handle `{video_id}.{n}`), `connected`, `gone`, `heartbeat` (viewers;
the answer says whether to stop), `vod_done` / `vod_failed`. Time alone decides three things,
applied whenever a stream is read for a change and by `expire` (the app's sweeper): a publisher
ingest has not mentioned for `stale_seconds` is gone; a publisher gone longer than the grace
period ends the stream; a VOD not reported within `vod_timeout_seconds` of the end fails.

Stream keys are secrets: 192 random bits, stored as their SHA-256 only, shown once (at creation
and rotation), never logged. This module knows nothing of HTTP (`control.livehttp` serves it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from control.db import Database, Row, Tx
from control.privacy import Privacy
from control.videos import COLUMNS as VIDEO_COLUMNS
from control.videos import ON_AIR, Video, new_video_id
from reel.logs import fields

log = logging.getLogger("reel.control.live")

T = TypeVar("T")
HANDLE_PATTERN = "^[A-Za-z0-9_-]{6,64}(\\.[0-9]{1,9})?$"
_HANDLE = re.compile(r"([A-Za-z0-9_-]{6,64})(?:\.([0-9]{1,9}))?")
PUBLISHING = ("authorized", "connected")


def new_stream_key() -> str:
    """`live_` and 32 URL-safe characters (192 random bits): fits an RTMP URL and an SRT streamid."""
    return "live_" + secrets.token_urlsafe(24)


def key_hash(stream_key: str) -> str:
    return hashlib.sha256(stream_key.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True)
class LiveSettings:
    """Where ingest listens (public URLs, "" when unknown) and the clocks of a stream."""

    rtmp_url: str = ""  # rtmp://HOST:PORT/live
    srt_url: str = ""  # srt://HOST:PORT
    grace_seconds: float = 30.0
    heartbeat_seconds: float = 5.0
    vod_timeout_seconds: float = 600.0

    def __post_init__(self) -> None:
        if self.rtmp_url and not self.rtmp_url.startswith(("rtmp://", "rtmps://")):
            raise ValueError(f"the RTMP ingest URL must be rtmp://HOST:PORT/APP, not {self.rtmp_url!r}")
        if self.srt_url and not self.srt_url.startswith("srt://"):
            raise ValueError(f"the SRT ingest URL must be srt://HOST:PORT, not {self.srt_url!r}")
        if min(self.grace_seconds, self.heartbeat_seconds, self.vod_timeout_seconds) <= 0:
            raise ValueError("the grace period, heartbeat and VOD timeout must be positive")

    @property
    def stale_seconds(self) -> float:
        """A publisher ingest has not mentioned for this long is gone (ingest died)."""
        return 3 * self.heartbeat_seconds

    def ingest_urls(self, stream_key: str) -> dict[str, str | None]:
        rtmp = f"{self.rtmp_url.rstrip('/')}/{stream_key}" if self.rtmp_url else None
        srt = f"{self.srt_url.rstrip('/')}?streamid=publish:{stream_key}" if self.srt_url else None
        return {"rtmp": rtmp, "srt": srt}


class Refused(Exception):
    """A stream operation refused; `why` is one of unknown, busy, ended, stale, not_live, state."""

    def __init__(self, why: str, detail: str) -> None:
        super().__init__(detail)
        self.why = why
        self.detail = detail


@dataclass(frozen=True)
class Stream:
    """A live stream and the state of its video."""

    video_id: str
    owner_id: str | None
    dvr_seconds: int
    publishers: int  # admitted so far: the current publisher's handle is {video_id}.{publishers}
    publisher: str  # none, authorized, connected, gone
    seen_at: float | None
    gone_at: float | None
    ended_at: float | None
    state: str
    reason: str | None
    viewers: int | None

    @classmethod
    def from_row(cls, row: Row) -> Stream:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})

    @property
    def handle(self) -> str:
        return f"{self.video_id}.{self.publishers}"


@dataclass(frozen=True)
class Admission:
    """A publisher let in: the stream it continues or starts."""

    video_id: str
    publisher: str
    dvr_seconds: int
    resume: bool


_SELECT = ("SELECT l.video_id, v.owner_id, l.dvr_seconds, l.publishers, l.publisher, l.seen_at,"
           " l.gone_at, l.ended_at, v.state, v.reason, v.viewers"
           " FROM live_streams l JOIN videos v ON v.id = l.video_id")


def parse_handle(handle: str) -> tuple[str, int | None]:
    """`"vid.3"` -> ("vid", 3); a bare video id -> ("vid", None): whoever publishes now."""
    match = _HANDLE.fullmatch(handle)
    if match is None:
        raise Refused("unknown", f"no live stream {handle!r}")
    return match.group(1), None if match.group(2) is None else int(match.group(2))


# -- transitions: pure functions of a stream and the time ----------------------------------------


def dropped(s: Stream, when: float) -> Stream:
    """The publisher went: a live stream waits out the grace period, a waiting one waits on."""
    if s.state == "live":
        return replace(s, publisher="gone", gone_at=s.gone_at if s.gone_at is not None else when)
    return replace(s, publisher="none")


def finished(s: Stream, now: float) -> Stream:
    """The stream ends: what was live becomes a VOD to make; what never went live fails."""
    if s.state not in ON_AIR:
        return s
    ended = replace(s, publisher="none", ended_at=now, seen_at=now, viewers=None)
    if s.state == "waiting":
        return replace(ended, state="failed",
                       reason="no_media: the stream ended before anything was published")
    return replace(ended, state="processing")


def settled(s: Stream, now: float, settings: LiveSettings) -> Stream:
    """What time alone decides: silent publishers go, grace periods and VOD waits run out."""
    if s.publisher in PUBLISHING and (s.seen_at or 0.0) < now - settings.stale_seconds:
        s = dropped(s, s.seen_at or now)
    if (s.publisher == "gone" and s.state == "live" and s.gone_at is not None
            and s.gone_at + settings.grace_seconds <= now):
        s = finished(s, now)
    if s.state == "processing" and (s.seen_at or 0.0) < now - settings.vod_timeout_seconds:
        s = replace(s, state="failed", reason="ingest_lost: no VOD was reported after the "
                                              "stream ended")
    return s


class LiveStreams:
    """The live streams of `db`."""

    def __init__(self, db: Database, settings: LiveSettings,
                 clock: Callable[[], float] = time.time, privacy: Privacy | None = None) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.privacy = privacy

    # -- creators --------------------------------------------------------------------------------

    async def create(self, owner_id: str, meta: Mapping[str, Any], dvr_seconds: int
                     ) -> tuple[Video, str]:
        """A waiting live video and its stream key (which is not kept: only its hash is)."""
        video_id, key, now = new_video_id(), new_stream_key(), self.clock()
        level = meta.get("privacy", "public")
        if self.privacy is not None and level != "public":
            # The access marker first: no byte of a private stream is ever served without a token.
            await self.privacy.apply(video_id, level, purge=False)

        async def insert(tx: Tx) -> Video:
            await tx.execute(
                "INSERT INTO videos (id, title, state, kind, source_bytes, created_at, updated_at,"
                " owner_id, description, tags, language, category, privacy)"
                " VALUES (?, ?, 'waiting', 'live', 0, ?, ?, ?, ?, ?, ?, ?, ?)",
                (video_id, meta.get("title") or "Live stream", now, now, owner_id,
                 meta.get("description", ""), json.dumps(list(meta.get("tags", ()))),
                 meta.get("language"), meta.get("category"), level))
            await tx.execute("INSERT INTO live_streams (video_id, key_hash, dvr_seconds, created_at)"
                             " VALUES (?, ?, ?, ?)", (video_id, key_hash(key), dvr_seconds, now))
            row = await tx.fetchone(f"SELECT {VIDEO_COLUMNS} FROM videos WHERE id = ?", (video_id,))
            return Video.from_row(row)

        video = await self.db.transaction(insert)
        log.info("live stream created", extra=fields(video=video_id, user=owner_id))
        return video, key

    async def rotate(self, video_id: str) -> str:
        """A new stream key; the old one is refused from now on, and a publisher on it is cut off
        (its handle goes stale: the stream waits out the grace period for the new key)."""
        key = new_stream_key()

        def change(s: Stream, now: float) -> Stream:
            if s.state not in ON_AIR:
                raise Refused("ended", f"the stream is {s.state}: it takes no publisher any more")
            if s.publisher in PUBLISHING:
                return replace(dropped(s, now), publishers=s.publishers + 1)
            return s

        await self._change("video_id", video_id, change,
                           extra=("UPDATE live_streams SET key_hash = ? WHERE video_id = ?",
                                  (key_hash(key), video_id)))
        log.info("stream key rotated", extra=fields(video=video_id))
        return key

    async def status(self, video_id: str) -> Stream:
        """The stream as time has left it (applied, as for any change)."""
        return await self._change("video_id", video_id, lambda s, now: s)

    async def end(self, video_id: str) -> Stream:
        """End the stream now (again: nothing changes)."""
        return await self._change("video_id", video_id, lambda s, now: finished(s, now))

    # -- ingest ----------------------------------------------------------------------------------

    async def authorize(self, stream_key: str) -> Admission:
        """Let a publisher in on `stream_key`: Refused unknown (no such key, or rotated away),
        busy (a publisher is live on it), ended (the stream is over)."""

        def admit(s: Stream, now: float) -> Stream:
            if s.state not in ON_AIR:
                raise Refused("ended", f"the stream of this key is over ({s.state})")
            if s.publisher in PUBLISHING:
                raise Refused("busy", "another publisher is live on this stream key")
            return replace(s, publishers=s.publishers + 1, publisher="authorized", seen_at=now)

        before: list[Stream] = []
        s = await self._change("key_hash", key_hash(stream_key), admit, seen=before)
        log.info("publisher admitted", extra=fields(video=s.video_id, publisher=s.handle,
                                                    resume=before[0].state == "live"))
        return Admission(s.video_id, s.handle, s.dvr_seconds, resume=before[0].state == "live")

    async def connected(self, handle: str) -> Stream:
        def connect(s: Stream, now: float) -> Stream:
            self._current(s, handle)
            if s.state not in ON_AIR:
                raise Refused("ended", f"the stream is over ({s.state})")
            if s.publisher not in PUBLISHING:
                raise Refused("stale", f"publisher {handle} is no longer admitted: authorize again")
            return replace(s, publisher="connected", seen_at=now, gone_at=None, state="live",
                           viewers=s.viewers or 0)

        return await self._change("video_id", parse_handle(handle)[0], connect)

    async def gone(self, handle: str) -> Stream:
        """The publisher left (said again, or by a publisher already replaced: nothing changes)."""
        def leave(s: Stream, now: float) -> Stream:
            if not self._is_current(s, handle) or s.publisher not in PUBLISHING:
                return s
            return dropped(s, now)

        return await self._change("video_id", parse_handle(handle)[0], leave)

    async def heartbeat(self, handle: str, viewers: int) -> Stream:
        """Ingest still holds the stream, with `viewers` watching."""
        def beat(s: Stream, now: float) -> Stream:
            if s.state == "live":
                s = replace(s, viewers=viewers)
            if self._is_current(s, handle) or s.state == "processing":
                s = replace(s, seen_at=now)
            return s

        return await self._change("video_id", parse_handle(handle)[0], beat)

    def holds(self, s: Stream, handle: str) -> bool:
        """Whether the publisher of `handle` still holds the stream."""
        return self._is_current(s, handle) and s.publisher in PUBLISHING

    async def vod_done(self, handle: str, duration: float, renditions: list[str]) -> Stream:
        """The VOD is made: the video is ready (ingest may end a live stream itself this way)."""
        def done(s: Stream, now: float) -> Stream:
            if s.state == "ready":
                return s
            if s.state not in ("live", "processing"):
                raise Refused("state", f"the stream is {s.state}: there is no VOD to report")
            if s.state == "live" and not self._is_current(s, handle):
                # a publisher cut off by a rotation: the stream waits for the new key
                raise Refused("stale", f"publisher {handle} no longer holds the stream")
            return replace(finished(s, now), state="ready", reason=None)

        video_id = parse_handle(handle)[0]
        return await self._change("video_id", video_id, done, extra=(
            "UPDATE videos SET duration = ?, renditions = ? WHERE id = ? AND state = 'ready'",
            (duration, json.dumps(list(renditions)), video_id)))

    async def vod_failed(self, handle: str, reason: str) -> Stream:
        def fail(s: Stream, now: float) -> Stream:
            if s.state == "ready":
                raise Refused("state", "the stream's VOD is ready already")
            if s.state == "failed":
                return s
            return replace(finished(s, now), state="failed", reason=reason)

        return await self._change("video_id", parse_handle(handle)[0], fail)

    # -- time ------------------------------------------------------------------------------------

    async def expire(self) -> int:
        """Apply what time decided to every stream it concerns; how many changed."""
        now, cfg = self.clock(), self.settings
        rows = await self.db.fetchall(
            "SELECT l.video_id FROM live_streams l JOIN videos v ON v.id = l.video_id"
            " WHERE (l.publisher IN ('authorized', 'connected') AND l.seen_at < ?)"
            " OR (l.publisher = 'gone' AND v.state = 'live' AND l.gone_at <= ?)"
            " OR (v.state = 'processing' AND l.seen_at < ?)",
            (now - cfg.stale_seconds, now - cfg.grace_seconds, now - cfg.vod_timeout_seconds))
        for row in rows:
            with suppress(Refused):  # deleted meanwhile
                await self._change("video_id", row[0], lambda s, now: s)
        return len(rows)

    # -- helpers ---------------------------------------------------------------------------------

    def _is_current(self, s: Stream, handle: str) -> bool:
        number = parse_handle(handle)[1]
        return number is None or number == s.publishers

    def _current(self, s: Stream, handle: str) -> None:
        if not self._is_current(s, handle):
            raise Refused("stale", f"publisher {handle} was replaced by {s.handle}")

    async def _change(self, column: str, value: str, change: Callable[[Stream, float], Stream],
                      *, extra: tuple[str, tuple[Any, ...]] | None = None,
                      seen: list[Stream] | None = None) -> Stream:
        """Settle the stream whose `column` is `value`, then apply `change` and `extra` (SQL),
        in one transaction; what time decided is kept even when `change` refuses."""

        async def run(tx: Tx) -> tuple[Stream, Stream, Refused | None] | None:
            row = await tx.fetchone(f"{_SELECT} WHERE l.{column} = ?", (value,))
            if row is None:
                return None
            now = self.clock()
            old = Stream.from_row(row)
            current = settled(old, now, self.settings)
            if seen is not None:
                seen[:] = [current]
            try:
                new, refusal = change(current, now), None
            except Refused as exc:
                new, refusal = current, exc
            await self._save(tx, old, new)
            if extra is not None and refusal is None:
                await tx.execute(*extra)
            return old, new, refusal

        done = await self.db.transaction(run)
        if done is None:
            raise Refused("unknown", "no live stream with this key" if column == "key_hash"
                          else f"no live stream {value!r}")
        old, new, refusal = done
        if new.state != old.state:  # logged once committed (PostgreSQL may run `run` again)
            log.info("live stream state", extra=fields(video=old.video_id, state=new.state,
                                                       was=old.state, reason=new.reason))
        if refusal is not None:
            raise refusal
        return new

    async def _save(self, tx: Tx, old: Stream, new: Stream) -> None:
        if new == old:
            return
        await tx.execute(
            "UPDATE live_streams SET publishers = ?, publisher = ?, seen_at = ?, gone_at = ?,"
            " ended_at = ? WHERE video_id = ?",
            (new.publishers, new.publisher, new.seen_at, new.gone_at, new.ended_at, new.video_id))
        if (new.state, new.reason, new.viewers) != (old.state, old.reason, old.viewers):
            await tx.execute("UPDATE videos SET state = ?, reason = ?, viewers = ?, updated_at = ?"
                             " WHERE id = ?",
                             (new.state, new.reason, new.viewers, self.clock(), new.video_id))


async def sweep(streams: LiveStreams, every: float, sleep: Callable[[float], Awaitable[None]]
                ) -> None:
    """`streams.expire()` every `every` seconds, for as long as the app runs."""
    while True:
        try:
            await streams.expire()
        except Exception:
            log.exception("live sweep failed")
        await sleep(every)
