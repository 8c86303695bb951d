"""Structured (JSON lines) logging for every service."""

from __future__ import annotations

import json
import logging
import sys
import time

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, RequestKey, StreamResponse

from reel.playback_token import redact


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup(service: str, level: str = "INFO") -> None:
    """Send every log record to stderr as one JSON object per line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def fields(**kw: object) -> dict:
    """`log.info("msg", extra=fields(key=value))` attaches structured fields."""
    return {"fields": kw}


# A handler sets request[QUIET] = True for a request too frequent to log one by one (a view):
# a success then writes no access line, it is counted by the service's metrics instead; an error
# still writes one.
QUIET = RequestKey("reel_access_quiet", bool)


class AccessLogger(AbstractAccessLogger):
    """One JSON access-log line per response (but successes of QUIET requests)."""

    def log(self, request: BaseRequest, response: StreamResponse, time_taken: float) -> None:
        if response.status < 400 and request.get(QUIET):
            return
        self.logger.info(
            "access",
            extra=fields(
                method=request.method,
                path=redact(request.path),  # a playback token is a secret: never logged
                status=response.status,
                bytes=response.body_length,
                ms=round(time_taken * 1000, 2),
                remote=request.remote,
                x_cache=response.headers.get("X-Cache"),
                at=time.time(),
            ),
        )
