"""The web app: server-rendered pages at `/` (Jinja2), a little vanilla JS beside them.

Pages render what the API shows an anonymous visitor (read in process by `control.internal`), so
they are fast to first paint, usable before any script runs, and the same for everyone (an edge
may cache them). Whatever depends on who is signed in (the feed, the studio, likes, follows) is
filled in by the page's script, which sends the bearer token kept in localStorage: the API never
authenticates by cookie, so a page cannot be made to act for its visitor by another site.

One exception: a watch page the public may not see (a private video) is rendered for the user
whose session the `reel_watch` cookie holds (set by the pages' script beside localStorage, path
`/watch`, SameSite=Lax), so its owner can open it like any page. It only reads (GET, rendered
for that user alone, `private, no-store`); every action still goes through the bearer API.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import hdrs, web

from control.api import Api
from control.internal import api_get
from control.models import ID_PATTERN
from control.problems import ProblemError
from control.requests import Param
from control.templating import environment
from origin.layout import is_video_id

STATIC = Path(__file__).resolve().parent / "static" / "app"
STATIC_NAME = re.compile(r"[a-z0-9_-]{1,64}\.(js|css)")
HTML = {200: {"description": "HTML page", "content": {"text/html": {}}}}
NOT_FOUND = {404: {"description": "HTML page: not found", "content": {"text/html": {}}}}
DURATIONS = {"short": (None, 240), "medium": (240, 1200), "long": (1200, None)}
UPLOADED = {"hour": timedelta(hours=1), "today": timedelta(days=1), "week": timedelta(days=7),
            "month": timedelta(days=30), "year": timedelta(days=365)}
GRID = 24
WATCH_COOKIE = "reel_watch"  # a session token, for watch pages of videos the public may not see


def search_query(params: Mapping[str, str], now: datetime | None = None) -> dict[str, str]:
    """The API's search query for the search page's `q`, `duration` and `uploaded`."""
    query = {"q": params.get("q", "").strip(), "limit": str(GRID)}
    low, high = DURATIONS.get(params.get("duration", ""), (None, None))
    if low is not None:
        query["min_duration"] = str(low)
    if high is not None:
        query["max_duration"] = str(high)
    if (since := UPLOADED.get(params.get("uploaded", ""))) is not None:
        query["uploaded_after"] = ((now or datetime.now(UTC)) - since).isoformat()
    if "cursor" in params:  # the API checks it: a bad one is a 400 shown on the page
        query["cursor"] = params["cursor"]
    return query


class Pages:
    """The page handlers. `tusjs` is tus-js-client's browser build (from the npm install)."""

    def __init__(self, *, tusjs: Path) -> None:
        self.env = environment()
        self.tusjs = tusjs

    def add_routes(self, api: Api) -> None:
        video = [Param("video_id", "path", {"type": "string"})]
        user = [Param("user_id", "path", {"type": "string"})]
        for path, handler, summary in (
                ("/", self.home, "Home: trending and latest videos, your feed"),
                ("/shorts", self.shorts, "The short-video feed, one at a time"),
                ("/search", self.search, "Search results with filters"),
                ("/signin", self.signin, "Sign in"), ("/signup", self.signup, "Sign up"),
                ("/upload", self.upload, "Upload a video (tus, resumable)"),
                ("/studio", self.studio, "Your videos: edit, delete"),
                ("/live", self.live, "Go live: create a stream, its ingest URL and key, preview, end")):
            api.route("GET", path, handler, tag="pages", summary=summary, responses=HTML)
        api.route("GET", "/watch/{video_id}", self.watch, tag="pages", params=video,
                  summary="The watch page (HTML, plays through geo with hls.js)",
                  responses={**HTML, **NOT_FOUND})
        api.route("GET", "/v/{video_id}", self.short_link, tag="pages", params=video,
                  summary="Short share link: redirects to the watch page",
                  responses={302: {"description": "to /watch/{video_id}"}, **NOT_FOUND})
        api.route("GET", "/channel/{user_id}", self.channel, tag="pages", params=user,
                  summary="A creator's channel", responses={**HTML, **NOT_FOUND})
        api.route("GET", "/static/app/{name}", self.static_file, tag="pages",
                  params=[Param("name", "path", {"type": "string"})],
                  summary="The web app's scripts and styles", responses={200: "A file", **NOT_FOUND})
        api.route("GET", "/static/tus.min.js", self.tusjs_file, tag="pages",
                  summary="tus-js-client, from the npm install",
                  responses={200: "JavaScript", **NOT_FOUND})

    def render(self, name: str, status: int = 200, *, personal: bool = False,
               **context: Any) -> web.Response:
        text = self.env.get_template(name).render(**context)
        return web.Response(text=text, status=status, content_type="text/html",
                            headers={hdrs.CACHE_CONTROL: "private, no-store" if personal else "no-cache"})

    def not_found(self, what: str) -> web.Response:
        return self.render("notfound.html", status=404, title="Not found", what=what)

    # -- lists ------------------------------------------------------------------------------------

    async def names(self, request: web.Request, videos: Iterable[Mapping[str, Any]]) -> dict[str, str]:
        """Each video owner's display name, by user id."""
        ids = sorted({v["owner_id"] for v in videos if v.get("owner_id")})
        profiles = await asyncio.gather(*(api_get(request, f"/api/v1/users/{i}") for i in ids))
        return {i: p["name"] for i, p in zip(ids, profiles, strict=True) if p}

    async def home(self, request: web.Request) -> web.Response:
        live, trending, latest = await asyncio.gather(
            api_get(request, "/api/v1/videos", {"state": "live", "limit": 12}),
            api_get(request, "/api/v1/trending", {"limit": GRID}),
            api_get(request, "/api/v1/videos", {"limit": GRID}))
        trending = [v for v in trending["items"] if v["state"] == "ready"]  # live ones: their row
        videos = live["items"] + trending + latest["items"]
        return self.render("home.html", title="Home", live=live["items"], trending=trending,
                           latest=latest["items"], names=await self.names(request, videos))

    async def shorts(self, request: web.Request) -> web.Response:
        trending, latest = await asyncio.gather(
            api_get(request, "/api/v1/trending", {"limit": GRID}),
            api_get(request, "/api/v1/videos", {"limit": GRID}))
        seen: set[str] = set()
        videos = [v for v in trending["items"] + latest["items"]  # videos, not live streams
                  if v["state"] == "ready" and v["id"] not in seen and not seen.add(v["id"])]
        return self.render("shorts.html", title="Shorts", videos=videos,
                           names=await self.names(request, videos))

    async def search(self, request: web.Request) -> web.Response:
        query = search_query(request.query)
        found, error = {"items": [], "next_cursor": None}, None
        if query["q"]:
            try:
                found = await api_get(request, "/api/v1/search", query)
            except ProblemError as exc:
                error = exc.detail
        more = (request.rel_url.update_query(cursor=found["next_cursor"])
                if found["next_cursor"] else None)
        return self.render("search.html", title=f"{query['q']} - Search" if query["q"] else "Search",
                           q=query["q"], duration=request.query.get("duration", ""),
                           uploaded=request.query.get("uploaded", ""), results=found["items"],
                           more=more, error=error, names=await self.names(request, found["items"]))

    # -- one video, one channel -------------------------------------------------------------------

    async def watch(self, request: web.Request) -> web.Response:
        video_id = request.match_info["video_id"]
        if not is_video_id(video_id):
            return self.not_found("video")
        token = None
        video = await api_get(request, f"/api/v1/videos/{video_id}")
        if video is None and (token := request.cookies.get(WATCH_COOKIE)):
            try:  # perhaps the visitor's own private video
                video = await api_get(request, f"/api/v1/videos/{video_id}", token=token)
            except ProblemError as exc:  # an ended session (401): the public answer stands
                if exc.status != 401:
                    raise
        if video is None:
            response = self.not_found("video")
            response.headers[hdrs.VARY] = "Cookie"
            return response
        owner, reviews, comments, latest = await asyncio.gather(
            api_get(request, f"/api/v1/users/{video['owner_id']}") if video["owner_id"] else
            asyncio.sleep(0),
            api_get(request, f"/api/v1/videos/{video_id}/reviews", {"limit": 20}, token=token),
            api_get(request, f"/api/v1/videos/{video_id}/comments", {"limit": 50}, token=token),
            api_get(request, "/api/v1/videos", {"limit": 9}))
        up_next = [v for v in latest["items"] if v["id"] != video_id][:8]
        response = self.render(
            "watch.html", personal=token is not None, title=video["title"] or video_id,
            video=video, owner=owner, reviews=reviews, comments=comments["items"], up_next=up_next,
            names=await self.names(request, up_next),
            data={"video": video, "api_url": f"/api/v1/videos/{video_id}"})
        response.headers[hdrs.VARY] = "Cookie"
        return response

    async def short_link(self, request: web.Request) -> web.Response:
        video_id = request.match_info["video_id"]
        if not is_video_id(video_id):
            return self.not_found("video")
        raise web.HTTPFound(f"/watch/{video_id}")

    async def channel(self, request: web.Request) -> web.Response:
        user_id = request.match_info["user_id"]
        profile = (await api_get(request, f"/api/v1/users/{user_id}")
                   if re.fullmatch(ID_PATTERN.strip("^$"), user_id) else None)
        if profile is None:
            return self.not_found("channel")
        videos = await api_get(request, f"/api/v1/users/{user_id}/videos", {"limit": 50})
        return self.render("channel.html", title=profile["name"], profile=profile,
                           videos=videos["items"] if videos else [],
                           names={profile["id"]: profile["name"]})

    # -- forms (filled in by their scripts) -------------------------------------------------------

    async def signin(self, request: web.Request) -> web.Response:
        return self.render("signin.html", title="Sign in")

    async def signup(self, request: web.Request) -> web.Response:
        return self.render("signup.html", title="Sign up")

    async def upload(self, request: web.Request) -> web.Response:
        return self.render("upload.html", title="Upload")

    async def studio(self, request: web.Request) -> web.Response:
        return self.render("studio.html", title="Studio")

    async def live(self, request: web.Request) -> web.Response:
        return self.render("live.html", title="Go live")

    # -- files ------------------------------------------------------------------------------------

    async def static_file(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if STATIC_NAME.fullmatch(name) is None or not (path := STATIC / name).is_file():
            return self.not_found("file")
        kind = {".js": "text/javascript", ".css": "text/css"}.get(path.suffix, "text/plain")
        return web.FileResponse(path, headers={hdrs.CONTENT_TYPE: f"{kind}; charset=utf-8",
                                               hdrs.CACHE_CONTROL: "no-cache"})

    async def tusjs_file(self, request: web.Request) -> web.StreamResponse:
        return npm_file(self.tusjs, "tus-js-client")


def npm_file(path: Path, package: str, hint: str = "") -> web.FileResponse:
    """A browser script from the npm install (hls.js, tus-js-client), cacheable for a day; a
    404 problem saying how to install it when it is missing."""
    if not path.is_file():
        raise ProblemError(404, f"{package} is not installed at {path}: run `npm ci` in the "
                                f"repository root{hint}")
    return web.FileResponse(path, headers={hdrs.CACHE_CONTROL: "public, max-age=86400",
                                           hdrs.CONTENT_TYPE: "text/javascript; charset=utf-8"})
