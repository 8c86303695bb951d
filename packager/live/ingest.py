"""`reel ingest` as an object: RTMP (and SRT) in, LL-HLS out over HTTP, segments to the store.

    ingest = Ingest(admit, store_spec, IngestPorts(rtmp=8420, srt=8421, http=8422))
    await ingest.start()
    ...
    await ingest.close()

Every publish is checked with `admit(stream_key)` before any media is read (control's
`IngestControl` is one such admitter; tests give a fake). An admitted publisher gets a
`LiveStream` for the admitted video, writing `live/{id}/` and `vod/{id}/` through StoreOutputs,
and served from memory by `live_app`'s handler on the HTTP port, with `/healthz` and `/metrics`.
At most `max_streams` streams at once; a publisher beyond that is refused with one log line.

When the admitter can also report (`Reports`: connected, gone, heartbeat, vod_done, vod_failed,
as IngestControl does), the stream's life is told to control: connected when its media starts,
a heartbeat every `heartbeat_seconds` with the viewers it had (control may answer that the
stream is over, or that this publisher no longer holds it: the publisher is then cut off), gone
and then VOD done (or failed) when the publisher leaves and the VOD is written.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from origin.store import Store, open_store
from packager.live.config import LiveConfig
from packager.live.encode import LiveMetrics
from packager.live.media import AudioConfig, MediaPacket, StreamSink, VideoConfig
from packager.live.rtmp import RtmpServer
from packager.live.server import LiveHandler
from packager.live.srt import SrtServer
from packager.live.stats import IngestMetrics
from packager.live.stream import LiveStream
from packager.publish import StoreOutput
from reel import metrics as reel_metrics
from reel.logs import fields
from reel.viewers import HEADER as VIEWERS_HEADER
from reel.viewers import Viewers

log = logging.getLogger("ingest")

LINGER = 30.0  # seconds an ended stream stays in memory, so players read its last playlist


class Admission(Protocol):
    """What an admitter says of an accepted stream key (control's `Admission` has this shape)."""

    @property
    def video_id(self) -> str: ...

    @property
    def publisher(self) -> str: ...

    @property
    def dvr_seconds(self) -> int: ...

    @property
    def resume(self) -> bool: ...

    @property
    def heartbeat_seconds(self) -> float: ...

    @property
    def grace_seconds(self) -> float: ...


class Admit(Protocol):
    async def admit(self, stream_key: str) -> Admission | None:
        """The admission for `stream_key`, or None to refuse the publisher."""


class Status(Protocol):
    @property
    def end(self) -> bool: ...

    @property
    def disconnect(self) -> bool: ...


@runtime_checkable
class Reports(Protocol):
    """What ingest tells control of a stream's life (IngestControl's calls)."""

    async def connected(self, publisher: str) -> Status: ...

    async def gone(self, publisher: str) -> Status: ...

    async def heartbeat(self, publisher: str, viewers: int) -> Status: ...

    async def vod_done(self, publisher: str, duration: float, renditions: list[str]) -> Status: ...

    async def vod_failed(self, publisher: str, reason: str, detail: str = "") -> Status: ...


@dataclass(frozen=True)
class Ports:
    rtmp: int
    http: int
    srt: int | None = None


@dataclass(frozen=True)
class StaticAdmission:
    video_id: str
    publisher: str
    dvr_seconds: int = 0
    resume: bool = False
    heartbeat_seconds: float = 5.0
    grace_seconds: float = 0.0  # no control to say when a stream is over: it ends with its publisher


class StaticKeys:
    """An admitter from a fixed table of stream keys to video ids (`reel ingest --static-key`:
    development and tests without control)."""

    def __init__(self, keys: dict[str, str]) -> None:
        self.keys = keys

    async def admit(self, stream_key: str) -> Admission | None:
        video_id = self.keys.get(stream_key)
        return None if video_id is None else StaticAdmission(video_id, f"{video_id}.static")


class Metrics:
    def __init__(self, registry: CollectorRegistry, max_streams: int) -> None:
        self.streams = Gauge("reel_ingest_streams", "Live streams being ingested", registry=registry)
        self.max_streams = Gauge("reel_ingest_max_streams", "Live streams ingest takes at once",
                                 registry=registry)
        self.max_streams.set(max_streams)
        self.admissions = Counter("reel_ingest_admissions_total", "Publish requests, by outcome",
                                  ["outcome"], registry=registry)
        self.requests = Counter("reel_ingest_http_requests_total",
                                "Live HTTP requests, by kind (blocking: a playlist with _HLS_msn)",
                                ["kind"], registry=registry)


def request_kind(request: web.BaseRequest) -> str:
    path = request.path
    if path.endswith(".m3u8"):
        return "blocking" if "_HLS_msn" in request.query else "playlist"
    if "/part_" in path:
        return "part"
    return "segment" if path.endswith(".m4s") else "other"


class Broadcast:
    """One admitted stream in ingest: its LiveStream and outputs, the publisher feeding it (none
    while it is away), its heartbeat to control, its end.

    A publisher that goes does not end the stream while control keeps it live: the stream is
    paused (encoders flushed and released, the last segments closed, nothing buffered) and waits
    out the grace period; a publisher control admits again meanwhile (`resume`) continues it.
    The stream ends when control says so (a heartbeat's answer: the grace period ran out, or the
    owner ended it), at once without control or grace, or after `grace_seconds` and three
    heartbeats more when control cannot be heard."""

    def __init__(self, ingest: Ingest, admission: Admission, stream: LiveStream,
                 outputs: list[StoreOutput]) -> None:
        self.ingest, self.admission, self.stream, self.outputs = ingest, admission, stream, outputs
        self.publisher: Published | None = None
        self.over = False  # control ended the stream
        self._heartbeat: asyncio.Task[None] | None = None
        self._grace: asyncio.TimerHandle | None = None
        self._finishing: asyncio.Task[None] | None = None

    @property
    def video_id(self) -> str:
        return self.admission.video_id

    @property
    def closing(self) -> bool:
        return self._finishing is not None

    def join(self, admission: Admission) -> Published:
        """The sink of an admitted publisher (the first, or one continuing the stream)."""
        self.admission = admission
        self.publisher = Published(self, admission)
        return self.publisher

    async def connected(self, published: Published) -> None:
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        if self.ingest.reports is not None:
            status = await self._report("connected", published.admission.publisher)
            published.stop = _stop_reason(status)
            if self._heartbeat is None:
                self._heartbeat = asyncio.create_task(self._beat(), name=f"heartbeat {self.video_id}")

    async def left(self, published: Published) -> None:
        """A publisher went (its connection ended, however)."""
        if self.publisher is not published or self.closing:
            return
        if self.stream.paused:  # it came to continue the stream but never did: wait on
            self.publisher = None
            await self._report("gone", published.admission.publisher)
            return
        if not self.stream.started_at:  # it never sent media: nothing to keep or continue
            self.publisher = None
            await self.finish()
            return
        grace = self.admission.grace_seconds if self.ingest.reports is not None else 0.0
        if self.over or grace <= 0 or not self.stream.resumable_tracks:
            self.publisher = None
            await self.finish()
            return
        await self.stream.pause()
        self.publisher = None  # another may continue now: control hears of the gap first
        log.info("publisher gone: the stream waits for it", extra=fields(
            video_id=self.video_id, grace_seconds=grace))
        status = await self._report("gone", published.admission.publisher)
        if (status is not None and status.end) or self.over:
            self._spawn_finish()
            return
        # Control ends it after the grace period (heard at a heartbeat); this is the fallback
        # for a control that cannot be heard.
        if self._grace is not None:
            self._grace.cancel()
        self._grace = asyncio.get_running_loop().call_later(
            grace + 3 * self.admission.heartbeat_seconds, self._spawn_finish)

    def _spawn_finish(self) -> None:
        if self._finishing is None:
            self._finishing = asyncio.create_task(self._finish(), name=f"finish {self.video_id}")

    async def finish(self) -> None:
        """End the stream: its VOD is written and reported. Once, however often asked."""
        self._spawn_finish()
        assert self._finishing is not None
        await asyncio.shield(self._finishing)

    async def _finish(self) -> None:
        if self._grace is not None:
            self._grace.cancel()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        started = self.stream.started_at
        try:
            await self.stream.end()
        finally:
            await asyncio.get_running_loop().run_in_executor(None, self._close_outputs)
            self.ingest.ended(self)
        renditions = [r.name for r in self.stream.renditions.values() if not r.dropped]
        duration = self.stream.duration()
        log.info("stream ended", extra=fields(video_id=self.video_id, seconds=round(duration, 1),
                                              renditions=renditions))
        if self.ingest.reports is None:
            return
        handle = self.admission.publisher
        await self._report("gone", handle)
        if not started:
            return  # it never sent media: the stream waits for a publisher, as before
        if renditions:
            await self._report("vod_done", handle, duration, renditions)
        else:
            await self._report("vod_failed", handle, "no_media", "the stream made no segment")

    def _close_outputs(self) -> None:
        for output in self.outputs:
            output.close()

    async def _beat(self) -> None:
        while not self.closing:
            await asyncio.sleep(self.admission.heartbeat_seconds)
            viewers = self.ingest.viewers.total(self.video_id)
            handle = self.admission.publisher
            status = await self._report("heartbeat", handle, viewers)
            if status is None:
                continue
            publisher = self.publisher
            if status.end:
                self.over = True
                if publisher is not None and self.stream.started_at:
                    publisher.stop = "ended"  # cut off; its end finishes the stream
                else:
                    self._spawn_finish()
                return
            if status.disconnect and publisher is not None and publisher.admission.publisher == handle:
                publisher.stop = "replaced"

    async def _report(self, call: str, *args: Any) -> Status | None:
        """Tell control; a report control cannot take is logged, never fatal to the stream."""
        if self.ingest.reports is None:
            return None
        try:
            return await getattr(self.ingest.reports, call)(*args)
        except Exception as exc:  # ControlError, ControlUnavailable: control's to sort out
            log.warning("report to control failed",
                        extra=fields(video_id=self.video_id, call=call, error=repr(exc)))
            return None


class Published:
    """The StreamSink of one admitted publisher: it starts its Broadcast's stream, or continues
    it when an earlier publisher left it waiting."""

    def __init__(self, broadcast: Broadcast, admission: Admission) -> None:
        self.broadcast, self.admission = broadcast, admission
        self.stop: str | None = None  # why control wants the publisher gone

    @property
    def video_id(self) -> str:
        return self.admission.video_id

    async def start(self, video: VideoConfig | None, audio: AudioConfig | None) -> None:
        stream = self.broadcast.stream
        resumed = stream.paused
        if resumed:
            await stream.resume(video, audio)  # refuses other tracks: the publisher is cut off
        else:
            await stream.start(video, audio)
        log.info("stream resumed" if resumed else "stream started", extra=fields(
            video_id=self.video_id, video=video is not None, audio=audio is not None))
        await self.broadcast.connected(self)

    async def packet(self, packet: MediaPacket) -> None:
        if self.stop is not None:
            raise RuntimeError(f"control ended the stream: {self.stop}")  # the publisher is cut off
        await self.broadcast.stream.packet(packet)

    async def end(self) -> None:
        await self.broadcast.left(self)


def _stop_reason(status: Status | None) -> str | None:
    if status is None:
        return None
    return "ended" if status.end else "replaced" if status.disconnect else None


class Ingest:
    """RTMP (+SRT) servers, the live HTTP app, and the streams between them."""

    def __init__(self, admit: Admit, store: str, ports: Ports, *, host: str = "127.0.0.1",
                 max_streams: int = 8, config: LiveConfig | None = None,
                 reports: Reports | None = None) -> None:
        self.admit = admit
        self.reports = reports if reports is not None else (
            admit if isinstance(admit, Reports) else None)
        self.store_spec, self.host, self.ports = store, host, ports
        self.max_streams = max_streams
        self.config = config or LiveConfig()
        self.streams: dict[str, LiveStream] = {}  # served: the broadcasts', and ended ones lingering
        self.broadcasts: dict[str, Broadcast] = {}
        # Who watches: players asking here (through an origin), and the edges' counts.
        self.viewers = Viewers("ingest")
        self.app = web.Application(middlewares=[self._count])
        self.registry = reel_metrics.install(self.app)
        self.metrics = Metrics(self.registry, max_streams)
        self.live_metrics = LiveMetrics(self.registry)
        ingest_metrics = IngestMetrics(self.registry)
        self.rtmp = RtmpServer(self.authorize, host, ports.rtmp, metrics=ingest_metrics)
        self.srt = (SrtServer(self.authorize, host, ports.srt, metrics=ingest_metrics)
                    if ports.srt is not None else None)
        self._store: Store | None = None
        self._runner: web.AppRunner | None = None
        self._lingering: set[asyncio.TimerHandle] = set()

    async def start(self) -> None:
        self._store = open_store(self.store_spec)
        handler = LiveHandler(self.streams, self._store)
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_route("*", "/live/{tail:.*}", handler.handle)
        self._runner = web.AppRunner(self.app, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.ports.http, backlog=1024).start()
        await self.rtmp.start()
        if self.srt is not None:
            await self.srt.start()
        log.info("ingest listening", extra=fields(rtmp=self.rtmp.port, srt=self.ports.srt,
                                                  http=self.ports.http, max_streams=self.max_streams))

    async def close(self) -> None:
        """Stop taking publishers, end every stream (its VOD written), stop serving."""
        await self.rtmp.close()
        if self.srt is not None:
            await self.srt.close()
        for broadcast in list(self.broadcasts.values()):  # those waiting for a publisher too
            await broadcast.finish()
        for handle in self._lingering:
            handle.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._store is not None:
            await self._store.close()

    # -- publishers ---------------------------------------------------------------------------------

    async def authorize(self, app: str, stream_key: str) -> StreamSink | None:
        if app != "live":
            return self._refuse("unknown_app", app=app[:64])
        if len(self.broadcasts) >= self.max_streams and all(
                b.publisher is not None for b in self.broadcasts.values()):
            # Full, and no stream waits for its publisher to come back: control is not asked.
            return self._refuse("capacity", streams=len(self.broadcasts))
        admission = await self.admit.admit(stream_key)
        if admission is None:
            return self._refuse("refused")
        broadcast = self.broadcasts.get(admission.video_id)
        if broadcast is not None:
            if broadcast.publisher is not None or broadcast.closing:
                return self._refuse("already_live", video_id=admission.video_id)
            self.metrics.admissions.labels("resumed").inc()
            log.info("publisher admitted", extra=fields(video_id=admission.video_id, resume=True))
            return broadcast.join(admission)
        if len(self.broadcasts) >= self.max_streams:  # streams waiting for a publisher count
            return self._refuse("capacity", streams=len(self.broadcasts))
        return self._publish(admission)

    def _refuse(self, outcome: str, **detail: object) -> None:
        self.metrics.admissions.labels(outcome).inc()
        log.warning("publisher refused", extra=fields(reason=outcome, **detail))
        return None

    def _publish(self, admission: Admission) -> StreamSink:
        video_id = admission.video_id
        outputs = [StoreOutput.open(self.store_spec, f"{space}/{video_id}/") for space in ("live", "vod")]
        config = replace(self.config, dvr_seconds=float(admission.dvr_seconds or self.config.dvr_seconds))
        stream = LiveStream(video_id, outputs[0], vod_output=outputs[1], config=config,
                            metrics=self.live_metrics)
        broadcast = Broadcast(self, admission, stream, outputs)
        self.broadcasts[video_id] = broadcast
        self.streams[video_id] = stream
        self.metrics.admissions.labels("admitted").inc()
        self.metrics.streams.set(len(self.broadcasts))
        log.info("publisher admitted", extra=fields(video_id=video_id, resume=admission.resume,
                                                    dvr_seconds=config.dvr_seconds))
        return broadcast.join(admission)

    def ended(self, broadcast: Broadcast) -> None:
        """A stream is over: it no longer counts, and leaves memory after LINGER seconds."""
        video_id = broadcast.video_id
        if self.broadcasts.get(video_id) is broadcast:
            del self.broadcasts[video_id]
        self.metrics.streams.set(len(self.broadcasts))

        def forget() -> None:
            self._lingering.discard(handle)
            if self.streams.get(video_id) is broadcast.stream:
                del self.streams[video_id]

        handle = asyncio.get_running_loop().call_later(LINGER, forget)
        self._lingering.add(handle)

    # -- HTTP -----------------------------------------------------------------------------------------

    @web.middleware
    async def _count(self, request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if request.path.startswith("/live/"):
            kind = request_kind(request)
            self.metrics.requests.labels(kind).inc()
            cmcd = f"{request.query.get('CMCD', '')},{request.headers.get('CMCD-Session', '')}"
            address = request.headers.get("X-Forwarded-For") or request.remote
            self.viewers.request(request.path, cmcd, address, request.headers.get("User-Agent"),
                                 request.headers.get(VIEWERS_HEADER))
        return await handler(request)

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "streams": len(self.broadcasts),
                                  "max_streams": self.max_streams})
