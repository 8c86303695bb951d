"""Videos as creators see them: ingest (quota, dedupe), metadata, listing, delete with purge.

`Ingest` is where both upload paths (multipart and tus) turn bytes into a video; it is also the
tus `UploadHooks`. `VideoHandlers` are the /api/v1/videos/{id} and listing endpoints.
"""

from __future__ import annotations

import hashlib
import logging
import unicodedata
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from control.accounts import Accounts, Auth, User
from control.api import PROBLEM, Api
from control.caching import api_keys, api_paths
from control.jobs import Job, JobQueue
from control.models import MAX_TITLE_CHARS, Copied, Copies, VideoEdit, VideoFields, VideoPage
from control.models import Video as VideoJson
from control.privacy import Privacy
from control.problems import ProblemError
from control.purge import EdgePurger
from control.requests import (
    KEYSET,
    LIMIT,
    invalid,
    keyset,
    keyset_cursor,
    page,
    page_size,
    path_id,
    reads,
)
from control.staging import Staging
from control.tus import UploadRecord
from control.videos import (
    Upload,
    Video,
    Videos,
    new_video_id,
    output_prefix,
    source_key,
    source_prefix,
)
from origin.layout import is_video_id
from origin.store import ObjectInfo, Store
from reel.logs import fields

log = logging.getLogger("reel.control")
VIDEO_ID = path_id("video_id", "^[A-Za-z0-9_-]{6,64}$")



def _limit_text(limit: int) -> str:
    mib = 1024 * 1024
    return f"{limit // mib} MiB" if limit % mib == 0 else f"{limit} bytes"


def video_fields(metadata: Mapping[str, str]) -> dict[str, Any]:
    """The video fields among string `metadata` (a multipart form, tus Upload-Metadata: tags
    comma-separated), checked as the API checks them; 400 on anything wrong."""
    given: dict[str, Any] = {k: v for k, v in metadata.items() if k in VideoFields.model_fields}
    if "tags" in given:
        given["tags"] = given["tags"].split(",")
    try:
        return VideoFields.model_validate(given).changes()
    except ValidationError as exc:
        raise ProblemError(400, invalid(exc)) from None


def title_from(filename: str | None) -> str:
    if not filename:
        return "Untitled"
    stem = filename.replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0].strip()
    text = "".join(ch for ch in stem if unicodedata.category(ch) != "Cc")  # no control characters
    return text[:MAX_TITLE_CHARS].strip() or "Untitled"


class Ingest:
    """Admits uploads against size and quota, and turns stored bytes into videos."""

    def __init__(self, *, store: Store, videos: Videos, queue: JobQueue, max_upload_bytes: int,
                 quota_bytes: int, on_queued: Callable[[], Awaitable[None]], privacy: Privacy) -> None:
        self.privacy = privacy
        self.store = store
        self.videos = videos
        self.queue = queue
        self.max_upload_bytes = max_upload_bytes
        self.quota_bytes = quota_bytes
        self.on_queued = on_queued

    async def room(self, user: User) -> int:
        """Bytes `user` may still upload in one go."""
        quota = self.quota_bytes if user.quota_bytes is None else user.quota_bytes
        return min(self.max_upload_bytes, max(0, quota - await self.videos.bytes_used(user.id)))

    async def over_limit(self, user: User, size: int | None) -> str:
        """The 413 message for an upload of `size` bytes (None: unknown, it went over as it came)."""
        if size is not None and size > self.max_upload_bytes:
            return f"upload exceeds the {_limit_text(self.max_upload_bytes)} limit"
        quota = self.quota_bytes if user.quota_bytes is None else user.quota_bytes
        used = await self.videos.bytes_used(user.id)
        if used + (size or 0) > quota or size is None and quota - used < self.max_upload_bytes:
            return (f"upload exceeds your storage quota: {used} of {quota} bytes used, "
                    f"{max(0, quota - used)} left; delete videos to make room")
        return f"upload exceeds the {_limit_text(self.max_upload_bytes)} limit"

    # -- tus hooks -------------------------------------------------------------------------------

    async def admit(self, user: User, length: int, metadata: Mapping[str, str]) -> None:
        video_fields(metadata)
        if length > await self.room(user):
            raise ProblemError(413, await self.over_limit(user, length))

    async def complete(self, record: UploadRecord, staging: Staging) -> str:
        digest = hashlib.sha256()
        async for block in staging.read(record.id):
            digest.update(block)
        sha256 = digest.hexdigest()
        if dup := await self.videos.with_content(record.owner_id, sha256):  # skip the copy to the store
            return dup.id
        meta = dict(record.metadata)
        meta.setdefault("title", title_from(meta.get("filename")))

        async def write(key: str) -> tuple[ObjectInfo, str]:
            return await self.store.write(key, staging.read(record.id)), sha256

        video, _ = await self.publish(record.owner_id, meta, write)
        return video.id

    # -- both paths ------------------------------------------------------------------------------

    async def publish(self, owner_id: str, metadata: Mapping[str, Any],
                      write: Callable[[str], Awaitable[tuple[ObjectInfo, str]]],
                      ) -> tuple[Video, Job | None]:
        """Store the source with `write(key)` -> (info, sha256) and create the video.

        When the owner already has a video with that content, the new source is dropped and
        that video comes back with no job.
        """
        video_id = new_video_id()
        info, sha256 = await write(source_key(video_id))
        try:
            meta = video_fields(metadata)  # after `write`: a multipart form may end with fields
            meta.setdefault("title", "Untitled")
            if meta.get("privacy", "public") != "public":  # before any worker can publish a byte
                await self.privacy.apply(video_id, meta["privacy"], purge=False)
            video, job = await self.videos.create(
                Upload(video_id, owner_id, info.size, sha256, meta), self.queue)
        except BaseException:
            await self.store.delete_prefix(source_prefix(video_id))
            await self.privacy.forget(video_id)
            raise
        if job is None:
            await self.store.delete_prefix(source_prefix(video_id))
            await self.privacy.forget(video_id)
            log.info("duplicate upload", extra=fields(video=video.id, user=owner_id))
        else:
            await self.on_queued()
        return video, job


async def hashed(chunks: AsyncIterable[bytes], digest: Any) -> AsyncIterator[bytes]:
    """`chunks`, feeding `digest` on the way through."""
    async for chunk in chunks:
        digest.update(chunk)
        yield chunk


class VideoHandlers:
    """GET/PATCH/DELETE /api/v1/videos/{id}, and a creator's list."""

    def __init__(self, *, videos: Videos, accounts: Accounts, auth: Auth, store: Store,
                 purger: EdgePurger, privacy: Privacy,
                 render: Callable[[web.Request, Video], dict[str, Any]]) -> None:
        self.privacy = privacy
        self.videos = videos
        self.accounts = accounts
        self.auth = auth
        self.store = store
        self.purger = purger
        self.render = render

    def add_routes(self, api: Api) -> None:
        vid = [VIDEO_ID]
        api.route("GET", "/api/v1/videos/{video_id}", self.get, tag="videos", auth="optional",
                  summary="A video and its processing state", params=vid,
                  responses={200: VideoJson, 404: PROBLEM})
        api.route("PATCH", "/api/v1/videos/{video_id}", self.edit, tag="videos", auth="user",
                  summary="Edit a video's metadata (its owner or an admin)", params=vid,
                  body=VideoEdit, responses={200: VideoJson, 403: PROBLEM, 404: PROBLEM})
        api.route("DELETE", "/api/v1/videos/{video_id}", self.delete, tag="videos", auth="user",
                  summary="Delete a video: its objects go and the edges are purged", params=vid,
                  responses={204: "Deleted", 403: PROBLEM, 404: PROBLEM})
        api.route("GET", "/api/v1/users/{user_id}/videos", self.by_creator, tag="videos",
                  summary="A creator's videos, newest first (their own private ones only to them)",
                  auth="optional", params=[path_id("user_id"), LIMIT, KEYSET],
                  responses={200: VideoPage, 400: PROBLEM, 404: PROBLEM})
        api.route("POST", "/api/v1/videos/{video_id}/copies", self.copy, tag="videos",
                  summary="Admins only: new ready videos sharing a ready video's renditions, each "
                          "with its own metadata (how load tests seed large catalogs)",
                  auth="user", params=vid, body=Copies,
                  responses={201: Copied, 403: PROBLEM, 404: PROBLEM, 409: PROBLEM})

    async def visible(self, request: web.Request, video_id: str | None = None, *,
                      recent: bool = False) -> Video:
        """The video (default: the one in the path) if the caller may see it; 404 otherwise:
        a private video is as absent as a missing one. `recent`: as read up to a second ago
        (`Videos.recent`), for the view path."""
        video_id = video_id or request.match_info["video_id"]
        get = self.videos.recent if recent else self.videos.get
        video = await get(video_id, reads(request, self.videos.db)) if is_video_id(
            video_id) else None
        if video is not None and video.privacy == "private":
            user = await self.auth.user(request)
            if not video.visible_to(user and user.id, bool(user and user.is_admin)):
                video = None
        if video is None:
            raise ProblemError(404, f"no video {video_id!r}")
        return video

    async def owned(self, request: web.Request) -> tuple[Video, User]:
        user = await self.auth.require(request)
        video = await self.visible(request)
        if video.owner_id != user.id and not user.is_admin:
            raise ProblemError(403, "only the video's owner (or an admin) may change it")
        return video, user

    async def get(self, request: web.Request) -> web.Response:
        return web.json_response(self.render(request, await self.visible(request)))

    async def edit(self, request: web.Request, body: VideoEdit) -> web.Response:
        video, _ = await self.owned(request)
        updated = await self.videos.update(video.id, body.changes())
        if updated is None:
            raise ProblemError(404, f"no video {video.id!r}")
        if updated.privacy != video.privacy:  # origins and edges follow within seconds
            await self.privacy.apply(video.id, updated.privacy)
        # What the edges share of it (and the lists it is in) goes now, not in max-age.
        await self.purger.purge(api_paths(video.id, video.owner_id), api_keys(video.id))
        return web.json_response(self.render(request, updated))

    async def delete(self, request: web.Request) -> web.Response:
        video, user = await self.owned(request)
        await self.videos.delete(video.id)
        removed = 0
        published = [output_prefix(video.id)]
        if video.kind == "live":  # its DVR window too
            published.append(f"live/{video.id}/")
        for prefix in (source_prefix(video.id), *published):
            removed += await self.store.delete_prefix(prefix)
        await self.privacy.forget(video.id)
        edges = await self.purger.purge([*(f"/{prefix}" for prefix in published),
                                         *api_paths(video.id, video.owner_id)], api_keys(video.id))
        log.info("video deleted", extra=fields(video=video.id, user=user.id, objects=removed,
                                               edges_purged=edges))
        return web.Response(status=204)

    async def copy(self, request: web.Request, body: Copies) -> web.Response:
        """Admins only: new ready videos sharing a ready video's renditions, each with its own
        metadata. The store copies the objects (server-side; a directory store hard-links them),
        so a load test's catalog of thousands of videos costs one packaging job."""
        user = await self.auth.require(request)
        if not user.is_admin:
            raise ProblemError(403, "only an admin may copy videos")
        source = await self.visible(request)
        fields_list = [c.changes() for c in body.copies]
        if source.state != "ready":
            raise ProblemError(409, f"video {source.id!r} is {source.state}: only a ready video "
                                    "can be copied", title="Not ready")
        made = []
        for meta in fields_list:
            video_id = new_video_id()
            await self.store.copy_prefix(output_prefix(source.id), output_prefix(video_id))
            privacy = meta.get("privacy", source.privacy)
            try:
                if privacy != "public":
                    await self.privacy.apply(video_id, privacy, purge=False)
                made.append(await self.videos.insert_copy(source, video_id, meta))
            except BaseException:
                await self.store.delete_prefix(output_prefix(video_id))
                await self.privacy.forget(video_id)
                raise
        log.info("videos copied", extra=fields(video=source.id, copies=len(made), user=user.id))
        return web.json_response({"items": [self.render(request, v) for v in made]}, status=201)

    async def by_creator(self, request: web.Request) -> web.Response:
        owner_id = request.match_info["user_id"]
        if await self.accounts.get(owner_id) is None:
            raise ProblemError(404, "no such user")
        user = await self.auth.user(request)
        limit = page_size(request)
        rows = await self.videos.by_owner(
            owner_id, include_hidden=bool(user and (user.id == owner_id or user.is_admin)),
            limit=limit + 1, after=keyset(request))
        return web.json_response(page(rows, limit, lambda v: self.render(request, v),
                                      lambda v: keyset_cursor(v.created_at, v.id)))
