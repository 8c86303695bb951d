"""The tus 1.0 resumable upload protocol at /api/v1/uploads.

Extensions: creation, creation-with-upload, expiration, checksum (sha1, md5, sha256) and
termination. The protocol handler knows nothing of storage or videos: bytes go to a `Staging`,
admission (size, quota, metadata) and completion are `UploadHooks`. The `uploads` table remembers
each upload's owner, declared length, metadata, expiry and, once complete, its video.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from control.accounts import Auth, User
from control.api import PROBLEM, Api
from control.db import Database
from control.models import UploadStatus
from control.problems import ProblemError
from control.requests import Param, path_id, up_to
from control.staging import OffsetMismatch, Staging
from reel.http import http_date
from reel.logs import fields

log = logging.getLogger("reel.control.tus")

TUS_VERSION = "1.0.0"
EXTENSIONS = "creation,creation-with-upload,expiration,checksum,termination"
CHECKSUMS = {"sha1": hashlib.sha1, "md5": hashlib.md5, "sha256": hashlib.sha256}
OFFSET_STREAM = "application/offset+octet-stream"
CHUNK = 256 * 1024
MAX_METADATA = 8000  # under aiohttp's 8190-byte limit on a header, so a longer one is ours to refuse
TUS_RESUMABLE = Param("Tus-Resumable", "header", {"const": TUS_VERSION}, required=True)
EXPOSE = ("Location, Upload-Offset, Upload-Length, Upload-Metadata, Upload-Expires, "
          "Tus-Resumable, Tus-Version, Tus-Extension, Tus-Max-Size, Tus-Checksum-Algorithm, "
          "Reel-Video-Id")


@dataclass(frozen=True)
class UploadRecord:
    id: str
    owner_id: str
    length: int
    metadata: dict[str, str]
    video_id: str | None
    expires_at: float


class UploadHooks(Protocol):
    async def admit(self, user: User, length: int, metadata: Mapping[str, str]) -> None:
        """Refuse (raise ProblemError: 413 too large or over quota, 400 bad metadata) or return."""

    async def complete(self, record: UploadRecord, staging: Staging) -> str:
        """Turn the finished upload into a video; returns the video id."""


def parse_metadata(header: str) -> dict[str, str]:
    """`key base64,key2 base64` -> {key: value}. As tusd does, a pair that cannot be read (no
    key, not base64 of UTF-8) is left out, and a repeated key keeps its last value."""
    if len(header) > MAX_METADATA:
        raise ProblemError(400, f"Upload-Metadata is limited to {MAX_METADATA} bytes")
    result: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in header.split(","))):
        key, _, value = pair.partition(" ")
        with suppress(binascii.Error, UnicodeDecodeError):
            result[key] = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    return result


def _tus_headers(**extra: str) -> dict[str, str]:
    return {"Tus-Resumable": TUS_VERSION, "Access-Control-Expose-Headers": EXPOSE, **extra}


class TusProblem(ProblemError):
    """A problem that also carries the Tus-Resumable header clients look for."""

    def __init__(self, status: int, detail: str, **kw: Any) -> None:
        headers = {**_tus_headers(), **kw.pop("headers", {})}
        super().__init__(status, detail, headers=headers, **kw)


class TusHandlers:
    """The tus endpoints. `sweep()` deletes expired uploads (the app runs it periodically)."""

    def __init__(self, db: Database, staging: Staging, auth: Auth, hooks: UploadHooks, *,
                 max_size: int, expiry_seconds: float = 24 * 3600,
                 clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.staging = staging
        self.auth = auth
        self.hooks = hooks
        self.max_size = max_size
        self.expiry_seconds = expiry_seconds
        self.clock = clock
        self._locks: dict[str, asyncio.Lock] = {}

    def add_routes(self, api: Api) -> None:
        upload = [path_id("upload_id"), TUS_RESUMABLE]
        api.route("OPTIONS", "/api/v1/uploads", self.options, summary="tus discovery",
                  tag="uploads", throttled=False, responses={
                      204: "Tus-Version, Tus-Extension, Tus-Max-Size, Tus-Checksum-Algorithm"})
        api.route("POST", "/api/v1/uploads", self.create, tag="uploads", auth="user",
                  summary="tus creation (and creation-with-upload)",
                  params=[TUS_RESUMABLE,
                          Param("Upload-Length", "header",
                                {"type": "string", "pattern": up_to(self.max_size)},
                                required=True, description="bytes, at most Tus-Max-Size; empty "
                                                           "uploads are refused"),
                          Param("Upload-Metadata", "header",
                                {"type": "string", "maxLength": MAX_METADATA},
                                description="`key base64,...`: title, description, tags (comma-"
                                            "separated), language, category, privacy, filename")],
                  responses={201: "Location: the upload URL", 400: PROBLEM, 412: PROBLEM,
                             413: PROBLEM})
        api.route("HEAD", "/api/v1/uploads/{upload_id}", self.head, tag="uploads", auth="user",
                  summary="tus: the upload's offset", params=upload,
                  responses={200: "Upload-Offset, Upload-Length", 401: "Sign in first",
                             404: "No such upload", 410: "Expired",
                             412: "Tus-Resumable missing or not 1.0.0"})
        api.route("GET", "/api/v1/uploads/{upload_id}", self.status, tag="uploads", auth="user",
                  summary="The upload as JSON, with its video once complete",
                  params=upload[:1], responses={200: UploadStatus, 404: PROBLEM, 410: PROBLEM},
                  allow_head=False)
        api.route("PATCH", "/api/v1/uploads/{upload_id}", self.patch, tag="uploads", auth="user",
                  summary="tus: append bytes at Upload-Offset",
                  description="Upload-Checksum (sha1, md5, sha256) is checked when sent: 460 "
                              "when the bytes do not match.",
                  params=[*upload, Param("Upload-Offset", "header",
                                         {"type": "string", "pattern": "^[0-9]{1,18}$"},
                                         required=True)],
                  content={OFFSET_STREAM: {"schema": {"type": "string", "format": "binary"}}},
                  responses={204: "Upload-Offset; Reel-Video-Id when complete", 400: PROBLEM,
                             404: PROBLEM, 409: PROBLEM, 410: PROBLEM, 412: PROBLEM,
                             413: PROBLEM, 415: PROBLEM, 423: PROBLEM, 460: PROBLEM})
        api.route("DELETE", "/api/v1/uploads/{upload_id}", self.terminate, tag="uploads",
                  auth="user", summary="tus termination", params=upload,
                  responses={204: "Terminated", 404: PROBLEM, 410: PROBLEM, 412: PROBLEM})

    # -- helpers ---------------------------------------------------------------------------------

    def _check_version(self, request: web.Request) -> None:
        version = request.headers.get("Tus-Resumable")
        if version != TUS_VERSION:
            raise TusProblem(412, f"send Tus-Resumable: {TUS_VERSION} (got {version!r})",
                             headers={"Tus-Version": TUS_VERSION})

    async def _record(self, request: web.Request, user: User) -> UploadRecord:
        row = await self.db.fetchone(
            "SELECT id, owner_id, length, metadata, video_id, expires_at FROM uploads WHERE id = ?",
            (request.match_info["upload_id"],))
        # Another user's upload is as absent as a missing one: ids are not to be probed.
        if row is None or (row["owner_id"] != user.id and not user.is_admin):
            raise TusProblem(404, "no such upload")
        record = UploadRecord(row["id"], row["owner_id"], row["length"],
                              json.loads(row["metadata"]), row["video_id"], row["expires_at"])
        if record.video_id is None and record.expires_at <= self.clock():
            raise TusProblem(410, "this upload expired: start a new one")
        return record

    async def _offset(self, record: UploadRecord) -> int:
        if record.video_id is not None:
            return record.length
        size = await self.staging.size(record.id)
        if size is None:
            raise TusProblem(410, "this upload is gone: start a new one")
        return size

    def _lock(self, upload_id: str) -> asyncio.Lock:
        return self._locks.setdefault(upload_id, asyncio.Lock())

    def _release(self, upload_id: str, lock: asyncio.Lock) -> None:
        lock.release()
        if not lock.locked() and self._locks.get(upload_id) is lock:
            del self._locks[upload_id]

    # -- endpoints -------------------------------------------------------------------------------

    async def options(self, request: web.Request) -> web.Response:
        return web.Response(status=204, headers=_tus_headers(
            **{"Tus-Version": TUS_VERSION, "Tus-Extension": EXTENSIONS,
               "Tus-Max-Size": str(self.max_size),
               "Tus-Checksum-Algorithm": ",".join(CHECKSUMS)}))

    async def create(self, request: web.Request) -> web.Response:
        self._check_version(request)
        user = await self.auth.require(request)
        if "Upload-Defer-Length" in request.headers:
            raise TusProblem(400, "Upload-Defer-Length is not supported: send Upload-Length")
        raw = request.headers.get("Upload-Length", "")
        if not raw.isascii() or not raw.isdigit() or len(raw) > 18 or raw.startswith("0"):
            raise TusProblem(400, "Upload-Length must be a positive integer, without leading "
                                  "zeros: empty uploads are refused")
        length = int(raw)
        if length > self.max_size:
            raise TusProblem(413, f"the upload is {length} bytes; the limit is {self.max_size} "
                                  "bytes (Tus-Max-Size)", headers={"Tus-Max-Size": str(self.max_size)})
        metadata = parse_metadata(request.headers.get("Upload-Metadata", ""))
        await self.hooks.admit(user, length, metadata)

        upload_id = secrets.token_urlsafe(16)
        now = self.clock()
        record = UploadRecord(upload_id, user.id, length, metadata, None, now + self.expiry_seconds)
        await self.staging.create(upload_id)
        await self.db.execute(
            "INSERT INTO uploads (id, owner_id, length, metadata, created_at, expires_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (upload_id, user.id, length, json.dumps(metadata), now, record.expires_at))
        log.info("upload created", extra=fields(upload=upload_id, user=user.id, length=length))
        headers = _tus_headers(Location=f"/api/v1/uploads/{upload_id}",
                               **{"Upload-Expires": http_date(record.expires_at)})
        if request.body_exists and request.content_type == OFFSET_STREAM:
            lock = self._lock(upload_id)
            await lock.acquire()
            try:
                offset, video_id = await self._receive(request, record, 0)
            finally:
                self._release(upload_id, lock)
            headers["Upload-Offset"] = str(offset)
            if video_id:
                headers["Reel-Video-Id"] = video_id
        return web.Response(status=201, headers=headers)

    async def head(self, request: web.Request) -> web.Response:
        self._check_version(request)
        user = await self.auth.require(request)
        record = await self._record(request, user)
        headers = _tus_headers(**{
            "Upload-Offset": str(await self._offset(record)),
            "Upload-Length": str(record.length),
            "Cache-Control": "no-store",
            "Upload-Expires": http_date(record.expires_at),
        })
        if record.metadata:
            headers["Upload-Metadata"] = ",".join(
                f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in record.metadata.items())
        if record.video_id:
            headers["Reel-Video-Id"] = record.video_id
        return web.Response(status=200, headers=headers)

    async def status(self, request: web.Request) -> web.Response:
        """Not tus: the upload as JSON, with its video once complete."""
        user = await self.auth.require(request)
        record = await self._record(request, user)
        return web.json_response({
            "id": record.id, "offset": await self._offset(record), "length": record.length,
            "metadata": record.metadata, "video_id": record.video_id,
            "expires_at": http_date(record.expires_at)}, headers={"Cache-Control": "no-store"})

    async def patch(self, request: web.Request) -> web.Response:
        self._check_version(request)
        user = await self.auth.require(request)
        if request.content_type != OFFSET_STREAM:
            raise TusProblem(415, f"PATCH bodies must be {OFFSET_STREAM}")
        raw = request.headers.get("Upload-Offset", "")
        if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
            raise TusProblem(400, "Upload-Offset must be a non-negative integer")
        record = await self._record(request, user)
        lock = self._lock(record.id)
        try:
            # A resumed client may race the server still reading its previous, dropped request.
            await asyncio.wait_for(lock.acquire(), timeout=10)
        except TimeoutError:
            raise TusProblem(423, "another request is writing to this upload") from None
        try:
            offset, video_id = await self._receive(request, record, int(raw))
        finally:
            self._release(record.id, lock)
        headers = _tus_headers(**{"Upload-Offset": str(offset),
                                  "Upload-Expires": http_date(self._extended(record))})
        if video_id:
            headers["Reel-Video-Id"] = video_id
        return web.Response(status=204, headers=headers)

    def _extended(self, record: UploadRecord) -> float:
        return max(record.expires_at, self.clock() + self.expiry_seconds)

    async def terminate(self, request: web.Request) -> web.Response:
        self._check_version(request)
        user = await self.auth.require(request)
        record = await self._record(request, user)
        await self.db.execute("DELETE FROM uploads WHERE id = ?", (record.id,))
        await self.staging.delete(record.id)
        log.info("upload terminated", extra=fields(upload=record.id))
        return web.Response(status=204, headers=_tus_headers())

    # -- receiving -------------------------------------------------------------------------------

    async def _receive(self, request: web.Request, record: UploadRecord,
                       offset: int) -> tuple[int, str | None]:
        """Append the body at `offset`; when that completes the upload, hand it on.

        Returns (new offset, video id once complete)."""
        current = await self._offset(record)
        if record.video_id is not None or offset != current:
            raise TusProblem(409, f"Upload-Offset is {offset} but the upload is at {current}",
                             headers={"Upload-Offset": str(current)})
        checksum = self._checksum(request)
        room = record.length - offset
        received = 0
        digest = checksum[0]() if checksum else None

        async def body() -> AsyncIterator[bytes]:
            nonlocal received
            while chunk := await request.content.read(CHUNK):
                received += len(chunk)
                if received > room:
                    raise TusProblem(413, f"the body goes past Upload-Length ({record.length})")
                if digest is not None:
                    digest.update(chunk)
                yield chunk

        try:
            new_offset = await self.staging.append(record.id, offset, body())
        except OffsetMismatch as exc:
            raise TusProblem(409, f"the upload is at {exc.expected}",
                             headers={"Upload-Offset": str(exc.expected)}) from None
        except (TusProblem, ConnectionError, asyncio.CancelledError) as exc:
            # Unverifiable or oversized bytes are dropped; an honest cut keeps what arrived.
            if checksum is not None or isinstance(exc, TusProblem):
                with suppress(OSError):
                    await asyncio.shield(self.staging.truncate(record.id, offset))
            if isinstance(exc, ConnectionError):
                raise TusProblem(400, "the upload was interrupted; resume it") from None
            raise
        if digest is not None and checksum is not None and digest.digest() != checksum[1]:
            await self.staging.truncate(record.id, offset)
            raise TusProblem(460, "Upload-Checksum does not match the bytes received",
                             title="Checksum Mismatch")
        await self.db.execute("UPDATE uploads SET expires_at = ? WHERE id = ?",
                              (self._extended(record), record.id))
        if new_offset < record.length:
            return new_offset, None
        video_id = await self.hooks.complete(record, self.staging)
        await self.db.execute("UPDATE uploads SET video_id = ? WHERE id = ?",
                              (video_id, record.id))
        await self.staging.delete(record.id)
        log.info("upload complete", extra=fields(upload=record.id, video=video_id))
        return new_offset, video_id

    def _checksum(self, request: web.Request) -> tuple[Callable[[], Any], bytes] | None:
        header = request.headers.get("Upload-Checksum")
        if header is None:
            return None
        name, _, value = header.strip().partition(" ")
        if name not in CHECKSUMS:
            raise TusProblem(400, f"unsupported checksum algorithm {name[:20]!r}; use one of "
                                  f"{', '.join(CHECKSUMS)}")
        try:
            expected = base64.b64decode(value.strip(), validate=True)
        except binascii.Error:
            raise TusProblem(400, "Upload-Checksum value is not base64") from None
        return CHECKSUMS[name], expected

    # -- expiry ----------------------------------------------------------------------------------

    async def sweep(self) -> int:
        """Delete expired uploads (the unfinished ones' bytes too); returns how many."""
        rows = await self.db.fetchall("SELECT id, video_id FROM uploads WHERE expires_at <= ?",
                                      (self.clock(),))
        for row in rows:
            if self._locks.get(row["id"]):
                continue  # being written right now
            await self.staging.delete(row["id"])
            await self.db.execute("DELETE FROM uploads WHERE id = ?", (row["id"],))
        if rows:
            log.info("expired uploads removed", extra=fields(count=len(rows)))
        return len(rows)


