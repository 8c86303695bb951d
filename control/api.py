"""The control API's routes and their OpenAPI 3.1 operations, registered together.

`Api.route` adds a handler to the router and its operation to the document in one call, so the
document served at /api/v1/openapi.json lists exactly the routes served. A JSON request body is a
pydantic model (`control.models`), validated strictly before the handler runs and handed to it as
`body`: the schema in the document is the model's, so what it calls valid is what is accepted.
Path, query and header parameters are `Param`s: their schema and the code reading them sit
side by side (`control.requests`).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from control.models import Problem
from control.problems import ProblemError
from control.requests import Param, read_body

Security = Literal["none", "user", "optional", "worker"]
Handler = Callable[..., Awaitable[web.StreamResponse]]
Guard = Callable[[web.Request], Awaitable[object]]
Response = type[BaseModel] | str | dict[str, Any]  # a JSON model, a description, or as written
_REF = "#/components/schemas/{model}"
PROBLEM: dict[str, Any] = {"$ref": "#/components/responses/Problem"}
_THROTTLED = {
    "description": "Too many requests (per address, per user; sign-up and sign-in are stricter)",
    "headers": {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}},
    "content": {"application/problem+json": {"schema": {"$ref": _REF.format(model="Problem")}}},
}
_SCHEMES = {
    "user": {"type": "http", "scheme": "bearer", "description": "A token from POST /api/v1/sessions"},
    "worker": {"type": "http", "scheme": "bearer",
               "description": "The shared worker token given to `reel control`"},
}


class Api:
    """The router and the document it is described by."""

    def __init__(self, router: web.UrlDispatcher, info: Mapping[str, Any]) -> None:
        self.router = router
        self.info = dict(info)
        self._paths: dict[str, dict[str, Any]] = {}
        self._models: dict[type[BaseModel], Literal["validation", "serialization"]] = {
            Problem: "serialization"}
        self._security: dict[tuple[str, str], Security] = {}
        self._guards: dict[Security, Guard] = {}

    def guard(self, security: Security, check: Guard) -> None:
        """How to authenticate requests to routes of `security`: `check` raises a 401 problem."""
        self._guards[security] = check

    async def authenticate(self, request: web.Request) -> None:
        """Refuse (401) a request without the credentials its route requires."""
        resource = request.match_info.route.resource
        method = "GET" if request.method == "HEAD" else request.method
        check = self._guards.get(self._security.get(
            (method, resource.canonical if resource is not None else ""), "none"))
        if check is not None:
            await check(request)

    def route(self, method: str, path: str, handler: Handler | None, *, summary: str, tag: str,
              responses: Mapping[int, Response], auth: Security = "none",
              body: type[BaseModel] | None = None, body_required: bool = True,
              content: Mapping[str, Any] | None = None, params: Iterable[Param] = (),
              throttled: bool = True, description: str = "", **route_options: Any) -> None:
        """Serve `handler` at `method path` and describe it (a GET answers HEAD too, unless
        `allow_head=False`; no handler: a route served by other code, such as /metrics). With
        `body`, the handler is called as `handler(request, body)` with the validated model;
        `content` describes a body the handler reads itself (multipart, tus bytes)."""
        params = tuple(params)
        if handler is not None:
            self._serve(method, path, handler, body, params, route_options)
        self._security[(method, path)] = auth
        op: dict[str, Any] = {"summary": summary, "tags": [tag],
                              "responses": {str(s): self._response(r) for s, r in responses.items()}}
        if description:
            op["description"] = description
        if params:
            op["parameters"] = [p.spec() for p in params]
        if body is not None:
            self._models.setdefault(body, "validation")
            content = {"application/json": {"schema": {"$ref": _REF.format(model=body.__name__)}}}
        if content is not None:
            op["requestBody"] = {"required": body_required, "content": dict(content)}
        if auth != "none":
            op["security"] = [{}, {"userToken": []}] if auth == "optional" else [{f"{auth}Token": []}]
        refusals = {"401": auth in ("user", "worker"), "400": body is not None,
                    "413": body is not None, "404": any(p.where == "path" for p in params)}
        for status in (s for s, applies in refusals.items() if applies):
            op["responses"].setdefault(status, PROBLEM)
        if throttled:
            op["responses"].setdefault("429", _THROTTLED)
        self._paths.setdefault(path, {})[method.lower()] = op

    def _serve(self, method: str, path: str, handler: Handler, body: type[BaseModel] | None,
               params: tuple[Param, ...], options: Mapping[str, Any]) -> None:
        endpoint = handler if body is None else _with_body(handler, body)
        if ids := {p.name: re.compile(p.schema["pattern"].removeprefix("^").removesuffix("$"))
                   for p in params if p.where == "path" and "pattern" in p.schema}:
            endpoint = _with_ids(endpoint, ids)
        if method == "GET":
            self.router.add_get(path, endpoint, **options)
        else:
            self.router.add_route(method, path, endpoint, **options)

    def annotate(self, method: str, path: str, status: int, response: Mapping[str, Any]) -> None:
        """Add (or extend) what an operation registered before says of `status`: what a
        middleware adds to routes it knows (control.caching's 304s and cache headers)."""
        op = self._paths.get(path, {}).get(method.lower())
        if op is not None:
            described = op["responses"].setdefault(str(status), {})
            for key, value in response.items():
                if isinstance(value, dict) and isinstance(described.get(key), dict):
                    described[key] = {**described[key], **value}
                else:
                    described[key] = value

    def describe(self, model: type[BaseModel]) -> None:
        """Put `model` among the document's schemas (for a body a handler reads itself)."""
        self._models.setdefault(model, "validation")

    def _response(self, response: Response) -> dict[str, Any]:
        if isinstance(response, str):
            return {"description": response}
        if isinstance(response, dict):
            return response
        self._models.setdefault(response, "serialization")
        return {"description": response.__doc__.splitlines()[0] if response.__doc__ else "OK",
                "content": {"application/json": {
                    "schema": {"$ref": _REF.format(model=response.__name__)}}}}

    def document(self) -> dict[str, Any]:
        """The OpenAPI 3.1 document of every route registered so far."""
        _, defs = models_json_schema(list(self._models.items()), ref_template=_REF)
        return {
            "openapi": "3.1.0",
            "info": self.info,
            "paths": self._paths,
            "components": {
                "securitySchemes": {f"{name}Token": s for name, s in _SCHEMES.items()},
                "responses": {"Problem": {"description": "RFC 7807 problem", "content": {
                    "application/problem+json": {"schema": {"$ref": _REF.format(model="Problem")}}}}},
                "schemas": defs.get("$defs", {}),
            },
        }


def _with_ids(handler: Handler, ids: Mapping[str, re.Pattern[str]]) -> Handler:
    """`handler`, for paths whose ids have their documented shape; anything else is a 404."""
    async def endpoint(request: web.Request) -> web.StreamResponse:
        if any(p.fullmatch(request.match_info[name]) is None for name, p in ids.items()):
            raise ProblemError(404, f"nothing at {request.path}")
        return await handler(request)

    return endpoint


def _with_body(handler: Handler, model: type[BaseModel]) -> Handler:
    async def endpoint(request: web.Request) -> web.StreamResponse:
        return await handler(request, await read_body(request, model))

    return endpoint
