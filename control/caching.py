"""What the edges may share, and who the client is when an edge asks.

Shared: an anonymous GET (no `Authorization`, no cookie) of public data, answered 200, gets
`Cache-Control: public, max-age=N, stale-while-revalidate=M, stale-if-error=E`, `Vary:
Authorization` and a strong `ETag` (a hash of the body); `If-None-Match` naming it is a 304. Every
other API answer is `private, no-store`. Public data is what an anonymous visitor sees the same
whoever they are: a video, its comments, replies, reviews and rating counts, a profile, a
creator's public list, trending, search, the latest list. Freshness: `max_age` (2 s) plus at
most one stale answer while a refresh runs (`swr`); edits that must not wait (a video's title,
privacy, its deletion) also purge the edges at once (`api_paths`).

Client address: an edge proves itself with the shared secret it sends in `X-Reel-Edge`
(`reel control --edge-secret`, `reel edge --control-secret`); only then is the last address of
`X-Forwarded-For` (the one the edge itself appended) taken as the client's, so rate limits and
view counts stay per client. A secret rather than a list of proxy networks: under `reel up`
every process is on loopback, where an address cannot tell an edge from any local client.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from control.api import Api
from reel.http import EDGE_SECRET_HEADER, etag_matches

# Anonymous reads of public data (routes as registered): the same answer for every visitor.
SHARED_ROUTES = frozenset({
    "/api/v1/videos",
    "/api/v1/videos/{video_id}",
    "/api/v1/videos/{video_id}/comments",
    "/api/v1/videos/{video_id}/reviews",
    "/api/v1/videos/{video_id}/rating",
    "/api/v1/comments/{comment_id}/replies",
    "/api/v1/users/{user_id}",
    "/api/v1/users/{user_id}/videos",
    "/api/v1/trending",
    "/api/v1/search",
})
PRIVATE = "private, no-store"


def api_paths(video_id: str, owner_id: str | None = None) -> list[str]:
    """Edge purge prefixes for everything the API may have shared about a video: its own reads
    and the lists it may be in."""
    paths = [f"/api/v1/videos/{video_id}/", f"/api/v1/videos/{video_id}?", "/api/v1/videos?",
             "/api/v1/trending", "/api/v1/search"]
    if owner_id is not None:
        paths.append(f"/api/v1/users/{owner_id}/videos")
    return paths


def api_keys(video_id: str) -> list[str]:
    """Edge purge paths (exact) for a video's reads without a query."""
    return [f"/api/v1/videos/{video_id}", "/api/v1/videos"]


def describe(api: Api) -> None:
    """Say in the OpenAPI document what `Sharing.cache_headers` does to the shared routes."""
    headers = {
        "Cache-Control": {"description": "anonymous: public, max-age, stale-while-revalidate; "
                                         "signed in: private, no-store", "schema": {"type": "string"}},
        "ETag": {"description": "anonymous reads: a strong validator of the body",
                 "schema": {"type": "string"}},
    }
    for path in SHARED_ROUTES:
        api.annotate("GET", path, 200, {"headers": headers})
        api.annotate("GET", path, 304, {"description": "Not Modified: If-None-Match names the "
                                                       "current ETag (anonymous reads)"})


class Sharing:
    """The middleware pair: `forwarded` (outermost: every later part sees the client's address)
    and `cache_headers` (outside the problem middleware: problems get their headers too)."""

    def __init__(self, *, max_age: int = 2, swr: int = 3, stale_if_error: int = 60,
                 edge_secret: str = "") -> None:
        self.public = (f"public, max-age={max_age}, stale-while-revalidate={swr}, "
                       f"stale-if-error={stale_if_error}")
        self.secret = edge_secret.encode()

    def trusted(self, request: web.Request) -> bool:
        given = request.headers.get(EDGE_SECRET_HEADER)
        return bool(self.secret) and given is not None and hmac.compare_digest(given.encode(), self.secret)

    @web.middleware
    async def forwarded(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.trusted(request):
            client = _last_address(request.headers.get("X-Forwarded-For", ""))
            if client is not None:
                request = request.clone(remote=client)
        return await handler(request)

    @web.middleware
    async def cache_headers(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        if not request.path.startswith("/api/v1/") or response.prepared:
            return response
        if hdrs.CACHE_CONTROL in response.headers:
            return response  # the handler knows better
        if not self._shareable(request, response):
            response.headers[hdrs.CACHE_CONTROL] = PRIVATE
            return response
        assert isinstance(response, web.Response)
        etag = '"' + hashlib.blake2b(response.body, digest_size=12).hexdigest() + '"'  # type: ignore[arg-type]
        response.headers[hdrs.CACHE_CONTROL] = self.public
        response.headers[hdrs.VARY] = "Authorization"
        response.headers[hdrs.ETAG] = etag
        if etag_matches(request.headers.get(hdrs.IF_NONE_MATCH, ""), etag):
            return web.Response(status=304, headers={
                k: v for k, v in response.headers.items()
                if k in (hdrs.CACHE_CONTROL, hdrs.VARY, hdrs.ETAG) or k.startswith("Access-Control-")})
        return response

    @staticmethod
    def _shareable(request: web.Request, response: web.StreamResponse) -> bool:
        if request.method not in ("GET", "HEAD") or response.status != 200:
            return False
        if hdrs.AUTHORIZATION in request.headers or hdrs.COOKIE in request.headers:
            return False
        if not isinstance(response, web.Response) or not isinstance(response.body, bytes):
            return False
        resource = request.match_info.route.resource
        return resource is not None and resource.canonical in SHARED_ROUTES


def _last_address(header: str) -> str | None:
    """The last address of an X-Forwarded-For, if it is one."""
    last = header.rpartition(",")[2].strip()
    try:
        return str(ipaddress.ip_address(last))
    except ValueError:
        return None

