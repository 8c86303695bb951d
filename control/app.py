"""The control HTTP app: uploads, videos, the worker job API, the watch page.

Handlers speak to storage only through `origin.store.Store` and to the database only through
`Videos` and `JobQueue`; every error leaves as RFC 7807 problem+json (see `control.problems`).
"""

from __future__ import annotations

import hmac
import html
import json
import logging
import math
import os
import string
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import aclosing, contextmanager
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from control import openapi
from control.db import Database
from control.jobs import STATES as JOB_STATES
from control.jobs import Job, JobQueue, LeaseLost, UnknownJob
from control.problems import ProblemError, problem_middleware, problem_response
from control.videos import Video, VideoJobHooks, Videos, new_video_id, output_prefix, source_key
from origin.layout import is_video_id
from origin.store import ObjectInfo, Store, TooLarge
from reel import metrics
from reel.logs import fields

log = logging.getLogger("reel.control")

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
UPLOAD_CHUNK = 256 * 1024
FORM_OVERHEAD = 64 * 1024  # multipart headers, boundaries and small fields around the file
MAX_TITLE_CHARS = 200
MAX_JSON_BYTES = 64 * 1024

DB_KEY = web.AppKey("control_db", Database)


class ControlMetrics:
    """The control service's Prometheus metrics, in the app's own registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.uploads = Counter("reel_control_uploads_total", "Uploads by result", ["result"],
                               registry=registry)
        self.upload_bytes = Counter("reel_control_upload_bytes_total",
                                    "Bytes of accepted uploads", registry=registry)
        self.jobs = Gauge("reel_control_jobs", "Jobs by state", ["state"], registry=registry)
        self.job_events = Counter("reel_control_job_events_total",
                                  "Job transitions (claimed, heartbeat, completed, retried, failed)",
                                  ["event"], registry=registry)
        self.latency = Histogram("reel_control_request_seconds", "Request latency",
                                 ["method", "route", "status"], registry=registry)

    def set_job_counts(self, counts: Mapping[str, int]) -> None:
        for state, count in counts.items():
            self.jobs.labels(state).set(count)


def _limit_text(limit: int) -> str:
    mib = 1024 * 1024
    return f"{limit // mib} MiB" if limit % mib == 0 else f"{limit} bytes"


def _hlsjs_path(override: Path | None) -> Path:
    if override is not None:
        return Path(override)
    env = os.environ.get("REEL_HLSJS")
    if env:
        return Path(env)
    return REPO_ROOT / "node_modules" / "hls.js" / "dist" / "hls.min.js"


async def _read_json(request: web.Request) -> dict[str, Any]:
    """The JSON object body of `request` ({} when empty); 400/413 problems otherwise."""
    if request.content_length is not None and request.content_length > MAX_JSON_BYTES:
        raise ProblemError(413, f"JSON bodies are limited to {MAX_JSON_BYTES} bytes")
    raw = bytearray()
    while len(raw) <= MAX_JSON_BYTES:
        chunk = await request.content.read(MAX_JSON_BYTES + 1 - len(raw))
        if not chunk:
            break
        raw += chunk
    if len(raw) > MAX_JSON_BYTES:
        raise ProblemError(413, f"JSON bodies are limited to {MAX_JSON_BYTES} bytes")
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProblemError(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ProblemError(400, "the body must be a JSON object")
    return body


def _field(body: Mapping[str, Any], name: str, kind: type | tuple[type, ...], what: str,
           default: Any = ...) -> Any:
    """body[name] checked against `kind` (a boolean is never a number); 400 when missing/wrong."""
    value = body.get(name)
    if value is None:
        if default is ...:
            raise ProblemError(400, f"`{name}` is required: {what}")
        return default
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise ProblemError(400, f"`{name}` must be {what}")
    return value


@contextmanager
def _job_errors(handle: str) -> Iterator[None]:
    """Queue refusals as problems: unknown job 404, lost lease 409."""
    try:
        yield
    except UnknownJob:
        raise ProblemError(404, f"no job {handle!r}") from None
    except LeaseLost as exc:
        raise ProblemError(409, f"{exc}: stop working on it", title="Lease lost") from None


class Control:
    """The request handlers, with what they need handed in."""

    def __init__(self, *, store: Store, videos: Videos, queue: JobQueue, geo_url: str,
                 worker_token: str, max_upload_bytes: int, metrics: ControlMetrics,
                 watch_template: string.Template, hlsjs: Path) -> None:
        self.store = store
        self.videos = videos
        self.queue = queue
        self.geo_url = geo_url.rstrip("/")
        self._token = worker_token.encode()
        self.max_upload_bytes = max_upload_bytes
        self.metrics = metrics
        self.watch_template = watch_template
        self.hlsjs = hlsjs

    # -- shared ---------------------------------------------------------------------------------

    def video_json(self, request: web.Request, video: Video) -> dict[str, Any]:
        return video.to_json(control_url=f"{request.scheme}://{request.host}",
                             geo_url=self.geo_url)

    async def _find(self, video_id: str) -> Video | None:
        return await self.videos.get(video_id) if is_video_id(video_id) else None

    def _require_worker(self, request: web.Request) -> None:
        scheme, _, token = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
        given = token.strip().encode("utf-8", "surrogateescape")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given, self._token):
            raise ProblemError(401, "a valid worker token is required: "
                                    "Authorization: Bearer <worker token>",
                               headers={hdrs.WWW_AUTHENTICATE: 'Bearer realm="reel-worker"'})

    async def refresh_job_gauge(self) -> None:
        self.metrics.set_job_counts(await self.queue.counts())

    # -- uploads --------------------------------------------------------------------------------

    def _reject_upload(self, result: str, status: int, detail: str,
                       headers: Mapping[str, str] | None = None) -> ProblemError:
        self.metrics.uploads.labels(result).inc()
        return ProblemError(status, detail, headers=headers)

    def _check_upload_headers(self, request: web.Request) -> None:
        if request.content_type != "multipart/form-data":
            raise self._reject_upload(
                "unsupported_media_type", 415,
                f"send the upload as multipart/form-data, not {request.content_type}",
                headers={"Accept-Post": "multipart/form-data"})
        length = request.content_length
        if length is not None and length > self.max_upload_bytes + FORM_OVERHEAD:
            raise self._reject_upload(
                "too_large", 413, f"upload exceeds the {_limit_text(self.max_upload_bytes)} limit")

    async def expect_upload(self, request: web.Request) -> web.StreamResponse | None:
        """`Expect: 100-continue`: refuse a doomed upload before the client sends the body."""
        if request.headers.get(hdrs.EXPECT, "").lower() != "100-continue":
            return problem_response(417, f"unsupported Expect: {request.headers[hdrs.EXPECT]}")
        try:
            self._check_upload_headers(request)
        except ProblemError as exc:
            return exc.response()
        if request.version >= (1, 1):
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0
        return None

    async def create_video(self, request: web.Request) -> web.Response:
        self._check_upload_headers(request)
        video_id = new_video_id()
        stored: list[ObjectInfo] = []  # filled as soon as the source is in the store
        try:
            title, filename = await self._receive_form(request, source_key(video_id), stored)
            if not stored:
                raise self._reject_upload("bad_request", 400, "the form has no `file` part: "
                                                              "send the media in a part named file")
            size = stored[0].size
            video, job = await self.videos.create(video_id, title or _title_from(filename), size,
                                                  self.queue)
        except BaseException:
            if stored:
                await self.store.delete_prefix(f"sources/{video_id}/")
            raise
        self.metrics.uploads.labels("accepted").inc()
        self.metrics.upload_bytes.inc(size)
        await self.refresh_job_gauge()
        log.info("upload accepted", extra=fields(video=video_id, bytes=size, job=job.id))
        return web.json_response(
            {"video": self.video_json(request, video), "job": {"id": job.id}},
            status=202,
            headers={hdrs.LOCATION: f"/api/v1/videos/{video_id}"},
        )

    async def _receive_form(
        self, request: web.Request, key: str, stored: list[ObjectInfo]
    ) -> tuple[str | None, str | None]:
        """Read the form, in any part order: (title, file name). The `file` part streams to
        `key` and its ObjectInfo is appended to `stored` (so the caller can undo it)."""
        title: str | None = None
        filename: str | None = None
        small_budget = FORM_OVERHEAD
        try:
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, BodyPartReader):
                    raise self._reject_upload("bad_request", 400,
                                              "nested multipart parts are not supported")
                if part.name == "file":
                    if stored:
                        raise self._reject_upload("bad_request", 400, "send one `file` part only")
                    filename = part.filename
                    stored.append(await self._store_part(part, key))
                    continue
                data = await _read_small(part, small_budget)
                if data is None:
                    raise self._reject_upload("bad_request", 400,
                                              "form fields other than `file` are too large")
                small_budget -= len(data)
                if part.name == "title":
                    title = self._parse_title(data)
        except (ValueError, HttpProcessingError) as exc:
            raise self._reject_upload("bad_request", 400,
                                      f"malformed multipart body: {exc}") from None
        except ConnectionError:
            raise self._reject_upload("aborted", 400, "the upload was interrupted") from None
        return title, filename

    def _parse_title(self, data: bytes) -> str:
        try:
            title = data.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise self._reject_upload("bad_request", 400, "`title` must be UTF-8") from None
        if len(title) > MAX_TITLE_CHARS:
            raise self._reject_upload("bad_request", 400,
                                      f"`title` is limited to {MAX_TITLE_CHARS} characters")
        if any(ch < " " for ch in title):
            raise self._reject_upload("bad_request", 400, "`title` has control characters")
        return title

    async def _store_part(self, part: BodyPartReader, key: str) -> ObjectInfo:
        first = b""
        while not first and not part.at_eof():
            first = await part.read_chunk(UPLOAD_CHUNK)
        if not first:
            raise self._reject_upload("empty", 400, "empty upload: the `file` part has no bytes")

        async def chunks() -> AsyncIterator[bytes]:
            yield first
            while not part.at_eof():
                chunk = await part.read_chunk(UPLOAD_CHUNK)
                if chunk:
                    yield chunk

        try:
            async with aclosing(chunks()) as body:
                return await self.store.write(key, body, max_bytes=self.max_upload_bytes)
        except TooLarge:
            raise self._reject_upload(
                "too_large", 413, f"upload exceeds the {_limit_text(self.max_upload_bytes)} limit"
            ) from None

    # -- videos ---------------------------------------------------------------------------------

    async def get_video(self, request: web.Request) -> web.Response:
        video_id = request.match_info["video_id"]
        video = await self._find(video_id)
        if video is None:
            raise ProblemError(404, f"no video {video_id!r}")
        return web.json_response(self.video_json(request, video))

    # -- worker job API -------------------------------------------------------------------------

    def _job_json(self, job: Job) -> dict[str, Any]:
        return {
            "id": job.handle,
            "video_id": job.video_id,
            "source_key": source_key(job.video_id),
            "output_prefix": output_prefix(job.video_id),
            "lease_seconds": self.queue.lease_seconds,
            "attempt": job.attempts,
        }

    async def claim_job(self, request: web.Request) -> web.Response:
        self._require_worker(request)
        body = await _read_json(request)
        worker = _field(body, "worker", str, "a string", default="unnamed")[:128]
        job = await self.queue.claim(worker)
        if job is None:
            return web.Response(status=204)
        self.metrics.job_events.labels("claimed").inc()
        await self.refresh_job_gauge()
        return web.json_response({"job": self._job_json(job)})

    async def heartbeat_job(self, request: web.Request) -> web.Response:
        self._require_worker(request)
        body = await _read_json(request)
        progress = None
        raw = _field(body, "progress", dict, "an object {done, total}", default=None)
        if raw is not None:
            done = _field(raw, "done", int, "an integer")
            total = _field(raw, "total", int, "an integer")
            if done < 0 or total < 0:
                raise ProblemError(400, "`progress` counts must not be negative")
            progress = (done, total)
        with _job_errors(request.match_info["job_id"]):
            await self.queue.heartbeat(request.match_info["job_id"], progress)
        self.metrics.job_events.labels("heartbeat").inc()
        return web.json_response({"lease_seconds": self.queue.lease_seconds})

    async def complete_job(self, request: web.Request) -> web.Response:
        self._require_worker(request)
        body = await _read_json(request)
        duration = float(_field(body, "duration", (int, float), "a number of seconds"))
        if not math.isfinite(duration) or duration < 0:
            raise ProblemError(400, "`duration` must be a finite number >= 0")
        renditions = _field(body, "renditions", list, "a list of strings", default=[])
        if not all(isinstance(r, str) for r in renditions):
            raise ProblemError(400, "`renditions` must be a list of strings")
        with _job_errors(request.match_info["job_id"]):
            job = await self.queue.complete(request.match_info["job_id"],
                                            {"duration": duration, "renditions": renditions})
        self.metrics.job_events.labels("completed").inc()
        await self.refresh_job_gauge()
        return web.json_response({"job": {"id": job.id, "state": job.state},
                                  "video": {"id": job.video_id, "state": "ready"}})

    async def fail_job(self, request: web.Request) -> web.Response:
        self._require_worker(request)
        body = await _read_json(request)
        reason = _field(body, "reason", str, "a short string such as not_a_video").strip()[:64] or "error"
        detail = _field(body, "detail", str, "a string", default="").strip()[:2000]
        permanent = _field(body, "permanent", bool, "a boolean", default=False)
        message = f"{reason}: {detail}" if detail else reason
        with _job_errors(request.match_info["job_id"]):
            job = await self.queue.fail(request.match_info["job_id"], message,
                                        permanent=permanent)
        retrying = job.state == "queued"
        self.metrics.job_events.labels("retried" if retrying else "failed").inc()
        await self.refresh_job_gauge()
        answer: dict[str, Any] = {"job": {"id": job.id, "state": job.state,
                                          "attempts": job.attempts, "retry": retrying}}
        if retrying:
            answer["job"]["retry_in_seconds"] = max(0.0, round(job.not_before - time.time(), 3))
        return web.json_response(answer)

    # -- pages and plumbing ---------------------------------------------------------------------

    async def watch(self, request: web.Request) -> web.Response:
        video_id = request.match_info["video_id"]
        video = await self._find(video_id)
        if video is None:
            return web.Response(status=404, content_type="text/html",
                                text=_not_found_page(video_id))
        data = {"video": self.video_json(request, video), "api_url": f"/api/v1/videos/{video.id}"}
        page = self.watch_template.substitute(
            title=html.escape(video.title or video.id),
            state=html.escape(video.state),
            status=html.escape({"queued": "Waiting to be processed…",
                                "processing": "Processing…",
                                "failed": f"This video could not be processed: {video.reason}",
                                }.get(video.state, "")),
            video_json=json.dumps(data).replace("<", "\\u003c"),
        )
        return web.Response(text=page, content_type="text/html",
                            headers={hdrs.CACHE_CONTROL: "no-cache"})

    async def hlsjs_file(self, request: web.Request) -> web.StreamResponse:
        if not self.hlsjs.is_file():
            raise ProblemError(404, f"hls.js is not installed at {self.hlsjs}: run `npm ci` "
                                    "in the repository root (or set REEL_HLSJS)")
        return web.FileResponse(self.hlsjs, headers={
            hdrs.CACHE_CONTROL: "public, max-age=86400",
            hdrs.CONTENT_TYPE: "text/javascript; charset=utf-8",
        })

    async def healthz(self, request: web.Request) -> web.Response:
        try:
            await self.videos.db.fetchone("SELECT 1")
        except Exception as exc:
            log.warning("health check failed", extra=fields(error=repr(exc)))
            raise ProblemError(503, "the database does not answer") from None
        return web.json_response({"status": "ok"})

    async def openapi_json(self, request: web.Request) -> web.Response:
        return web.json_response(openapi.document())


async def _read_small(part: BodyPartReader, limit: int) -> bytes | None:
    """A small form field, or None when it is over `limit` bytes."""
    data = bytearray()
    while not part.at_eof():
        data += await part.read_chunk(8192)
        if len(data) > limit:
            return None
    return bytes(data)


def _title_from(filename: str | None) -> str:
    if not filename:
        return "Untitled"
    stem = filename.replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0].strip()
    return "".join(ch for ch in stem if ch >= " ")[:MAX_TITLE_CHARS] or "Untitled"


def _not_found_page(video_id: str) -> str:
    return ("<!doctype html><meta charset=utf-8><title>Not found · reel</title>"
            "<body style='font-family:system-ui;background:#0f0f10;color:#eee;padding:2em'>"
            f"<h1>No such video</h1><p>There is no video {html.escape(video_id)!s}.</p>")


def _metrics_middleware(m: ControlMetrics) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        start = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            route = request.match_info.route.resource
            name = route.canonical if route is not None else "unmatched"
            m.latency.labels(request.method, name, str(status)).observe(
                time.perf_counter() - start)

    return middleware


def make_app(
    data_dir: Path,
    store: Store,
    geo_url: str,
    worker_token: str,
    max_upload_bytes: int,
    *,
    lease_seconds: float = 60,
    max_attempts: int = 3,
    retry_backoff_seconds: float = 5,
    hlsjs_path: Path | None = None,
) -> web.Application:
    """The control application; its SQLite database lives in `data_dir`."""
    if not worker_token:
        raise ValueError("worker_token must not be empty")
    if max_upload_bytes <= 0:
        raise ValueError("max_upload_bytes must be positive")
    db = Database(Path(data_dir) / "control.sqlite3")
    queue = JobQueue(db, VideoJobHooks(), lease_seconds=lease_seconds, max_attempts=max_attempts,
                     retry_backoff_seconds=retry_backoff_seconds)
    app = web.Application()
    control_metrics = ControlMetrics(metrics.install(app))
    control_metrics.set_job_counts(dict.fromkeys(JOB_STATES, 0))
    handlers = Control(
        store=store, videos=Videos(db), queue=queue, geo_url=geo_url, worker_token=worker_token,
        max_upload_bytes=max_upload_bytes, metrics=control_metrics,
        watch_template=string.Template((PACKAGE_DIR / "static" / "watch.html").read_text("utf-8")),
        hlsjs=_hlsjs_path(hlsjs_path),
    )
    app[DB_KEY] = db
    app.middlewares.extend([_metrics_middleware(control_metrics), problem_middleware])

    async def database(app: web.Application) -> AsyncIterator[None]:
        await db.open()
        await handlers.refresh_job_gauge()
        log.info("database open", extra=fields(path=str(db.path)))
        yield
        await db.close()

    app.cleanup_ctx.append(database)

    r = app.router
    r.add_post("/api/v1/videos", handlers.create_video, expect_handler=handlers.expect_upload)
    r.add_get("/api/v1/videos/{video_id}", handlers.get_video)
    r.add_post("/api/v1/jobs/claim", handlers.claim_job)
    r.add_post("/api/v1/jobs/{job_id}/heartbeat", handlers.heartbeat_job)
    r.add_post("/api/v1/jobs/{job_id}/complete", handlers.complete_job)
    r.add_post("/api/v1/jobs/{job_id}/fail", handlers.fail_job)
    r.add_get("/api/v1/openapi.json", handlers.openapi_json)
    r.add_get("/watch/{video_id}", handlers.watch)
    r.add_get("/static/hls.min.js", handlers.hlsjs_file)
    r.add_get("/healthz", handlers.healthz)
    return app
