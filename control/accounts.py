"""Accounts: sign-up with scrypt-hashed passwords, bearer sessions with expiry, profiles.

A bearer token is 256 random bits handed out once; the database keeps only its sha256, so a copy
of the database signs nobody in. `Accounts.authenticate` is what every handler asks.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import hdrs, web

from control.api import PROBLEM, Api
from control.db import Database, IntegrityError, Row, Tx
from control.hotcache import TtlCache
from control.models import Me, Profile, ProfileEdit, Session, Sessions, SignedUp, SignIn, SignUp, Viewers
from control.problems import ProblemError
from control.requests import path_id
from control.videos import iso8601
from reel.logs import fields

log = logging.getLogger("reel.control.accounts")


@dataclass(frozen=True)
class PasswordHasher:
    """scrypt (stdlib, memory-hard). Parameters are stored with each hash so they can grow."""

    n: int = 2**14
    r: int = 8
    p: int = 1

    def hash(self, password: str) -> str:
        salt = secrets.token_bytes(16)
        digest = self._derive(password, salt, self.n, self.r, self.p)
        return f"scrypt${self.n}${self.r}${self.p}${_b64(salt)}${_b64(digest)}"

    def verify(self, password: str, encoded: str) -> bool:
        try:
            name, n, r, p, salt, digest = encoded.split("$")
            expected = base64.b64decode(digest)
            actual = self._derive(password, base64.b64decode(salt), int(n), int(r), int(p))
        except ValueError:
            return False
        return name == "scrypt" and hmac.compare_digest(actual, expected)

    @staticmethod
    def _derive(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
        return hashlib.scrypt(password.encode("utf-8", "surrogatepass"), salt=salt, n=n, r=r, p=p,
                              maxmem=256 * n * r + 1024 * 1024, dklen=32)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


NO_PASSWORD = "!"  # a password_hash no password matches (PasswordHasher.verify: not scrypt$...)
LOOKUP_BATCH = 200  # session lookups per query (parameters well under every dialect's limit)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True)
class User:
    id: str
    email: str
    name: str
    bio: str
    is_admin: bool
    quota_bytes: int | None
    created_at: float

    @classmethod
    def from_row(cls, row: Row) -> User:
        values = {name: row[name] for name in cls.__dataclass_fields__}
        values["is_admin"] = bool(values["is_admin"])
        return cls(**values)

    def public_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "bio": self.bio,
                "created_at": iso8601(self.created_at)}

    def private_json(self) -> dict[str, Any]:
        return {**self.public_json(), "email": self.email, "is_admin": self.is_admin}


USER_COLUMNS = ", ".join(User.__dataclass_fields__)


class EmailTaken(Exception):
    pass


class Accounts:
    """Users and sessions in `db`."""

    def __init__(self, db: Database, *, session_seconds: float = 7 * 86400,
                 hasher: PasswordHasher | None = None, admin_emails: Iterable[str] = (),
                 clock: Callable[[], float] = time.time, session_cache_seconds: float = 1.0,
                 session_cache_entries: int = 100_000) -> None:
        self.db = db
        self.session_seconds = session_seconds
        # token hash -> (user, session expiry). Sign-out and a password change drop entries
        # here at once; in another process a revoked token works for at most
        # `session_cache_seconds` more (0: no cache).
        self.sessions: TtlCache[str, tuple[User, float]] = TtlCache(session_cache_seconds,
                                                                     session_cache_entries)
        self._lookups: dict[str, asyncio.Future[User | None]] = {}  # token hash -> its answer
        self._lookup_task: asyncio.Task[None] | None = None
        self.hasher = hasher or PasswordHasher()
        self.admin_emails = frozenset(e.lower() for e in admin_emails)
        self.clock = clock
        # A fixed hash to verify against when the email is unknown, so timing does not tell.
        self._decoy = self.hasher.hash(secrets.token_urlsafe(12))

    async def promote_admins(self) -> None:
        for email in self.admin_emails:
            await self.db.execute("UPDATE users SET is_admin = 1 WHERE email = ?", (email,))

    async def sign_up(self, email: str, password: str, name: str) -> User:
        encoded = await asyncio.to_thread(self.hasher.hash, password)
        email = email.lower()

        async def insert(tx: Tx) -> User:
            now = self.clock()
            try:
                row = await tx.fetchone(
                    f"INSERT INTO users (id, email, name, password_hash, is_admin, created_at,"
                    f" updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING {USER_COLUMNS}",
                    (secrets.token_urlsafe(9), email, name, encoded,
                     int(email in self.admin_emails), now, now),
                )
            except IntegrityError:
                raise EmailTaken(email) from None
            return User.from_row(row)

        return await self.db.transaction(insert)

    async def signed_in_accounts(self, count: int) -> list[tuple[str, float, User]]:
        """`count` new accounts without a password (none verifies, so only their tokens sign
        them in), each with a session: (token, expires_at, user). No hashing, one transaction:
        how a load test gets viewers who signed in before it began."""
        now = self.clock()
        expires = now + self.session_seconds

        async def insert(tx: Tx) -> list[tuple[str, float, User]]:
            made = []
            for _ in range(count):
                user_id, token = secrets.token_urlsafe(9), secrets.token_urlsafe(32)
                row = await tx.fetchone(
                    f"INSERT INTO users (id, email, name, password_hash, is_admin, created_at,"
                    f" updated_at) VALUES (?, ?, ?, ?, 0, ?, ?) RETURNING {USER_COLUMNS}",
                    (user_id, f"viewer-{user_id.lower()}-{secrets.token_hex(4)}@viewers.invalid",
                     f"viewer {user_id}", NO_PASSWORD, now, now))
                await tx.execute("INSERT INTO sessions (token_hash, user_id, created_at, expires_at)"
                                 " VALUES (?, ?, ?, ?)", (token_hash(token), user_id, now, expires))
                made.append((token, expires, User.from_row(row)))
            return made

        return await self.db.transaction(insert)

    async def check_password(self, email: str, password: str) -> User | None:
        """The user, when `password` is theirs; None otherwise (in about the same time)."""
        row = await self.db.fetchone(f"SELECT {USER_COLUMNS}, password_hash FROM users"
                                     f" WHERE email = ?", (email.lower(),))
        encoded = row["password_hash"] if row is not None else self._decoy
        ok = await asyncio.to_thread(self.hasher.verify, password, encoded)
        return User.from_row(row) if row is not None and ok else None

    async def sign_in(self, email: str, password: str) -> tuple[str, float, User] | None:
        """(token, expires_at, user), or None when the email or password is wrong."""
        user = await self.check_password(email, password)
        if user is None:
            return None
        token = secrets.token_urlsafe(32)
        now = self.clock()
        expires = now + self.session_seconds
        await self.db.execute(
            "INSERT INTO sessions (token_hash, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
            (token_hash(token), user.id, now, expires))
        return token, expires, user

    async def sign_out(self, token: str) -> None:
        key = token_hash(token)
        self.sessions.discard(key)
        await self.db.execute("DELETE FROM sessions WHERE token_hash = ?", (key,))

    async def authenticate(self, token: str) -> User | None:
        """The token's user; from the cache when read within `session_cache_seconds`, else
        looked up together with every other lookup waiting at the same moment (one query for
        many concurrent viewers)."""
        key = token_hash(token)
        if (cached := self.sessions.get(key)) is not None and cached[1] > self.clock():
            return cached[0]
        waiter = self._lookups.get(key)
        if waiter is None:
            waiter = self._lookups[key] = asyncio.get_running_loop().create_future()
            if self._lookup_task is None:
                self._lookup_task = asyncio.create_task(self._look_up())
        return await asyncio.shield(waiter)  # one caller cancelled leaves the others' answer

    async def _look_up(self) -> None:
        await asyncio.sleep(0)  # let the requests already read ask too
        try:
            while self._lookups:
                keys = list(itertools.islice(self._lookups, LOOKUP_BATCH))
                waiters = [self._lookups.pop(k) for k in keys]
                try:
                    now, generation = self.clock(), self.sessions.generation
                    rows = await self.db.fetchall(
                        f"SELECT {', '.join('u.' + c for c in User.__dataclass_fields__)},"
                        f" s.token_hash, s.expires_at FROM sessions s JOIN users u"
                        f" ON u.id = s.user_id WHERE s.expires_at > ? AND s.token_hash IN"
                        f" ({', '.join('?' * len(keys))})", (now, *keys))
                except BaseException as exc:
                    for waiter in waiters:
                        if not waiter.done():
                            waiter.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                found = {}
                for row in rows:
                    user = found[row["token_hash"]] = User.from_row(row)
                    self.sessions.put(row["token_hash"], (user, row["expires_at"]), generation)
                for key, waiter in zip(keys, waiters, strict=True):
                    if not waiter.done():
                        waiter.set_result(found.get(key))
        finally:
            self._lookup_task = None

    async def get(self, user_id: str) -> User | None:
        row = await self.db.fetchone(f"SELECT {USER_COLUMNS} FROM users WHERE id = ?", (user_id,))
        return None if row is None else User.from_row(row)

    async def update(self, user_id: str, *, name: str | None, bio: str | None,
                     password: str | None, keep_token: str = "") -> User:
        encoded = None if password is None else await asyncio.to_thread(self.hasher.hash,
                                                                          password)

        self.sessions.discard_where(lambda entry: entry[0].id == user_id)

        async def change(tx: Tx) -> User:
            row = await tx.fetchone(
                f"UPDATE users SET name = coalesce(?, name), bio = coalesce(?, bio),"
                f" password_hash = coalesce(?, password_hash), updated_at = ? WHERE id = ?"
                f" RETURNING {USER_COLUMNS}", (name, bio, encoded, self.clock(), user_id),
            )
            if encoded is not None:  # a new password ends every other session
                await tx.execute("DELETE FROM sessions WHERE user_id = ? AND token_hash != ?",
                             (user_id, token_hash(keep_token)))
            return User.from_row(row)

        try:
            return await self.db.transaction(change)
        finally:  # and none read during the change stays
            self.sessions.discard_where(lambda entry: entry[0].id == user_id)

    async def expire_sessions(self) -> int:
        return await self.db.execute("DELETE FROM sessions WHERE expires_at <= ?", (self.clock(),))


def bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


USER_KEY = web.RequestKey("reel_user", object)  # User | None, once looked up


def _unauthorized(detail: str) -> ProblemError:
    return ProblemError(401, detail, headers={hdrs.WWW_AUTHENTICATE: 'Bearer realm="reel"'})


class Auth:
    """Who is asking: `user(request)` (or None), `require(request)` (or 401)."""

    def __init__(self, accounts: Accounts) -> None:
        self.accounts = accounts

    async def user(self, request: web.Request) -> User | None:
        if USER_KEY in request:
            return request[USER_KEY]
        token = bearer(request)
        user = None
        if token is not None:
            user = await self.accounts.authenticate(token)
            if user is None:  # a bad token is an error even where anonymous is allowed
                raise _unauthorized("the bearer token is unknown, expired or revoked: sign in again")
        request[USER_KEY] = user
        return user

    async def require(self, request: web.Request) -> User:
        user = await self.user(request)
        if user is None:
            raise _unauthorized("sign in first: POST /api/v1/sessions, then send "
                                "Authorization: Bearer <token>")
        return user


class AccountHandlers:
    """Sign-up, sign-in, sign-out and the profile."""

    def __init__(self, accounts: Accounts, auth: Auth) -> None:
        self.accounts = accounts
        self.auth = auth

    def add_routes(self, api: Api) -> None:
        user = path_id("user_id")
        api.route("POST", "/api/v1/users", self.sign_up, summary="Sign up", tag="accounts",
                  body=SignUp, responses={201: SignedUp, 409: PROBLEM})
        api.route("POST", "/api/v1/sessions", self.sign_in, tag="accounts",
                  summary="Sign in: a bearer token with an expiry", body=SignIn,
                  responses={201: Session, 401: PROBLEM})
        api.route("POST", "/api/v1/admin/viewers", self.viewers, tag="accounts", auth="user",
                  summary="Admins only: new accounts without a password, each signed in (how "
                          "load tests get viewers who signed in before the test)",
                  body=Viewers, responses={201: Sessions, 403: PROBLEM})
        api.route("DELETE", "/api/v1/sessions/current", self.sign_out, auth="user",
                  summary="Sign out (revoke this token)", tag="accounts", responses={204: "Done"})
        api.route("GET", "/api/v1/me", self.me, summary="Your profile", tag="accounts",
                  auth="user", responses={200: Me})
        api.route("PATCH", "/api/v1/me", self.edit_me, tag="accounts", auth="user",
                  summary="Edit your profile (a new password needs current_password)",
                  body=ProfileEdit, body_required=False, responses={200: Me, 403: PROBLEM})
        api.route("GET", "/api/v1/users/{user_id}", self.profile, tag="accounts",
                  summary="A user's public profile", params=[user],
                  responses={200: Profile, 404: PROBLEM})

    async def sign_up(self, request: web.Request, body: SignUp) -> web.Response:
        name = body.name or body.email.split("@")[0]
        try:
            user = await self.accounts.sign_up(body.email, body.password, name)
        except EmailTaken:
            raise ProblemError(409, "an account with this email exists: sign in instead",
                               title="Email taken") from None
        return web.json_response({"user": user.private_json()}, status=201,
                                 headers={hdrs.LOCATION: f"/api/v1/users/{user.id}"})

    async def sign_in(self, request: web.Request, body: SignIn) -> web.Response:
        found = await self.accounts.sign_in(body.email, body.password)
        if found is None:
            raise _unauthorized("wrong email or password")
        token, expires, user = found
        return web.json_response({"token": token, "token_type": "Bearer",
                                  "expires_at": iso8601(expires), "user": user.private_json()},
                                 status=201)

    async def viewers(self, request: web.Request, body: Viewers) -> web.Response:
        admin = await self.auth.require(request)
        if not admin.is_admin:
            raise ProblemError(403, "only an admin may make signed-in viewers")
        made = await self.accounts.signed_in_accounts(body.count)
        log.info("viewers made", extra=fields(count=len(made), user=admin.id))
        return web.json_response({"items": [
            {"token": token, "token_type": "Bearer", "expires_at": iso8601(expires),
             "user": user.private_json()} for token, expires, user in made]}, status=201)

    async def sign_out(self, request: web.Request) -> web.Response:
        await self.auth.require(request)
        await self.accounts.sign_out(bearer(request) or "")
        return web.Response(status=204)

    async def me(self, request: web.Request) -> web.Response:
        user = await self.auth.require(request)
        return web.json_response(user.private_json())

    async def edit_me(self, request: web.Request, body: ProfileEdit) -> web.Response:
        user = await self.auth.require(request)
        if body.password is not None and (
                body.current_password is None
                or await self.accounts.check_password(user.email, body.current_password) is None):
            raise ProblemError(403, "a new `password` needs your `current_password`, right")
        user = await self.accounts.update(user.id, name=body.name, bio=body.bio,
                                          password=body.password, keep_token=bearer(request) or "")
        return web.json_response(user.private_json())

    async def profile(self, request: web.Request) -> web.Response:
        user = await self.accounts.get(request.match_info["user_id"])
        if user is None:
            raise ProblemError(404, "no such user")
        counts = await self.accounts.db.fetchone(
            "SELECT (SELECT count(*) FROM follows WHERE followee_id = :id),"
            " (SELECT count(*) FROM follows WHERE follower_id = :id)", {"id": user.id})
        return web.json_response({**user.public_json(), "followers": counts[0],
                                  "following": counts[1]})
