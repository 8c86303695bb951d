"""RFC 7807 problem details: helpers, and the middleware that makes every error one.

Handlers raise `ProblemError(status, detail)`. The middleware answers it as
`application/problem+json`, turns aiohttp's own HTTP errors (unknown route, wrong method, body too
large) into the same shape, and answers any other exception with a 500 problem that says nothing
of the code: the traceback goes to the log only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from control.db import UnstorableValue
from reel.logs import fields

log = logging.getLogger("reel.control")

PROBLEM_JSON = "application/problem+json"


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_response(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    type: str = "about:blank",
    headers: Mapping[str, str] | None = None,
    **extensions: Any,
) -> web.Response:
    """An `application/problem+json` response: {type, title, status, detail, ...extensions}."""
    body = {"type": type, "title": title or _title(status), "status": status, "detail": detail}
    body.update(extensions)
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        headers={**(headers or {}), hdrs.CONTENT_TYPE: PROBLEM_JSON},
    )


class ProblemError(Exception):
    """Raise from a handler to answer with a problem; see `problem_response` for the fields."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        type: str = "about:blank",
        headers: Mapping[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail
        self.title = title
        self.type = type
        self.headers = dict(headers or {})
        self.extensions = extensions

    def response(self) -> web.Response:
        return problem_response(self.status, self.detail, title=self.title, type=self.type,
                                headers=self.headers, **self.extensions)


def _from_http_exception(request: web.Request, exc: web.HTTPException) -> web.Response:
    headers = {
        name: value
        for name, value in exc.headers.items()
        if name.lower() not in ("content-type", "content-length")
    }
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        detail = f"{request.method} is not allowed on {request.path}; allowed: {allowed}"
    elif exc.status == 404:
        detail = f"nothing at {request.path}"
    elif exc.text and exc.text != f"{exc.status}: {exc.reason}":
        detail = exc.text
    else:
        detail = exc.reason or _title(exc.status)
    return problem_response(exc.status, detail, headers=headers)


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ProblemError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _from_http_exception(request, exc)
    except UnstorableValue as exc:
        return problem_response(400, f"{exc}: such values are never stored")
    except Exception:
        log.exception("unhandled error", extra=fields(method=request.method, path=request.path))
        return problem_response(500, "the server hit an unexpected error; it has been logged")
