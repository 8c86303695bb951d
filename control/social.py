"""What viewers do: reviews, like/dislike, threaded comments, follows and a feed, views, trending.

Every list is newest first and cursor-paginated by its (created_at, id) keyset. Like counts
live on the video row, changed in the same transaction as the rows they count; view counts too,
but merged in batches (`control.views`).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from control.accounts import Accounts, Auth
from control.api import PROBLEM, Api
from control.catalog import VIDEO_ID, VideoHandlers
from control.db import Database, Row, Statements, Tx
from control.models import (
    Comment,
    CommentIn,
    CommentPage,
    Following,
    Rating,
    RatingIn,
    Review,
    ReviewIn,
    ReviewPage,
    TrendingPage,
    VideoPage,
    Views,
)
from control.problems import ProblemError
from control.requests import (
    KEYSET,
    LIMIT,
    OFFSET,
    keyset,
    keyset_cursor,
    offset,
    page,
    page_size,
    path_id,
    reads,
)
from control.videos import COLUMNS, Video, iso8601
from control.views import Full, ViewCounter
from control.warm import FeedWarmer
from reel.logs import QUIET

RATINGS = {"like": 1, "dislike": -1, "none": 0}


def _after(sql: str, params: list[Any], after: tuple[Any, ...] | None, ts: str, key: str) -> str:
    """`sql` narrowed to rows older than the keyset `after` (newest-first order)."""
    if after is None:
        return sql
    params += [after[0], after[0], after[1]]
    return sql + f" AND ({ts} < ? OR ({ts} = ? AND {key} < ?))"


class SocialHandlers:
    def __init__(self, *, db: Database, accounts: Accounts, auth: Auth, catalog: VideoHandlers,
                 render: Callable[[web.Request, Video], dict[str, Any]],
                 views: ViewCounter, warmer: FeedWarmer, trending_seconds: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.accounts = accounts
        self.auth = auth
        self.catalog = catalog
        self.render = render
        self.views = views
        self.warmer = warmer
        self.trending_seconds = trending_seconds
        self.clock = clock

    def add_routes(self, api: Api) -> None:
        vid, user, comment = [VIDEO_ID], [path_id("user_id")], [path_id("comment_id")]
        api.route("PUT", "/api/v1/videos/{video_id}/review", self.put_review, tag="viewers",
                  summary="Write or edit your review (one per user)", auth="user", params=vid,
                  body=ReviewIn, responses={200: Review, 404: PROBLEM})
        api.route("DELETE", "/api/v1/videos/{video_id}/review", self.delete_review,
                  summary="Delete your review", tag="viewers", auth="user", params=vid,
                  responses={204: "Deleted", 404: PROBLEM})
        api.route("GET", "/api/v1/videos/{video_id}/reviews", self.reviews, tag="viewers",
                  summary="Reviews, newest first, with their count and average", auth="optional",
                  params=[*vid, LIMIT, KEYSET], responses={200: ReviewPage, 400: PROBLEM, 404: PROBLEM})
        api.route("PUT", "/api/v1/videos/{video_id}/rating", self.put_rating, tag="viewers",
                  summary="Like, dislike or none", auth="user", params=vid, body=RatingIn,
                  responses={200: Rating, 404: PROBLEM})
        api.route("GET", "/api/v1/videos/{video_id}/rating", self.rating, tag="viewers",
                  summary="Like and dislike counts, and yours", auth="optional", params=vid,
                  responses={200: Rating, 404: PROBLEM})
        api.route("POST", "/api/v1/videos/{video_id}/comments", self.post_comment, tag="viewers",
                  summary="Comment, or reply to a top-level comment", auth="user", params=vid,
                  body=CommentIn, responses={201: Comment, 404: PROBLEM})
        api.route("GET", "/api/v1/videos/{video_id}/comments", self.comments, tag="viewers",
                  summary="Top-level comments, newest first", auth="optional",
                  params=[*vid, LIMIT, KEYSET], responses={200: CommentPage, 400: PROBLEM, 404: PROBLEM})
        api.route("GET", "/api/v1/comments/{comment_id}/replies", self.replies, tag="viewers",
                  summary="Replies to a comment, newest first", auth="optional",
                  params=[*comment, LIMIT, KEYSET],
                  responses={200: CommentPage, 400: PROBLEM, 404: PROBLEM})
        api.route("DELETE", "/api/v1/comments/{comment_id}", self.delete_comment, tag="viewers",
                  summary="Delete a comment (its author, the video's owner or an admin)",
                  auth="user", params=comment, responses={204: "Deleted", 403: PROBLEM, 404: PROBLEM})
        api.route("PUT", "/api/v1/users/{user_id}/follow", self.follow, summary="Follow",
                  tag="viewers", auth="user", params=user,
                  responses={204: "Following", 404: PROBLEM, 409: PROBLEM})
        api.route("GET", "/api/v1/users/{user_id}/follow", self.following, tag="viewers",
                  summary="Whether you follow this user", auth="user", params=user,
                  responses={200: Following})
        api.route("DELETE", "/api/v1/users/{user_id}/follow", self.unfollow, summary="Unfollow",
                  tag="viewers", auth="user", params=user, responses={204: "Not following"})
        api.route("GET", "/api/v1/me/feed", self.feed, tag="viewers", auth="user",
                  summary="Ready public videos (and streams live now) of the creators you follow, "
                          "newest first",
                  params=[LIMIT, KEYSET], responses={200: VideoPage, 400: PROBLEM})
        api.route("GET", "/api/v1/feed/for-you", self.for_you, tag="viewers",
                  summary="For signed-out viewers: trending public videos, then the newest; the "
                          "viewer's edge is asked to fetch the first ones' first segments ahead",
                  params=[LIMIT], responses={200: VideoPage, 400: PROBLEM})
        api.route("POST", "/api/v1/videos/{video_id}/views", self.view, tag="viewers",
                  summary="Count a view (once per viewer per window; merged within a second)",
                  auth="optional", params=vid,
                  responses={200: Views, 404: PROBLEM, 503: PROBLEM})
        api.route("GET", "/api/v1/trending", self.trending, tag="viewers",
                  summary="Public ready videos by recent views, and live streams on air "
                          "(a viewer now counts as a recent view)", params=[LIMIT, OFFSET],
                  responses={200: TrendingPage, 400: PROBLEM})

    # -- reviews ---------------------------------------------------------------------------------

    async def put_review(self, request: web.Request, body: ReviewIn) -> web.Response:
        user = await self.auth.require(request)
        video = await self.catalog.visible(request)
        now = self.clock()
        await self.db.execute(
            "INSERT INTO reviews (video_id, user_id, rating, body, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (video_id, user_id) DO UPDATE SET"
            " rating = excluded.rating, body = excluded.body, updated_at = excluded.updated_at",
            (video.id, user.id, body.rating, body.text, now, now))
        row = await self.db.fetchone(_REVIEW_SQL + " WHERE r.video_id = ? AND r.user_id = ?",
                                     (video.id, user.id))
        return web.json_response(_review_json(row))

    async def delete_review(self, request: web.Request) -> web.Response:
        user = await self.auth.require(request)
        video = await self.catalog.visible(request)
        if not await self.db.execute("DELETE FROM reviews WHERE video_id = ? AND user_id = ?",
                                     (video.id, user.id)):
            raise ProblemError(404, "you have not reviewed this video")
        return web.Response(status=204)

    async def reviews(self, request: web.Request) -> web.Response:
        video = await self.catalog.visible(request)
        limit = page_size(request)
        params: list[Any] = [video.id]
        sql = _after(_REVIEW_SQL + " WHERE r.video_id = ?", params, keyset(request),
                     "r.updated_at", "r.user_id")
        db = reads(request, self.db)
        rows = await db.fetchall(sql + " ORDER BY r.updated_at DESC, r.user_id DESC LIMIT ?",
                                 (*params, limit + 1))
        summary = await db.fetchone("SELECT count(*), avg(rating) FROM reviews WHERE video_id = ?",
                                    (video.id,))
        body = page(rows, limit, _review_json,
                    lambda r: keyset_cursor(r["updated_at"], r["user_id"]))
        body.update(count=summary[0],
                    average=None if summary[1] is None else round(float(summary[1]), 2))
        return web.json_response(body)

    # -- like / dislike --------------------------------------------------------------------------

    async def put_rating(self, request: web.Request, body: RatingIn) -> web.Response:
        user = await self.auth.require(request)
        video = await self.catalog.visible(request)
        value = RATINGS[body.rating]

        async def rate(tx: Tx) -> None:
            old = await tx.fetchone("SELECT value FROM ratings WHERE video_id = ? AND user_id = ?",
                                    (video.id, user.id))
            old_value = old[0] if old else 0
            if old_value == value:
                return
            if value == 0:
                await tx.execute("DELETE FROM ratings WHERE video_id = ? AND user_id = ?",
                                 (video.id, user.id))
            else:
                await tx.execute(
                    "INSERT INTO ratings (video_id, user_id, value) VALUES (?, ?, ?)"
                    " ON CONFLICT (video_id, user_id) DO UPDATE SET value = excluded.value",
                    (video.id, user.id, value))
            await tx.execute(
                "UPDATE videos SET likes = likes + ?, dislikes = dislikes + ? WHERE id = ?",
                ((value == 1) - (old_value == 1), (value == -1) - (old_value == -1), video.id))

        await self.db.transaction(rate)
        return web.json_response(await self._rating_json(video.id, user.id))

    async def rating(self, request: web.Request) -> web.Response:
        user = await self.auth.user(request)
        video = await self.catalog.visible(request)
        return web.json_response(await self._rating_json(video.id, user.id if user else None))

    async def _rating_json(self, video_id: str, user_id: str | None) -> dict[str, Any]:
        row = await self.db.fetchone(
            "SELECT likes, dislikes, (SELECT value FROM ratings WHERE video_id = v.id"
            " AND user_id = ?) FROM videos v WHERE id = ?", (user_id, video_id))
        mine = None if user_id is None else {1: "like", -1: "dislike"}.get(row[2], "none")
        return {"likes": row[0], "dislikes": row[1], "my_rating": mine}

    # -- comments --------------------------------------------------------------------------------

    async def post_comment(self, request: web.Request, body: CommentIn) -> web.Response:
        user = await self.auth.require(request)
        video = await self.catalog.visible(request)
        parent_id = body.parent_id
        if parent_id is not None:
            parent = await self.db.fetchone("SELECT video_id, parent_id FROM comments"
                                            " WHERE id = ?", (parent_id,))
            if parent is None or parent["video_id"] != video.id:
                raise ProblemError(404, "`parent_id` is not a comment on this video")
            if parent["parent_id"] is not None:
                raise ProblemError(400, "replies are one level deep: reply to the top comment")
        comment_id = secrets.token_urlsafe(9)
        await self.db.execute(
            "INSERT INTO comments (id, video_id, user_id, parent_id, body, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (comment_id, video.id, user.id, parent_id, body.text, self.clock()))
        row = await self.db.fetchone(_COMMENT_SQL + " WHERE c.id = ?", (comment_id,))
        return web.json_response(_comment_json(row), status=201)

    async def comments(self, request: web.Request) -> web.Response:
        video = await self.catalog.visible(request)
        return await self._comment_page(request, "c.video_id = ? AND c.parent_id IS NULL",
                                        video.id)

    async def replies(self, request: web.Request) -> web.Response:
        row = await self.db.fetchone("SELECT video_id FROM comments WHERE id = ?",
                                     (request.match_info["comment_id"],))
        if row is None:
            raise ProblemError(404, "no such comment")
        await self.catalog.visible(request, row[0])  # replies are as visible as their video
        return await self._comment_page(request, "c.parent_id = ?",
                                        request.match_info["comment_id"])

    async def _comment_page(self, request: web.Request, where: str, key: str) -> web.Response:
        limit = page_size(request)
        params: list[Any] = [key]
        sql = _after(_COMMENT_SQL + " WHERE " + where, params, keyset(request),
                     "c.created_at", "c.id")
        rows = await reads(request, self.db).fetchall(
            sql + " ORDER BY c.created_at DESC, c.id DESC LIMIT ?", (*params, limit + 1))
        return web.json_response(page(rows, limit, _comment_json,
                                      lambda r: keyset_cursor(r["created_at"], r["id"])))

    async def delete_comment(self, request: web.Request) -> web.Response:
        user = await self.auth.require(request)
        row = await self.db.fetchone(
            "SELECT c.user_id, v.owner_id FROM comments c JOIN videos v ON v.id = c.video_id"
            " WHERE c.id = ?", (request.match_info["comment_id"],))
        if row is None:
            raise ProblemError(404, "no such comment")
        if user.id not in (row["user_id"], row["owner_id"]) and not user.is_admin:
            raise ProblemError(403, "only the comment's author, the video's owner or an admin "
                                    "may delete it")
        await self.db.execute("DELETE FROM comments WHERE id = ?",
                              (request.match_info["comment_id"],))
        return web.Response(status=204)

    # -- follows and the feed --------------------------------------------------------------------

    async def follow(self, request: web.Request) -> web.Response:
        user = await self.auth.require(request)
        target = request.match_info["user_id"]
        if target == user.id:
            raise ProblemError(409, "you cannot follow yourself")
        if await self.accounts.get(target) is None:
            raise ProblemError(404, "no such user")
        await self.db.execute("INSERT INTO follows (follower_id, followee_id, created_at)"
                              " VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                              (user.id, target, self.clock()))
        return web.Response(status=204)

    async def following(self, request: web.Request) -> web.Response:
        user = await self.auth.require(request)
        row = await self.db.fetchone("SELECT 1 FROM follows WHERE follower_id = ? AND followee_id = ?",
                                     (user.id, request.match_info["user_id"]))
        return web.json_response({"following": row is not None})

    async def unfollow(self, request: web.Request) -> web.Response:
        user = await self.auth.require(request)
        await self.db.execute("DELETE FROM follows WHERE follower_id = ? AND followee_id = ?",
                              (user.id, request.match_info["user_id"]))
        return web.Response(status=204)

    async def feed(self, request: web.Request) -> web.Response:
        user = await self.auth.require(request)
        limit = page_size(request)
        params: list[Any] = [user.id]
        sql = _after(
            f"SELECT {', '.join('v.' + c for c in COLUMNS.split(', '))} FROM follows f"
            f" JOIN videos v ON v.owner_id = f.followee_id"
            f" WHERE f.follower_id = ? AND v.state IN ('ready', 'live') AND v.privacy = 'public'",
            params, keyset(request), "v.created_at", "v.id")
        rows = await self.db.fetchall(sql + " ORDER BY v.created_at DESC, v.id DESC LIMIT ?",
                                      (*params, limit + 1))
        videos = [Video.from_row(r) for r in rows]
        if keyset(request) is None:  # the top of the feed: what the viewer sees first
            self.warmer.warm(request.remote, videos)
        return web.json_response(page(videos, limit, lambda v: self.render(request, v),
                                      lambda v: keyset_cursor(v.created_at, v.id)))

    async def for_you(self, request: web.Request) -> web.Response:
        """One page: trending videos (as /trending), then the newest public ones not among them."""
        limit = page_size(request)
        db = reads(request, self.db)
        rows = await self._trending(db, limit, 0)
        seen = {r["id"] for r in rows}
        if len(rows) < limit:
            rows += [r for r in await db.fetchall(
                f"SELECT {COLUMNS} FROM videos WHERE state = 'ready' AND privacy = 'public'"
                f" ORDER BY created_at DESC, id DESC LIMIT ?", (limit,)) if r["id"] not in seen]
        videos = [Video.from_row(r) for r in rows[:limit]]
        self.warmer.warm(request.remote, videos)
        return web.json_response({"items": [self.render(request, v) for v in videos],
                                  "next_cursor": None})

    # -- views and trending ----------------------------------------------------------------------

    async def view(self, request: web.Request) -> web.Response:
        # The video and the session as read up to a second ago: no database on this path when
        # both are cached (Videos.recent, Accounts.sessions).
        video = await self.catalog.visible(request, recent=True)
        user = await self.auth.user(request)
        # Anonymous viewers count by a hash of their address: one view per window, no raw IPs.
        viewer = f"u:{user.id}" if user else "a:" + hashlib.sha256(
            (request.remote or "?").encode()).hexdigest()[:24]
        try:
            counted = self.views.add(video.id, viewer)
        except Full:
            raise ProblemError(503, "too many views to count just now: send it again shortly",
                               headers={"Retry-After": "1"}) from None
        # Merged within a second (control.views); until then the count includes this process's
        # pending views of the video. Counted by reel_control_views_*, not one log line each.
        request[QUIET] = True
        return web.json_response({"views": video.views + self.views.pending(video.id),
                                  "counted": counted})

    async def trending(self, request: web.Request) -> web.Response:
        """Public ready videos by views in the last `trending_seconds`, and live ones by those
        plus their viewers now, most first."""
        limit = page_size(request)
        skip = offset(request)
        rows = await self._trending(reads(request, self.db), limit + 1, skip)
        items = [{**self.render(request, Video.from_row(r)), "recent_views": r["recent"]}
                 for r in rows]
        return web.json_response(page(items, limit, lambda i: i, lambda _: str(skip + limit)))

    async def _trending(self, db: Statements, limit: int, skip: int) -> list[Row]:
        # Streams on air now count too, each viewer watching as a recent view.
        return await db.fetchall(
            f"SELECT {', '.join('v.' + c for c in COLUMNS.split(', '))}, t.recent FROM"
            f" (SELECT video_id, sum(n) AS recent FROM"
            f"  (SELECT video_id, 1 AS n FROM views WHERE created_at >= ?"
            f"   UNION ALL SELECT id, 0 FROM videos WHERE state = 'live') u"
            f"  GROUP BY video_id) t JOIN videos v ON v.id = t.video_id"
            f" WHERE v.state IN ('ready', 'live') AND v.privacy = 'public'"
            f" ORDER BY t.recent + coalesce(v.viewers, 0) DESC, v.id LIMIT ? OFFSET ?",
            (self.clock() - self.trending_seconds, limit, skip))


_REVIEW_SQL = ("SELECT r.user_id, u.name, r.rating, r.body, r.created_at, r.updated_at"
               " FROM reviews r JOIN users u ON u.id = r.user_id")
_COMMENT_SQL = ("SELECT c.id, c.video_id, c.user_id, u.name, c.parent_id, c.body, c.created_at,"
                " (SELECT count(*) FROM comments r WHERE r.parent_id = c.id) AS replies"
                " FROM comments c JOIN users u ON u.id = c.user_id")


def _review_json(row: Row) -> dict[str, Any]:
    return {"user": {"id": row["user_id"], "name": row["name"]}, "rating": row["rating"],
            "text": row["body"], "created_at": iso8601(row["created_at"]),
            "updated_at": iso8601(row["updated_at"])}


def _comment_json(row: Row) -> dict[str, Any]:
    return {"id": row["id"], "video_id": row["video_id"], "parent_id": row["parent_id"],
            "user": {"id": row["user_id"], "name": row["name"]}, "text": row["body"],
            "created_at": iso8601(row["created_at"]), "reply_count": row["replies"]}
