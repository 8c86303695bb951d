"""The live API: creators make live streams and manage them (`LiveHandlers`), ingest reports on
them (`IngestHandlers`, with the worker token, never throttled). The state machine is
`control.live.LiveStreams`; these handlers only read requests and shape answers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import hdrs, web
from prometheus_client import Counter

from control.api import PROBLEM, Api
from control.catalog import VIDEO_ID, VideoHandlers
from control.live import HANDLE_PATTERN, LiveStreams, Refused, Stream
from control.models import (
    Admission,
    Completion,
    IngestBeat,
    LiveCreated,
    LiveIn,
    LiveStatus,
    StreamKey,
    StreamKeyIn,
    StreamState,
    VodFailure,
)
from control.models import Video as VideoJson
from control.problems import ProblemError
from control.requests import path_id
from control.videos import Video, iso8601
from control.workers import line

STATUS = {"unknown": 404, "busy": 409, "ended": 409, "stale": 409, "state": 409}
PUBLISHER = path_id("publisher", HANDLE_PATTERN,
                    "The `publisher` handle authorize gave (`{video_id}.{n}`): refused with 409 "
                    "by connected once another publisher was admitted. A bare video id means "
                    "whoever publishes now.")


def _problem(exc: Refused, statuses: dict[str, int] = STATUS) -> ProblemError:
    status = statuses.get(exc.why, 409)
    return ProblemError(status, exc.detail, title="Conflict" if status == 409 else None)


@contextmanager
def _refusals() -> Iterator[None]:
    try:
        yield
    except Refused as exc:
        raise _problem(exc) from None


class LiveHandlers:
    """POST /api/v1/live, and a stream's key and end, for its owner."""

    def __init__(self, streams: LiveStreams, catalog: VideoHandlers,
                 render: Callable[[web.Request, Video], dict[str, Any]]) -> None:
        self.streams = streams
        self.catalog = catalog
        self.render = render

    def add_routes(self, api: Api) -> None:
        api.route("POST", "/api/v1/live", self.create, tag="live", auth="user", body=LiveIn,
                  body_required=False,
                  summary="Create a live stream: a waiting video, its stream key (shown this "
                          "once) and where to publish it (RTMP, SRT)",
                  responses={201: LiveCreated})
        api.route("GET", "/api/v1/live/{video_id}", self.status, tag="live", auth="user",
                  params=[VIDEO_ID], summary="A live stream's state, for its owner (or an admin): "
                                             "its publisher, grace period and DVR window",
                  responses={200: LiveStatus, 403: PROBLEM, 404: PROBLEM, 409: PROBLEM})
        api.route("POST", "/api/v1/live/{video_id}/key", self.rotate, tag="live", auth="user",
                  params=[VIDEO_ID], summary="A new stream key (its owner): the old one stops "
                                             "working at once, and a publisher on it is cut off",
                  responses={200: StreamKey, 403: PROBLEM, 404: PROBLEM, 409: PROBLEM})
        api.route("POST", "/api/v1/live/{video_id}/end", self.end, tag="live", auth="user",
                  params=[VIDEO_ID],
                  summary="End a live stream (its owner or an admin): it becomes a VOD (or "
                          "fails when nothing was published); ending it again changes nothing",
                  responses={200: VideoJson, 403: PROBLEM, 404: PROBLEM, 409: PROBLEM})

    async def create(self, request: web.Request, body: LiveIn) -> web.Response:
        user = await self.catalog.auth.require(request)
        meta = body.changes()
        meta.setdefault("title", body.title)
        video, key = await self.streams.create(user.id, meta, body.dvr_seconds)
        return web.json_response(
            {"video": self.render(request, video), "stream_key": key,
             "ingest": self.streams.settings.ingest_urls(key), "dvr_seconds": body.dvr_seconds},
            status=201, headers={hdrs.LOCATION: f"/api/v1/videos/{video.id}",
                                 hdrs.CACHE_CONTROL: "no-store"})

    async def _live_video(self, request: web.Request, owner_only: bool) -> Video:
        video, user = await self.catalog.owned(request)
        if owner_only and video.owner_id != user.id:
            raise ProblemError(403, "only the stream's owner may see its stream key")
        if video.kind != "live":
            raise ProblemError(409, f"video {video.id!r} is an upload, not a live stream",
                               title="Conflict")
        return video

    async def status(self, request: web.Request) -> web.Response:
        video = await self._live_video(request, owner_only=False)
        with _refusals():
            stream = await self.streams.status(video.id)
        grace = self.streams.settings.grace_seconds
        return web.json_response({
            "video": self.render(request, await self.catalog.visible(request)),
            "dvr_seconds": stream.dvr_seconds, "publisher": stream.publisher,
            "grace_ends_at": (iso8601(stream.gone_at + grace) if stream.publisher == "gone"
                              and stream.gone_at is not None else None),
            "ended_at": None if stream.ended_at is None else iso8601(stream.ended_at),
            "ingest": self.streams.settings.ingest_urls("STREAM_KEY")})

    async def rotate(self, request: web.Request) -> web.Response:
        video = await self._live_video(request, owner_only=True)
        with _refusals():
            key = await self.streams.rotate(video.id)
        return web.json_response({"stream_key": key,
                                  "ingest": self.streams.settings.ingest_urls(key)},
                                 headers={hdrs.CACHE_CONTROL: "no-store"})

    async def end(self, request: web.Request) -> web.Response:
        video = await self._live_video(request, owner_only=False)
        with _refusals():
            await self.streams.end(video.id)
        return web.json_response(self.render(request, await self.catalog.visible(request)))


class IngestHandlers:
    """/api/v1/ingest/...: what ingest asks and tells control about publishers and streams."""

    def __init__(self, streams: LiveStreams,
                 require_worker: Callable[[web.Request], Awaitable[None]],
                 events: Counter) -> None:
        self.streams = streams
        self.require_worker = require_worker  # the worker token's check (the job API's)
        self.events = events

    def add_routes(self, api: Api) -> None:
        api.guard("worker", self.require_worker)
        ingest = dict(tag="ingest", auth="worker", throttled=False)
        api.route("POST", "/api/v1/ingest/authorize", self.authorize, **ingest, body=StreamKeyIn,
                  summary="A publisher's stream key -> its stream (before any media is read): "
                          "403 unknown or rotated key, 409 a publisher is live on it already "
                          "or the stream is over",
                  responses={200: Admission, 403: PROBLEM, 409: PROBLEM})
        for action, handler, model, summary in (
                ("connected", self.connected, None,
                 "The publisher's media flows: the video is live (again, idempotent)"),
                ("gone", self.gone, None,
                 "The publisher went: the grace period starts (idempotent; a replaced "
                 "publisher's word changes nothing)"),
                ("heartbeat", self.heartbeat, IngestBeat,
                 "Ingest holds the stream, with this many viewers: the answer says whether to "
                 "end it or cut the publisher off"),
                ("vod", self.vod, Completion,
                 "The VOD is made from the stream's segments: the video is ready (idempotent)"),
                ("fail", self.fail, VodFailure,
                 "Making the VOD failed: the video fails with `reason: detail` (idempotent)")):
            api.route("POST", f"/api/v1/ingest/streams/{{publisher}}/{action}", handler,
                      **ingest, body=model, body_required=model is not None and action != "heartbeat",
                      summary=summary, params=[PUBLISHER],
                      responses={200: StreamState, 404: PROBLEM, 409: PROBLEM})

    def _state(self, stream: Stream, handle: str, event: str) -> web.Response:
        if event != "heartbeat":
            self.events.labels(event).inc()
        return web.json_response({
            "video_id": stream.video_id, "state": stream.state,
            "end": stream.state not in ("waiting", "live"),
            "disconnect": not self.streams.holds(stream, handle),
            "grace_seconds": self.streams.settings.grace_seconds})

    async def authorize(self, request: web.Request, body: StreamKeyIn) -> web.Response:
        try:
            admission = await self.streams.authorize(body.stream_key)
        except Refused as exc:
            self.events.labels(f"refused_{exc.why}").inc()
            raise _problem(exc, {**STATUS, "unknown": 403}) from None
        self.events.labels("resumed" if admission.resume else "admitted").inc()
        settings = self.streams.settings
        return web.json_response({
            "video_id": admission.video_id, "publisher": admission.publisher,
            "dvr_seconds": admission.dvr_seconds, "resume": admission.resume,
            "heartbeat_seconds": settings.heartbeat_seconds,
            "grace_seconds": settings.grace_seconds})

    async def connected(self, request: web.Request) -> web.Response:
        handle = request.match_info["publisher"]
        with _refusals():
            return self._state(await self.streams.connected(handle), handle, "connected")

    async def gone(self, request: web.Request) -> web.Response:
        handle = request.match_info["publisher"]
        with _refusals():
            return self._state(await self.streams.gone(handle), handle, "gone")

    async def heartbeat(self, request: web.Request, body: IngestBeat) -> web.Response:
        handle = request.match_info["publisher"]
        with _refusals():
            return self._state(await self.streams.heartbeat(handle, body.viewers), handle,
                               "heartbeat")

    async def vod(self, request: web.Request, body: Completion) -> web.Response:
        handle = request.match_info["publisher"]
        with _refusals():
            return self._state(await self.streams.vod_done(handle, body.duration,
                                                            body.renditions), handle, "vod")

    async def fail(self, request: web.Request, body: VodFailure) -> web.Response:
        handle = request.match_info["publisher"]
        reason = line(body.reason, 64) or "error"
        detail = line(body.detail, 2000)
        with _refusals():
            return self._state(await self.streams.vod_failed(
                handle, f"{reason}: {detail}" if detail else reason), handle, "fail")
