"""Ingest's side of control's live API (`/api/v1/ingest/...`), over HTTP only.

`IngestControl` presents the shared worker token, puts a timeout on every call and retries the
calls control makes idempotent (everything but `admit`) when control is briefly unreachable or
answers 5xx. `authorizer` turns it into the `authorize(app, stream_key)` the RTMP and SRT servers
take: the key is checked with control before any media is read, and only an admitted publisher
gets a sink (made by the caller's factory, e.g. a LiveStream for the admitted video, continued
when `resume` is true). Stream keys are secrets: nothing here logs one.

    control = IngestControl("http://control:8401", token)
    server = RtmpServer(control.authorizer(lambda admission: streams.sink_for(admission)))
    ...
    status = await control.heartbeat(admission.publisher, viewers)
    if status.end: ...finish the VOD..., then control.vod_done(...)
    if status.disconnect: ...cut the publisher off (its key was rotated)...
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from packager.live.lifecycle import Authorize
from packager.live.media import StreamSink
from reel.logs import fields

log = logging.getLogger("packager.live.control")


@dataclass(frozen=True)
class Admission:
    """A publisher control let in: the stream (video) it starts or, with `resume`, continues."""

    video_id: str
    publisher: str  # the handle every later call names: "{video_id}.{n}"
    dvr_seconds: int
    resume: bool
    heartbeat_seconds: float
    grace_seconds: float


@dataclass(frozen=True)
class StreamStatus:
    """What control says of a stream after each report."""

    video_id: str
    state: str  # waiting, live, processing, ready, failed
    end: bool  # the stream is over: stop taking media, make the VOD, report it
    disconnect: bool  # this publisher no longer holds the stream: cut it off
    grace_seconds: float


class ControlError(Exception):
    """Control refused the call (a 4xx problem): `status` and control's `detail`."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


class ControlUnavailable(Exception):
    """Control did not answer in time, or answered 5xx, after every retry."""


class IngestControl:
    """The ingest API of control at `base_url`. Use as `async with`, or `close()` it: it owns
    its HTTP session unless given one."""

    def __init__(self, base_url: str, token: str, *, timeout: float = 5.0, retries: int = 2,
                 backoff: float = 0.25, http: aiohttp.ClientSession | None = None) -> None:
        if not token:
            raise ValueError("the worker token must not be empty")
        self.base = base_url.rstrip("/") + "/api/v1/ingest"
        self.headers = {"Authorization": f"Bearer {token}"}
        self.timeout = aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 2.0))
        self.retries = retries
        self.backoff = backoff
        self._http = http
        self._own = http is None

    async def __aenter__(self) -> IngestControl:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own and self._http is not None:
            await self._http.close()
        self._http = None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession()
            self._own = True
        return self._http

    # -- the calls -------------------------------------------------------------------------------

    async def authorize(self, stream_key: str) -> Admission:
        """Control's answer for a publisher's key: ControlError 403 (unknown or rotated), 409 (a
        publisher is live on it, or the stream is over). Never retried: a second try could find
        the first one's publisher admitted."""
        body = await self._post("authorize", {"stream_key": stream_key}, retries=0)
        return Admission(body["video_id"], body["publisher"], int(body["dvr_seconds"]),
                         bool(body["resume"]), float(body["heartbeat_seconds"]),
                         float(body["grace_seconds"]))

    async def admit(self, stream_key: str) -> Admission | None:
        """`authorize`, or None when control refuses the key or cannot be asked (fail closed)."""
        try:
            return await self.authorize(stream_key)
        except ControlError as exc:
            log.info("publisher refused", extra=fields(status=exc.status, detail=exc.detail))
        except ControlUnavailable as exc:
            log.warning("publisher refused: control unavailable", extra=fields(error=str(exc)))
        return None

    async def connected(self, publisher: str) -> StreamStatus:
        """The publisher's media flows (ControlError 409: it was replaced, or the stream ended)."""
        return await self._report(publisher, "connected", None)

    async def gone(self, publisher: str) -> StreamStatus:
        """The publisher went: control starts the grace period."""
        return await self._report(publisher, "gone", None)

    async def heartbeat(self, publisher: str, viewers: int) -> StreamStatus:
        """The stream is held, with `viewers` watching (every `heartbeat_seconds`)."""
        return await self._report(publisher, "heartbeat", {"viewers": max(0, int(viewers))})

    async def vod_done(self, publisher: str, duration: float,
                       renditions: Sequence[str]) -> StreamStatus:
        return await self._report(publisher, "vod", {"duration": float(duration),
                                                     "renditions": list(renditions)})

    async def vod_failed(self, publisher: str, reason: str, detail: str = "") -> StreamStatus:
        return await self._report(publisher, "fail", {"reason": reason, "detail": detail})

    def authorizer(self, start: Callable[[Admission], Awaitable[StreamSink | None]],
                   apps: Sequence[str] = ("live",)) -> Authorize:
        """`authorize(app, stream_key)` for RtmpServer and SrtServer: publishes to another app
        than `apps` and keys control refuses get None at once; an admitted publisher gets
        `await start(admission)` (None refuses it too)."""

        async def authorize(app: str, stream_key: str) -> StreamSink | None:
            if app not in apps:
                log.info("publisher refused: unknown app", extra=fields(app=app[:64]))
                return None
            admission = await self.admit(stream_key)
            return None if admission is None else await start(admission)

        return authorize

    # -- HTTP ------------------------------------------------------------------------------------

    async def _report(self, publisher: str, action: str, body: dict[str, Any] | None
                      ) -> StreamStatus:
        answer = await self._post(f"streams/{publisher}/{action}", body, retries=self.retries)
        return StreamStatus(answer["video_id"], answer["state"], bool(answer["end"]),
                            bool(answer["disconnect"]), float(answer["grace_seconds"]))

    async def _post(self, path: str, body: dict[str, Any] | None, *, retries: int
                    ) -> dict[str, Any]:
        for attempt in range(retries + 1):
            try:
                return await self._post_once(path, body)
            except ControlUnavailable:
                if attempt == retries:
                    raise
                await asyncio.sleep(self.backoff * 2**attempt)
        raise AssertionError("unreachable")

    async def _post_once(self, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        url = f"{self.base}/{path}"
        try:
            async with self._session().post(url, json=body, headers=self.headers,
                                            timeout=self.timeout) as resp:
                if resp.status >= 500:
                    raise ControlUnavailable(f"control answered {resp.status} to {path}")
                answer = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise ControlUnavailable(f"control did not answer {path}: {exc!r}") from None
        if resp.status >= 400 or not isinstance(answer, dict):
            detail = answer.get("detail", "") if isinstance(answer, dict) else ""
            raise ControlError(resp.status, str(detail)[:500])
        return answer
