"""The OpenAPI 3.1 description of the control API, served at GET /api/v1/openapi.json."""

from __future__ import annotations

import copy
from typing import Any

_PROBLEM = {"$ref": "#/components/responses/Problem"}
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


_DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "reel control API",
        "version": "1",
        "description": (
            "Uploads, videos and the packaging job queue of reel. Errors are RFC 7807 "
            "application/problem+json. Worker endpoints need `Authorization: Bearer <token>`."
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
                    "400": _PROBLEM, "413": _PROBLEM, "415": _PROBLEM,
                },
            },
        },
        "/api/v1/videos/{video_id}": {
            "get": {
                "summary": "A video and its processing state",
                "tags": ["videos"],
                "parameters": [{"$ref": "#/components/parameters/VideoId"}],
                "responses": {"200": _json(_ref("Video"), "The video"), "404": _PROBLEM},
            },
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
            "workerToken": {"type": "http", "scheme": "bearer",
                            "description": "The shared worker token given to `reel control`"},
        },
        "parameters": {
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
                                     "description": "{geo}/vod/{id}/master.m3u8 once ready"},
                    "watch_url": {"type": "string", "format": "uri"},
                    "poster_url": {"type": ["string", "null"], "format": "uri"},
                },
            },
            "UploadAccepted": {
                "type": "object",
                "required": ["video", "job"],
                "properties": {
                    "video": _ref("Video"),
                    "job": {"type": "object", "required": ["id"],
                            "properties": {"id": {"type": "string"}}},
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
                "properties": {"progress": {
                    "type": "object", "required": ["done", "total"],
                    "properties": {"done": {"type": "integer", "minimum": 0},
                                   "total": {"type": "integer", "minimum": 0}}}},
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


def document() -> dict[str, Any]:
    """A fresh copy of the OpenAPI document."""
    return copy.deepcopy(_DOCUMENT)
