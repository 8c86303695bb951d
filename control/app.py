"""The control HTTP app: `make_app` wires every part, and `Control` serves multipart uploads
and the pages.

Every route is registered through `control.api.Api`, which also writes the OpenAPI document.
Handlers speak to storage only through `origin.store.Store` and to the database only through
`Videos` and `JobQueue`; every error leaves as RFC 7807 problem+json (see `control.problems`).
The database is the factory's choice (`open_database`): SQLite, or PostgreSQL for a URL.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import aclosing, suppress
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from control.accounts import AccountHandlers, Accounts, Auth, PasswordHasher, User
from control.api import PROBLEM, Api
from control.caching import Sharing
from control.caching import describe as describe_sharing
from control.catalog import Ingest, VideoHandlers, hashed, title_from, video_fields
from control.db import Database
from control.jobs import STATES as JOB_STATES
from control.jobs import JobQueue
from control.latest import LatestHandlers
from control.live import LiveSettings, LiveStreams
from control.live import sweep as sweep_live
from control.livehttp import IngestHandlers, LiveHandlers
from control.models import Health, UploadAccepted, UploadForm
from control.pages import Pages, npm_file
from control.pg import PostgresDatabase
from control.privacy import Privacy
from control.problems import ProblemError, problem_middleware, problem_response
from control.purge import EdgePurger
from control.ratelimit import RateLimiter, RateLimits
from control.search import SearchHandlers
from control.social import SocialHandlers
from control.sqlite import SQLiteDatabase
from control.staging import LocalStaging
from control.tus import EXPOSE as TUS_EXPOSE
from control.tus import TusHandlers
from control.videos import Video, VideoJobHooks, Videos
from control.views import ViewCounter
from control.warm import FeedWarmer
from control.workers import JobHandlers
from origin.store import ObjectInfo, Store, TooLarge
from reel import metrics
from reel.logs import fields
from reel.playback_token import KeyRing

log = logging.getLogger("reel.control")

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
UPLOAD_CHUNK = 256 * 1024
FORM_OVERHEAD = 64 * 1024  # multipart headers, boundaries and small fields around the file
FORM_FIELDS = tuple(name for name in UploadForm.model_fields if name != "file")

DB_KEY = web.AppKey("control_db", Database)
API_KEY = web.AppKey("control_api", Api)
STAGING_KEY = web.AppKey("control_staging", Path)  # where unfinished tus uploads grow
INFO = {
    "title": "reel control API",
    "version": "1",
    "description": (
        "Accounts, uploads (multipart and tus 1.0), videos, viewers' reviews, ratings, comments, "
        "follows and views, search, and the packaging job queue of reel. Errors are RFC 7807 "
        "application/problem+json. Users send `Authorization: Bearer <token>` from POST "
        "/api/v1/sessions; workers send the shared worker token. Lists are cursor-paginated: "
        "pass `next_cursor` back as `cursor`. Requests are authenticated before they are "
        "throttled: missing or bad credentials are 401, never 429."),
}


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
        self.live_events = Counter(
            "reel_control_live_events_total",
            "What ingest asked and told of live streams (admitted, resumed, refused_unknown, "
            "refused_busy, refused_ended, connected, gone, vod, fail)", ["event"],
            registry=registry)
        self.latency = Histogram("reel_control_request_seconds", "Request latency",
                                 ["method", "route", "status"], registry=registry)

    def set_job_counts(self, counts: Mapping[str, int]) -> None:
        for state, count in counts.items():
            self.jobs.labels(state).set(count)


def open_database(where: str | Path, replica: str | None = None) -> Database:
    """A closed `Database` for a PostgreSQL URL (postgresql://...) or an SQLite file path;
    `replica`: a PostgreSQL streaming replica's URL, for reads that may be a moment old."""
    text = str(where)
    if text.startswith(("postgresql://", "postgres://")):
        return PostgresDatabase(text, replica=replica)
    if replica is not None:
        raise ValueError("a read replica needs a PostgreSQL primary (--db postgresql://...)")
    return SQLiteDatabase(Path(where))


def _hlsjs_path(override: Path | None) -> Path:
    if override is not None:
        return Path(override)
    env = os.environ.get("REEL_HLSJS")
    if env:
        return Path(env)
    return REPO_ROOT / "node_modules" / "hls.js" / "dist" / "hls.min.js"


class Control:
    """The request handlers for multipart uploads, hls.js and health (the pages: `control.pages`)."""

    def __init__(self, *, store: Store, videos: Videos, ingest: Ingest, auth: Auth, geo_url: str,
                 metrics: ControlMetrics, hlsjs: Path, privacy: Privacy) -> None:
        self.privacy = privacy
        self.store = store
        self.videos = videos
        self.ingest = ingest
        self.auth = auth
        self.geo_url = geo_url.rstrip("/")
        self.metrics = metrics
        self.hlsjs = hlsjs

    def add_routes(self, api: Api) -> None:
        api.route("POST", "/api/v1/videos", self.create_video, tag="videos", auth="user",
                  summary="Upload a video", expect_handler=self.expect_upload,
                  description="multipart/form-data: the media in a `file` part (streamed to the "
                              "store), the video's fields in parts beside it, in any order. "
                              "Creates a queued video and its packaging job. Supports "
                              "`Expect: 100-continue`.",
                  content={"multipart/form-data": {"schema": {
                      "$ref": "#/components/schemas/UploadForm"}}},
                  responses={202: UploadAccepted, 200: UploadAccepted, 400: PROBLEM,
                             413: PROBLEM, 415: PROBLEM})
        api.describe(UploadForm)
        api.route("GET", "/api/v1/openapi.json", self.openapi_json, summary="This document",
                  tag="meta", responses={200: {"description": "OpenAPI 3.1", "content": {
                      "application/json": {"schema": {"type": "object"}}}}})
        api.route("GET", "/static/hls.min.js", self.hlsjs_file, tag="pages",
                  summary="hls.js, from the npm install",
                  responses={200: {"description": "JavaScript",
                                   "content": {"text/javascript": {}}}, 404: PROBLEM})
        api.route("GET", "/healthz", self.healthz, summary="200 when the database answers",
                  tag="meta", throttled=False, responses={200: Health, 503: PROBLEM})

    # -- shared ---------------------------------------------------------------------------------

    def video_json(self, request: web.Request, video: Video) -> dict[str, Any]:
        return video.to_json(control_url=f"{request.scheme}://{request.host}",
                             geo_url=self.geo_url, token=self.privacy.token(video))

    # -- uploads --------------------------------------------------------------------------------

    def _reject_upload(self, result: str, status: int, detail: str,
                       headers: Mapping[str, str] | None = None) -> ProblemError:
        self.metrics.uploads.labels(result).inc()
        return ProblemError(status, detail, headers=headers)

    async def _check_upload_headers(self, request: web.Request) -> tuple[User, int]:
        """The uploader and the bytes they may still upload, or a problem before the body."""
        try:
            user = await self.auth.require(request)
        except ProblemError:
            self.metrics.uploads.labels("unauthorized").inc()
            raise
        if request.content_type != "multipart/form-data":
            raise self._reject_upload(
                "unsupported_media_type", 415,
                f"send the upload as multipart/form-data, not {request.content_type}",
                headers={"Accept-Post": "multipart/form-data"})
        room = await self.ingest.room(user)
        length = request.content_length
        if length is not None and length > room + FORM_OVERHEAD:
            raise self._reject_upload("too_large", 413,
                                      await self.ingest.over_limit(user, length - FORM_OVERHEAD))
        return user, room

    async def expect_upload(self, request: web.Request) -> web.StreamResponse | None:
        """`Expect: 100-continue`: refuse a doomed upload before the client sends the body."""
        if request.headers.get(hdrs.EXPECT, "").lower() != "100-continue":
            return problem_response(417, f"unsupported Expect: {request.headers[hdrs.EXPECT]}")
        try:
            await self._check_upload_headers(request)
        except ProblemError as exc:
            return exc.response()
        if request.version >= (1, 1):
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0
        return None

    async def create_video(self, request: web.Request) -> web.Response:
        user, room = await self._check_upload_headers(request)
        form: dict[str, str] = {}
        sizes: list[int] = []

        async def write(key: str) -> tuple[ObjectInfo, str]:
            digest = hashlib.sha256()
            info = await self._receive_form(request, key, form, room, digest)
            if info is None:
                raise self._reject_upload("bad_request", 400, "the form has no `file` part: "
                                                              "send the media in a part named file")
            sizes.append(info.size)
            return info, digest.hexdigest()

        try:
            video, job = await self.ingest.publish(user.id, form, write)
        except TooLarge:
            raise self._reject_upload("too_large", 413,
                                      await self.ingest.over_limit(user, None)) from None
        if job is None:
            self.metrics.uploads.labels("duplicate").inc()
            return web.json_response({"video": self.video_json(request, video), "job": None,
                                      "duplicate": True},
                                     headers={hdrs.LOCATION: f"/api/v1/videos/{video.id}"})
        self.metrics.uploads.labels("accepted").inc()
        self.metrics.upload_bytes.inc(sizes[0])
        log.info("upload accepted", extra=fields(video=video.id, bytes=sizes[0], job=job.id))
        return web.json_response(
            {"video": self.video_json(request, video), "job": {"id": job.id}, "duplicate": False},
            status=202,
            headers={hdrs.LOCATION: f"/api/v1/videos/{video.id}"},
        )

    async def _receive_form(self, request: web.Request, key: str, form: dict[str, str],
                            room: int, digest: Any) -> ObjectInfo | None:
        """Read the form, in any part order: small fields go to `form` (the file name as
        `filename`); the `file` part streams to `key`, through `digest`. Its ObjectInfo, or None
        when there was no file part. Anything wrong after the file was stored removes it."""
        stored: ObjectInfo | None = None
        small_budget = FORM_OVERHEAD
        try:
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, BodyPartReader):
                    raise self._reject_upload("bad_request", 400,
                                              "nested multipart parts are not supported")
                if part.name == "file":
                    if stored is not None:
                        raise self._reject_upload("bad_request", 400, "send one `file` part only")
                    if part.filename:
                        form.setdefault("filename", part.filename)
                    stored = await self._store_part(part, key, room, digest)
                    continue
                if part.name not in FORM_FIELDS:
                    raise self._reject_upload("bad_request", 400, f"unknown form field "
                                              f"{part.name!r}: send file, {', '.join(FORM_FIELDS)}")
                data = await _read_small(part, small_budget)
                if data is None:
                    raise self._reject_upload("bad_request", 400,
                                              "form fields other than `file` are too large")
                small_budget -= len(data)
                try:
                    form[part.name] = data.decode("utf-8")
                except UnicodeDecodeError:
                    raise self._reject_upload("bad_request", 400,
                                              f"`{part.name}` must be UTF-8") from None
            if "title" not in form:
                form["title"] = title_from(form.get("filename"))
            try:  # refuse bad metadata here, while the source can still be undone
                video_fields(form)
            except ProblemError:
                self.metrics.uploads.labels("bad_request").inc()
                raise
        except BaseException as exc:
            if stored is not None:
                await self.store.delete_prefix(f"sources/{key.split('/')[1]}/")
            if isinstance(exc, ValueError | HttpProcessingError):
                raise self._reject_upload("bad_request", 400,
                                          f"malformed multipart body: {exc}") from None
            if isinstance(exc, ConnectionError):
                raise self._reject_upload("aborted", 400, "the upload was interrupted") from None
            raise
        return stored

    async def _store_part(self, part: BodyPartReader, key: str, room: int,
                          digest: Any) -> ObjectInfo:
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

        async with aclosing(hashed(chunks(), digest)) as body:
            return await self.store.write(key, body, max_bytes=room)

    # -- pages and plumbing ---------------------------------------------------------------------

    async def hlsjs_file(self, request: web.Request) -> web.StreamResponse:
        return npm_file(self.hlsjs, "hls.js", " (or set REEL_HLSJS)")

    async def healthz(self, request: web.Request) -> web.Response:
        try:
            await self.videos.db.fetchone("SELECT 1")
        except Exception as exc:
            log.warning("health check failed", extra=fields(error=repr(exc)))
            raise ProblemError(503, "the database does not answer") from None
        return web.json_response({"status": "ok"})

    async def openapi_json(self, request: web.Request) -> web.Response:
        return web.json_response(request.app[API_KEY].document())


async def _read_small(part: BodyPartReader, limit: int) -> bytes | None:
    """A small form field, or None when it is over `limit` bytes."""
    data = bytearray()
    while not part.at_eof():
        data += await part.read_chunk(8192)
        if len(data) > limit:
            return None
    return bytes(data)


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


CORS_HEADERS = {
    # Bearer tokens, never cookies: any origin may call the API without risking a user's session.
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": f"Location, Retry-After, {TUS_EXPOSE}",
}


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        return web.Response(status=204, headers={
            **CORS_HEADERS,
            "Access-Control-Allow-Methods": "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS",
            "Access-Control-Allow-Headers": request.headers.get(
                "Access-Control-Request-Headers", "Authorization, Content-Type"),
            "Access-Control-Max-Age": "86400",
        })
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers.update(CORS_HEADERS)
        raise
    if not response.prepared:
        response.headers.update(CORS_HEADERS)
    return response


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
    quota_bytes: int = 50 * 1024**3,
    session_seconds: float = 7 * 86400,
    admin_emails: Sequence[str] = (),
    password_hasher: PasswordHasher | None = None,
    upload_expiry_seconds: float = 24 * 3600,
    sweep_seconds: float = 300,
    edges: Sequence[str] = (),
    purge_token: str = "",
    purge_timeout: float = 3.0,
    playback_keys: KeyRing | None = None,
    token_seconds: float = 4 * 3600,
    view_window_seconds: float = 3600,
    view_flush_seconds: float = 0.5,
    max_pending_views: int = 100_000,
    trending_seconds: float = 86400,
    database: str | None = None,
    database_replica: str | None = None,
    rate_limits: RateLimits | None = None,
    live: LiveSettings | None = None,
    clock: Callable[[], float] = time.time,
    worker: int = 0,
    workers: Sequence[str] = (),
    edge_secret: str = "",
    api_max_age: int = 2,
) -> web.Application:
    """The control application. Upload staging lives in `data_dir`; so does the SQLite database,
    unless `database` is a PostgreSQL URL (postgresql://user:password@host/dbname), whose
    anonymous reads may go to `database_replica` (control.requests.reads). `clock` tells the
    time to everything that keeps it (leases, backoffs, sessions, uploads' expiry, views, live
    streams' grace periods). `live` says where ingest listens and how long a publisher may be
    gone before its stream ends. `workers`: every worker process's private URL (reel.workers),
    `worker` this one's index; worker 0 alone runs the periodic sweeps, and /metrics on any
    worker sums them all. Edges may share anonymous reads for `api_max_age` seconds
    (control.caching), and are believed about their clients' addresses with `edge_secret`."""
    if not worker_token:
        raise ValueError("worker_token must not be empty")
    if max_upload_bytes <= 0:
        raise ValueError("max_upload_bytes must be positive")
    db = open_database(database or Path(data_dir) / "control.sqlite3", database_replica)
    queue = JobQueue(db, VideoJobHooks(clock), lease_seconds=lease_seconds,
                     max_attempts=max_attempts, retry_backoff_seconds=retry_backoff_seconds,
                     clock=clock)
    app = web.Application()
    # Job counts are one fact about the database, the same in every worker: not summed.
    registry = metrics.install(app, [url for i, url in enumerate(workers) if i != worker],
                               combine={"reel_control_jobs": max})
    control_metrics = ControlMetrics(registry)
    control_metrics.set_job_counts(dict.fromkeys(JOB_STATES, 0))
    videos = Videos(db, clock)
    accounts = Accounts(db, session_seconds=session_seconds, hasher=password_hasher,
                        admin_emails=admin_emails, clock=clock)
    auth = Auth(accounts)
    purger = EdgePurger(edges, purge_token, registry, timeout=purge_timeout)
    privacy = Privacy(store, purger, playback_keys, token_seconds)
    streams = LiveStreams(db, live or LiveSettings(), clock, privacy=privacy)
    views = ViewCounter(db, registry, window_seconds=view_window_seconds,
                        flush_seconds=view_flush_seconds, max_pending=max_pending_views, clock=clock,
                        on_counted=videos.counted)
    warmer = FeedWarmer(geo_url, registry)

    async def refresh_job_gauge() -> None:
        control_metrics.set_job_counts(await queue.counts())

    ingest = Ingest(store=store, videos=videos, queue=queue, max_upload_bytes=max_upload_bytes,
                    quota_bytes=quota_bytes, on_queued=refresh_job_gauge, privacy=privacy)
    handlers = Control(
        store=store, videos=videos, ingest=ingest, auth=auth, geo_url=geo_url,
        metrics=control_metrics,
        hlsjs=_hlsjs_path(hlsjs_path), privacy=privacy,
    )
    staging = Path(data_dir) / "uploads"
    tus = TusHandlers(db, LocalStaging(staging), auth, ingest, max_size=max_upload_bytes,
                      expiry_seconds=upload_expiry_seconds, clock=clock)
    video_handlers = VideoHandlers(videos=videos, accounts=accounts, auth=auth, store=store,
                                   purger=purger, privacy=privacy, render=handlers.video_json)
    api = Api(app.router, INFO)
    api.guard("user", auth.require)
    api.guard("optional", auth.user)
    app[DB_KEY] = db
    app[STAGING_KEY] = staging
    app[API_KEY] = api
    limiter = RateLimiter(rate_limits or RateLimits(), api)
    sharing = Sharing(max_age=api_max_age, edge_secret=edge_secret)
    app.middlewares.extend([sharing.forwarded, cors_middleware, _metrics_middleware(control_metrics),
                            sharing.cache_headers, problem_middleware, limiter.middleware])

    async def database(app: web.Application) -> AsyncIterator[None]:
        await db.open()
        await accounts.promote_admins()
        await refresh_job_gauge()
        await purger.start()
        views.start()
        warmer.start()
        log.info("database open", extra=fields(database=repr(db)))
        # Sweeps are idempotent, but N workers sweeping would be N times the work: one does.
        sweepers = [asyncio.create_task(_sweep(tus, accounts, sweep_seconds)),
                    asyncio.create_task(sweep_live(streams, _live_sweep(streams.settings),
                                                   asyncio.sleep))] if worker == 0 else []
        yield
        for sweeper in sweepers:
            sweeper.cancel()
            with suppress(asyncio.CancelledError):
                await sweeper
        await views.close()  # a graceful stop merges every view accepted
        await warmer.close()
        await privacy.close()
        await purger.close()
        await db.close()
        await store.close()

    app.cleanup_ctx.append(database)

    handlers.add_routes(api)
    video_handlers.add_routes(api)
    AccountHandlers(accounts, auth).add_routes(api)
    SearchHandlers(db, auth, handlers.video_json).add_routes(api)
    SocialHandlers(db=db, accounts=accounts, auth=auth, catalog=video_handlers,
                   render=handlers.video_json, views=views, warmer=warmer,
                   trending_seconds=trending_seconds, clock=clock).add_routes(api)
    tus.add_routes(api)
    LiveHandlers(streams, video_handlers, handlers.video_json).add_routes(api)
    LatestHandlers(db, handlers.video_json).add_routes(api)
    Pages(tusjs=REPO_ROOT / "node_modules" / "tus-js-client" / "dist" / "tus.min.js").add_routes(api)
    jobs = JobHandlers(queue, worker_token, control_metrics.job_events, refresh_job_gauge)
    jobs.add_routes(api)
    IngestHandlers(streams, jobs.require_worker, control_metrics.live_events).add_routes(api)
    describe_sharing(api)
    api.route("GET", "/metrics", None, summary="Prometheus metrics", tag="meta", throttled=False,
              responses={200: {"description": "Prometheus text format",
                               "content": {"text/plain": {}}}})
    return app


def _live_sweep(settings: LiveSettings) -> float:
    """How often time's decisions on live streams are applied: well within a grace period."""
    return max(0.05, min(settings.grace_seconds, settings.heartbeat_seconds) / 4)


async def _sweep(tus: TusHandlers, accounts: Accounts, every: float) -> None:
    """Expired uploads and sessions go, every `every` seconds (and once at start)."""
    while True:
        try:
            await tus.sweep()
            await accounts.expire_sessions()
        except Exception:
            log.exception("sweep failed")
        await asyncio.sleep(every)
