"""The OpenAPI 3.1 description of the control API, served at GET /api/v1/openapi.json."""

from __future__ import annotations

import copy
from typing import Any

_PROBLEM = {"$ref": "#/components/responses/Problem"}
PREVIEW_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_-]{0,31}/index\\.m3u8$"
_THROTTLED = {
    "description": "Too many requests (per address, per user; sign-up and sign-in are stricter)",
    "headers": {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}},
    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
}
_WORKER = [{"workerToken": []}]


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _job_op(summary: str, body: str | None, ok: dict[str, Any], *, extra: dict | None = None
            ) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "tags": ["worker"],
        "security": _WORKER,
        "parameters": [{"$ref": "#/components/parameters/JobHandle"}],
        "responses": {"200": ok, "400": _PROBLEM, "401": _PROBLEM, "404": _PROBLEM,
                      "409": _PROBLEM, **(extra or {})},
    }
    if body:
        op["requestBody"] = {"required": True,
                             "content": {"application/json": {"schema": _ref(body)}}}
    return op


_USER = [{"userToken": []}]
_PAGE_PARAMS = [{"$ref": "#/components/parameters/Limit"}, {"$ref": "#/components/parameters/Cursor"}]


def _page_of(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": ["items", "next_cursor"], "properties": {
        "items": {"type": "array", "items": schema},
        "next_cursor": {"type": ["string", "null"]}}}


def _op(summary: str, tag: str, responses: dict[str, Any], *, auth: str = "none",
        body: dict[str, Any] | None = None, params: list | None = None) -> dict[str, Any]:
    """An operation: `auth` is "user" (required), "optional" or "none"."""
    op: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": dict(responses)}
    if auth == "user":
        op["security"] = _USER
        op["responses"].setdefault("401", _PROBLEM)
    elif auth == "optional":
        op["security"] = [{}, *_USER]
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        op["responses"].setdefault("400", _PROBLEM)
        op["responses"].setdefault("413", _PROBLEM)
    if params:
        op["parameters"] = params
    return op


_VID = [{"$ref": "#/components/parameters/VideoId"}]
_UID = [{"$ref": "#/components/parameters/UserId"}]
_CID = [{"name": "comment_id", "in": "path", "required": True, "schema": {"type": "string"}}]
_UPLOAD = [{"name": "upload_id", "in": "path", "required": True, "schema": {"type": "string"}}]
_TUS = {"name": "Tus-Resumable", "in": "header", "required": True,
        "schema": {"const": "1.0.0"}}
_EMPTY = {"description": "Done"}

_MORE_PATHS: dict[str, Any] = {
    "/api/v1/users": {"post": _op(
        "Sign up", "accounts", {"201": _json({"type": "object", "properties": {
            "user": _ref("Me")}}, "Created"), "409": _PROBLEM},
        body={"type": "object", "required": ["email", "password"], "properties": {
            "email": {"type": "string", "format": "email", "maxLength": 254},
            "password": {"type": "string", "minLength": 8, "maxLength": 1024},
            "name": {"type": "string", "maxLength": 100}}})},
    "/api/v1/sessions": {"post": _op(
        "Sign in: a bearer token with an expiry", "accounts",
        {"201": _json(_ref("Session"), "Signed in"), "401": _PROBLEM},
        body={"type": "object", "required": ["email", "password"], "properties": {
            "email": {"type": "string"}, "password": {"type": "string"}}})},
    "/api/v1/sessions/current": {"delete": _op("Sign out (revoke this token)", "accounts",
                                               {"204": _EMPTY}, auth="user")},
    "/api/v1/me": {
        "get": _op("Your profile", "accounts", {"200": _json(_ref("Me"), "You")}, auth="user"),
        "patch": _op("Edit your profile (a new password needs current_password)", "accounts",
                     {"200": _json(_ref("Me"), "Edited"), "403": _PROBLEM}, auth="user",
                     body={"type": "object", "properties": {
                         "name": {"type": "string", "minLength": 1, "maxLength": 100},
                         "bio": {"type": "string", "maxLength": 2000},
                         "password": {"type": "string", "minLength": 8},
                         "current_password": {"type": "string"}}}),
    },
    "/api/v1/me/feed": {"get": _op(
        "Ready public videos of the creators you follow, newest first", "viewers",
        {"200": _json(_page_of(_ref("Video")), "A page"), "400": _PROBLEM}, auth="user",
        params=_PAGE_PARAMS)},
    "/api/v1/users/{user_id}": {"get": _op(
        "A user's public profile", "accounts", {"200": _json(_ref("Profile"), "Profile"),
                                                "404": _PROBLEM}, params=_UID)},
    "/api/v1/users/{user_id}/videos": {"get": _op(
        "A creator's videos, newest first (their own private ones only to them)", "videos",
        {"200": _json(_page_of(_ref("Video")), "A page"), "400": _PROBLEM, "404": _PROBLEM},
        auth="optional", params=_UID + _PAGE_PARAMS)},
    "/api/v1/users/{user_id}/follow": {
        "put": _op("Follow", "viewers", {"204": _EMPTY, "400": _PROBLEM, "404": _PROBLEM},
                   auth="user", params=_UID),
        "delete": _op("Unfollow", "viewers", {"204": _EMPTY}, auth="user", params=_UID),
    },
    "/api/v1/videos/{video_id}/copies": {"post": _op(
        "Admins only: new ready videos sharing a ready video's renditions, each with its own "
        "metadata (the store copies the objects; how load tests seed large catalogs)", "videos",
        {"201": _json({"type": "object", "required": ["items"], "properties": {
            "items": {"type": "array", "items": _ref("Video")}}}, "Copied"),
         "403": _PROBLEM, "404": _PROBLEM, "409": _PROBLEM},
        auth="user", params=_VID, body={"type": "object", "required": ["copies"], "properties": {
            "copies": {"type": "array", "minItems": 1, "maxItems": 100,
                       "items": _ref("VideoFields")}}})},
    "/api/v1/videos/{video_id}/review": {
        "put": _op("Write or edit your review (one per user)", "viewers",
                   {"200": _json(_ref("Review"), "Saved"), "404": _PROBLEM}, auth="user",
                   params=_VID, body={"type": "object", "required": ["rating"], "properties": {
                       "rating": {"type": "integer", "minimum": 1, "maximum": 5},
                       "text": {"type": "string", "maxLength": 5000}}}),
        "delete": _op("Delete your review", "viewers", {"204": _EMPTY, "404": _PROBLEM},
                      auth="user", params=_VID),
    },
    "/api/v1/videos/{video_id}/reviews": {"get": _op(
        "Reviews, newest first, with their count and average", "viewers",
        {"200": _json(_page_of(_ref("Review")), "A page"), "400": _PROBLEM, "404": _PROBLEM},
        auth="optional", params=_VID + _PAGE_PARAMS)},
    "/api/v1/videos/{video_id}/rating": {
        "get": _op("Like and dislike counts, and yours", "viewers",
                   {"200": _json(_ref("Rating"), "Counts"), "404": _PROBLEM}, auth="optional",
                   params=_VID),
        "put": _op("Like, dislike or none", "viewers",
                   {"200": _json(_ref("Rating"), "Counts"), "404": _PROBLEM}, auth="user",
                   params=_VID, body={"type": "object", "required": ["rating"], "properties": {
                       "rating": {"enum": ["like", "dislike", "none"]}}}),
    },
    "/api/v1/videos/{video_id}/comments": {
        "get": _op("Top-level comments, newest first", "viewers",
                   {"200": _json(_page_of(_ref("Comment")), "A page"), "400": _PROBLEM,
                    "404": _PROBLEM}, auth="optional", params=_VID + _PAGE_PARAMS),
        "post": _op("Comment, or reply to a top-level comment", "viewers",
                    {"201": _json(_ref("Comment"), "Created"), "404": _PROBLEM}, auth="user",
                    params=_VID, body={"type": "object", "required": ["text"], "properties": {
                        "text": {"type": "string", "minLength": 1, "maxLength": 2000},
                        "parent_id": {"type": "string"}}}),
    },
    "/api/v1/comments/{comment_id}/replies": {"get": _op(
        "Replies to a comment, newest first", "viewers",
        {"200": _json(_page_of(_ref("Comment")), "A page"), "400": _PROBLEM, "404": _PROBLEM},
        auth="optional", params=_CID + _PAGE_PARAMS)},
    "/api/v1/comments/{comment_id}": {"delete": _op(
        "Delete a comment (its author, the video's owner or an admin)", "viewers",
        {"204": _EMPTY, "403": _PROBLEM, "404": _PROBLEM}, auth="user", params=_CID)},
    "/api/v1/videos/{video_id}/views": {"post": _op(
        "Count a view (once per viewer per window)", "viewers",
        {"200": _json({"type": "object", "required": ["views", "counted"], "properties": {
            "views": {"type": "integer"}, "counted": {"type": "boolean"}}}, "Counted"),
         "404": _PROBLEM}, auth="optional", params=_VID)},
    "/api/v1/trending": {"get": _op(
        "Public ready videos by recent views", "viewers",
        {"200": _json(_page_of(_ref("Video")), "A page"), "400": _PROBLEM},
        params=_PAGE_PARAMS)},
    "/api/v1/search": {"get": _op(
        "Full-text search over public ready videos (bm25; the last word matches as a prefix)",
        "search", {"200": _json(_page_of(_ref("Video")), "A page"), "400": _PROBLEM},
        params=[{"name": "q", "in": "query", "required": True,
                 "schema": {"type": "string", "minLength": 1, "maxLength": 200}},
                {"name": "creator", "in": "query", "schema": {"type": "string"}},
                {"name": "min_duration", "in": "query", "schema": {"type": "number"}},
                {"name": "max_duration", "in": "query", "schema": {"type": "number"}},
                {"name": "uploaded_after", "in": "query",
                 "schema": {"type": "string", "format": "date-time"}},
                {"name": "uploaded_before", "in": "query",
                 "schema": {"type": "string", "format": "date-time"}}, *_PAGE_PARAMS])},
    "/api/v1/uploads": {
        "options": {"summary": "tus discovery", "tags": ["uploads"],
                    "responses": {"204": {"description": "Tus-Version, Tus-Extension, "
                                                         "Tus-Max-Size, Tus-Checksum-Algorithm"}}},
        "post": {**_op("tus creation (and creation-with-upload)", "uploads",
                       {"201": {"description": "Location: the upload URL"}, "400": _PROBLEM,
                        "412": _PROBLEM, "413": _PROBLEM}, auth="user",
                       params=[_TUS, {"name": "Upload-Length", "in": "header", "required": True,
                                      "schema": {"type": "string", "pattern": "^[0-9]+$"}},
                               {"name": "Upload-Metadata", "in": "header",
                                "schema": {"type": "string"}}])},
    },
    "/api/v1/uploads/{upload_id}": {
        "head": _op("tus: the upload's offset", "uploads",
                    {"200": {"description": "Upload-Offset, Upload-Length"},
                     "404": {"description": "No such upload"},
                     "410": {"description": "Expired"},
                     "412": {"description": "Tus-Resumable missing or not 1.0.0"}},
                    auth="user", params=_UPLOAD + [_TUS]),
        "get": _op("The upload as JSON, with its video once complete", "uploads",
                   {"200": _json({"type": "object"}, "The upload"), "404": _PROBLEM,
                    "410": _PROBLEM}, auth="user", params=_UPLOAD),
        "patch": {**_op("tus: append bytes at Upload-Offset", "uploads",
                        {"204": {"description": "Upload-Offset; Reel-Video-Id when complete"},
                         "400": _PROBLEM, "404": _PROBLEM, "409": _PROBLEM, "410": _PROBLEM,
                         "412": _PROBLEM, "413": _PROBLEM, "415": _PROBLEM, "423": _PROBLEM,
                         "460": _PROBLEM}, auth="user", params=_UPLOAD + [_TUS]),
                  "requestBody": {"required": True, "content": {
                      "application/offset+octet-stream": {"schema": {"type": "string"}}}}},
        "delete": _op("tus termination", "uploads", {"204": _EMPTY, "404": _PROBLEM,
                                                     "412": _PROBLEM}, auth="user",
                      params=_UPLOAD + [_TUS]),
    },
}

_DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "reel control API",
        "version": "1",
        "description": (
            "Accounts, uploads (multipart and tus 1.0), videos, viewers' reviews, ratings, "
            "comments, follows and views, search, and the packaging job queue of reel. Errors "
            "are RFC 7807 application/problem+json. Users send `Authorization: Bearer <token>` "
            "from POST /api/v1/sessions; workers send the shared worker token. Lists are "
            "cursor-paginated: pass `next_cursor` back as `cursor`."
        ),
    },
    "paths": {
        "/api/v1/videos": {
            "post": {
                "summary": "Upload a video",
                "description": (
                    "multipart/form-data with a `file` part (the media, streamed to the store) "
                    "and an optional `title` part, in any order. Creates a queued video and a "
                    "packaging job. Supports `Expect: 100-continue`."
                ),
                "tags": ["videos"],
                "security": _USER,
                "requestBody": {
                    "required": True,
                    "content": {"multipart/form-data": {"schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "title": {"type": "string", "maxLength": 200},
                            "file": {"type": "string", "contentMediaType":
                                     "application/octet-stream"},
                        },
                    }}},
                },
                "responses": {
                    "202": {
                        "description": "Accepted: the video is queued for packaging",
                        "headers": {"Location": {"schema": {"type": "string"},
                                                 "description": "/api/v1/videos/{id}"}},
                        "content": {"application/json": {"schema": _ref("UploadAccepted")}},
                    },
                    "200": {"description": "You already uploaded this content: that video",
                            "content": {"application/json": {"schema": _ref("UploadAccepted")}}},
                    "400": _PROBLEM, "401": _PROBLEM, "413": _PROBLEM, "415": _PROBLEM,
                },
            },
        },
        "/api/v1/videos/{video_id}": {
            "get": _op("A video and its processing state", "videos",
                       {"200": _json(_ref("Video"), "The video"), "404": _PROBLEM},
                       auth="optional", params=_VID),
            "patch": _op("Edit a video's metadata (its owner or an admin)", "videos",
                         {"200": _json(_ref("Video"), "Edited"), "403": _PROBLEM,
                          "404": _PROBLEM}, auth="user", params=_VID,
                         body=_ref("VideoFields")),
            "delete": _op("Delete a video: its objects go and the edges are purged", "videos",
                          {"204": _EMPTY, "403": _PROBLEM, "404": _PROBLEM}, auth="user",
                          params=_VID),
        },
        "/api/v1/jobs/claim": {
            "post": {
                "summary": "Claim the next packaging job under a lease",
                "tags": ["worker"],
                "security": _WORKER,
                "requestBody": {"content": {"application/json": {"schema": _ref("ClaimRequest")}}},
                "responses": {
                    "200": _json({"type": "object", "required": ["job"],
                                  "properties": {"job": _ref("ClaimedJob")}}, "A job is yours"),
                    "204": {"description": "Nothing to do now"},
                    "400": _PROBLEM, "401": _PROBLEM,
                },
            },
        },
        "/api/v1/jobs/{job_id}/heartbeat": {
            "post": _job_op(
                "Renew the lease and report progress", "Heartbeat",
                _json({"type": "object", "properties": {"lease_seconds": {"type": "number"}}},
                      "Lease renewed"),
            ),
        },
        "/api/v1/jobs/{job_id}/complete": {
            "post": _job_op(
                "Report the job done: the video becomes ready", "Completion",
                _json({"type": "object"}, "Recorded"),
            ),
        },
        "/api/v1/jobs/{job_id}/fail": {
            "post": _job_op(
                "Report a failed attempt: retried after a backoff unless permanent or out of "
                "attempts, then the video fails with `reason: detail`", "Failure",
                _json({"type": "object", "properties": {"job": {"type": "object", "properties": {
                    "id": {"type": "string"},
                    "state": {"enum": ["queued", "failed"]},
                    "attempts": {"type": "integer"},
                    "retry": {"type": "boolean"},
                    "retry_in_seconds": {"type": "number"},
                }}}}, "Recorded"),
            ),
        },
        "/api/v1/openapi.json": {
            "get": {"summary": "This document", "tags": ["meta"],
                    "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")}},
        },
        "/watch/{video_id}": {
            "get": {
                "summary": "The watch page (HTML, plays through geo with hls.js)",
                "tags": ["pages"],
                "parameters": [{"$ref": "#/components/parameters/VideoId"}],
                "responses": {
                    "200": {"description": "HTML page", "content": {"text/html": {}}},
                    "404": {"description": "HTML page: no such video",
                            "content": {"text/html": {}}},
                },
            },
        },
        "/static/hls.min.js": {
            "get": {
                "summary": "hls.js, from the npm install",
                "tags": ["pages"],
                "responses": {
                    "200": {"description": "JavaScript", "content": {"text/javascript": {}}},
                    "404": _PROBLEM,
                },
            },
        },
        "/healthz": {
            "get": {
                "summary": "200 when the database answers",
                "tags": ["meta"],
                "responses": {"200": _json({"type": "object", "properties": {
                    "status": {"const": "ok"}}}, "Healthy"), "503": _PROBLEM},
            },
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "tags": ["meta"],
                "responses": {"200": {"description": "Prometheus text format",
                                      "content": {"text/plain": {}}}},
            },
        },
    },
    "components": {
        "securitySchemes": {
            "userToken": {"type": "http", "scheme": "bearer",
                          "description": "A token from POST /api/v1/sessions"},
            "workerToken": {"type": "http", "scheme": "bearer",
                            "description": "The shared worker token given to `reel control`"},
        },
        "parameters": {
            "UserId": {"name": "user_id", "in": "path", "required": True,
                       "schema": {"type": "string", "maxLength": 64}},
            "Limit": {"name": "limit", "in": "query",
                      "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
            "Cursor": {"name": "cursor", "in": "query", "schema": {"type": "string"},
                       "description": "next_cursor of the previous page"},
            "VideoId": {"name": "video_id", "in": "path", "required": True,
                        "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{6,64}$"}},
            "JobHandle": {
                "name": "job_id", "in": "path", "required": True,
                "description": (
                    "The `id` a claim returned: `{job}.{attempt}`, refused with 409 once the job "
                    "was claimed again or ended. A bare job id means whoever holds it now."
                ),
                "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}(\\.[0-9]+)?$"},
            },
        },
        "responses": {
            "Problem": {"description": "RFC 7807 problem",
                        "content": {"application/problem+json": {"schema": _ref("Problem")}}},
        },
        "schemas": {
            "Problem": {
                "type": "object",
                "required": ["type", "title", "status", "detail"],
                "properties": {
                    "type": {"type": "string"},
                    "title": {"type": "string"},
                    "status": {"type": "integer"},
                    "detail": {"type": "string"},
                },
            },
            "Video": {
                "type": "object",
                "required": ["id", "title", "state", "reason", "progress", "duration",
                             "created_at", "playback_url", "watch_url", "poster_url"],
                "properties": {
                    "id": {"type": "string"},
                    "title": {"type": "string"},
                    "state": {"enum": ["queued", "processing", "ready", "failed"]},
                    "reason": {"type": ["string", "null"],
                               "description": "`reason: detail` when failed"},
                    "progress": {"oneOf": [{"type": "null"}, {
                        "type": "object", "required": ["done", "total"],
                        "properties": {"done": {"type": "integer"},
                                       "total": {"type": "integer"}}}]},
                    "duration": {"type": ["number", "null"]},
                    "created_at": {"type": "string", "format": "date-time"},
                    "playback_url": {"type": ["string", "null"], "format": "uri",
                                     "description": "{geo}/steer/vod/{id}/master.m3u8 once ready: "
                                                    "the master steered between edges (HLS "
                                                    "Content Steering)"},
                    "preview_url": {"type": ["string", "null"], "format": "uri",
                                    "description": "while processing, when the worker has one: "
                                                   "{geo}/vod/{id}/{rendition}/index.m3u8, a "
                                                   "playlist playable before the video is ready"},
                    "watch_url": {"type": "string", "format": "uri"},
                    "poster_url": {"type": ["string", "null"], "format": "uri"},
                    "owner_id": {"type": ["string", "null"]},
                    "description": {"type": "string"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "language": {"type": ["string", "null"]},
                    "category": {"type": ["string", "null"]},
                    "privacy": {"enum": ["public", "unlisted", "private"]},
                    "views": {"type": "integer"},
                    "likes": {"type": "integer"},
                    "dislikes": {"type": "integer"},
                },
            },
            "VideoFields": {
                "type": "object",
                "properties": {
                    "title": {"type": "string", "minLength": 1, "maxLength": 200},
                    "description": {"type": "string", "maxLength": 5000},
                    "tags": {"type": "array", "maxItems": 20,
                             "items": {"type": "string", "maxLength": 40}},
                    "language": {"type": ["string", "null"]},
                    "category": {"type": ["string", "null"]},
                    "privacy": {"enum": ["public", "unlisted", "private"]},
                },
            },
            "Profile": {
                "type": "object", "required": ["id", "name", "bio", "created_at"],
                "properties": {"id": {"type": "string"}, "name": {"type": "string"},
                               "bio": {"type": "string"}, "created_at": {"type": "string"},
                               "followers": {"type": "integer"},
                               "following": {"type": "integer"}},
            },
            "Me": {
                "type": "object", "required": ["id", "name", "email", "is_admin"],
                "properties": {"id": {"type": "string"}, "name": {"type": "string"},
                               "bio": {"type": "string"}, "email": {"type": "string"},
                               "is_admin": {"type": "boolean"},
                               "created_at": {"type": "string"}},
            },
            "Session": {
                "type": "object", "required": ["token", "token_type", "expires_at", "user"],
                "properties": {"token": {"type": "string"}, "token_type": {"const": "Bearer"},
                               "expires_at": {"type": "string", "format": "date-time"},
                               "user": _ref("Me")},
            },
            "Review": {
                "type": "object", "required": ["user", "rating", "text"],
                "properties": {"user": {"type": "object"}, "rating": {"type": "integer"},
                               "text": {"type": "string"}, "created_at": {"type": "string"},
                               "updated_at": {"type": "string"}},
            },
            "Rating": {
                "type": "object", "required": ["likes", "dislikes", "my_rating"],
                "properties": {"likes": {"type": "integer"}, "dislikes": {"type": "integer"},
                               "my_rating": {"enum": ["like", "dislike", "none", None]}},
            },
            "Comment": {
                "type": "object",
                "required": ["id", "video_id", "parent_id", "user", "text", "reply_count"],
                "properties": {"id": {"type": "string"}, "video_id": {"type": "string"},
                               "parent_id": {"type": ["string", "null"]},
                               "user": {"type": "object"}, "text": {"type": "string"},
                               "created_at": {"type": "string"},
                               "reply_count": {"type": "integer"}},
            },
            "UploadAccepted": {
                "type": "object",
                "required": ["video", "job"],
                "properties": {
                    "video": _ref("Video"),
                    "job": {"oneOf": [{"type": "null"}, {
                        "type": "object", "required": ["id"],
                        "properties": {"id": {"type": "string"}}}]},
                    "duplicate": {"type": "boolean"},
                },
            },
            "ClaimRequest": {"type": "object",
                             "properties": {"worker": {"type": "string", "maxLength": 128}}},
            "ClaimedJob": {
                "type": "object",
                "required": ["id", "video_id", "source_key", "output_prefix", "lease_seconds",
                             "attempt"],
                "properties": {
                    "id": {"type": "string", "description": "lease handle `{job}.{attempt}`"},
                    "video_id": {"type": "string"},
                    "source_key": {"type": "string", "examples": ["sources/abc123/source"]},
                    "output_prefix": {"type": "string", "examples": ["vod/abc123/"]},
                    "lease_seconds": {"type": "number"},
                    "attempt": {"type": "integer", "minimum": 1},
                },
            },
            "Heartbeat": {
                "type": "object",
                "properties": {
                    "progress": {
                        "type": "object", "required": ["done", "total"],
                        "properties": {"done": {"type": "integer", "minimum": 0},
                                       "total": {"type": "integer", "minimum": 0}}},
                    "preview": {
                        "type": "string", "pattern": PREVIEW_PATTERN,
                        "examples": ["v144/index.m3u8"],
                        "description": "A rendition playlist already playable (an EVENT playlist "
                                       "growing while the job runs), relative to the output "
                                       "prefix: the video's `preview_url` until it is ready"},
                },
            },
            "Completion": {
                "type": "object",
                "required": ["duration"],
                "properties": {
                    "duration": {"type": "number", "minimum": 0},
                    "renditions": {"type": "array", "items": {"type": "string"}},
                },
            },
            "Failure": {
                "type": "object",
                "required": ["reason"],
                "properties": {
                    "reason": {"type": "string", "maxLength": 64,
                               "examples": ["not_a_video"]},
                    "detail": {"type": "string"},
                    "permanent": {"type": "boolean", "default": False},
                },
            },
        },
    },
}


_DOCUMENT["paths"].update(_MORE_PATHS)
for _path, _item in _DOCUMENT["paths"].items():
    if not _path.startswith("/api/v1/jobs/"):  # workers are not throttled
        for _operation in _item.values():
            _operation["responses"].setdefault("429", _THROTTLED)


def document() -> dict[str, Any]:
    """A fresh copy of the OpenAPI document."""
    return copy.deepcopy(_DOCUMENT)
