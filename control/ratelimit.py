"""Token-bucket rate limits: per client address, per signed-in user, and stricter for sign-up and
sign-in. A refused request gets 429 problem+json with `Retry-After`.

Each `Limiter` keeps one bucket per key in a `cachetools.TTLCache`: a bucket untouched for as long
as it takes to refill is full again, so forgetting it then changes nothing, and `max_keys` bounds
the memory however many addresses come by.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from cachetools import TTLCache

from control.accounts import USER_KEY
from control.api import Api
from control.problems import ProblemError

AUTH_ROUTES = (("POST", "/api/v1/users"), ("POST", "/api/v1/sessions"))
UNLIMITED_PREFIXES = ("/api/v1/jobs/", "/api/v1/ingest/", "/healthz", "/metrics")  # workers, probes


@dataclass(frozen=True)
class Rate:
    """`per_second` tokens refill a bucket holding at most `burst`; a zero rate means no limit."""

    per_second: float
    burst: int

    @classmethod
    def parse(cls, text: str) -> Rate:
        """"RATE:BURST" (requests per second, bucket size), e.g. "0.2:20"; "0" turns it off."""
        rate, _, burst = text.partition(":")
        try:
            value = cls(float(rate), int(burst) if burst else max(1, math.ceil(float(rate))))
        except ValueError:
            raise ValueError(f"rate {text!r}: expected RATE:BURST such as 20:200") from None
        if not math.isfinite(value.per_second) or value.per_second < 0 or value.burst < 1:
            raise ValueError(f"rate {text!r}: RATE must be >= 0 and BURST >= 1")
        return value

    @property
    def enabled(self) -> bool:
        return self.per_second > 0


class Limiter:
    """One token bucket per key."""

    def __init__(self, rate: Rate, *, max_keys: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.clock = clock
        refill = rate.burst / rate.per_second if rate.enabled else 1.0
        self._buckets: TTLCache[str, tuple[float, float]] = TTLCache(
            maxsize=max_keys, ttl=refill, timer=clock)

    def take(self, key: str) -> float:
        """Spend a token of `key`'s bucket: 0.0 when there was one, else seconds until there is."""
        if not self.rate.enabled:
            return 0.0
        now = self.clock()
        tokens, last = self._buckets.get(key, (float(self.rate.burst), now))
        tokens = min(float(self.rate.burst), tokens + (now - last) * self.rate.per_second)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate.per_second


@dataclass(frozen=True)
class RateLimits:
    """The service's limits. Defaults leave room for a browser session and for scripts that sign
    up once per run from one address; tests and benchmarks may pass `RateLimits.off()`."""

    per_ip: Rate = Rate(50, 400)
    per_user: Rate = Rate(20, 200)
    auth_per_ip: Rate = Rate(0.2, 20)  # sign-up and sign-in: a burst of 20, then one per 5 s

    @classmethod
    def off(cls) -> RateLimits:
        return cls(Rate(0, 1), Rate(0, 1), Rate(0, 1))


class RateLimiter:
    """The middleware: `middleware` refuses what is over a limit before the handler runs.

    Authentication comes first: a request without the credentials its route requires, or with a
    bad token, is answered 401 whatever its rate. Who is asking decides which bucket a request
    spends from (the user's, beside the address's), so it must be known before throttling; and a
    client is never told to wait out a Retry-After only to learn then that it is not signed in.
    A refusal costs a token lookup at most, one indexed read of its hash.
    """

    def __init__(self, limits: RateLimits, api: Api, *, max_keys: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.api = api
        self.per_ip = Limiter(limits.per_ip, max_keys=max_keys, clock=clock)
        self.per_user = Limiter(limits.per_user, max_keys=max_keys, clock=clock)
        self.auth_per_ip = Limiter(limits.auth_per_ip, max_keys=max_keys, clock=clock)

    def wait_for(self, request: web.Request) -> float:
        """Seconds `request` must wait (0.0: it may go ahead, and has spent its tokens)."""
        if request.method == "OPTIONS" or request.path.startswith(UNLIMITED_PREFIXES):
            return 0.0
        address = request.remote or "?"
        if (request.method, request.path.rstrip("/")) in AUTH_ROUTES:
            if wait := self.auth_per_ip.take(address):
                return wait
        if wait := self.per_ip.take(address):
            return wait
        user = request.get(USER_KEY)
        return self.per_user.take(user.id) if user is not None else 0.0

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        await self.api.authenticate(request)
        wait = self.wait_for(request)
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise ProblemError(429, f"too many requests: try again in {seconds} s",
                               title="Too Many Requests",
                               headers={hdrs.RETRY_AFTER: str(seconds)})
        return await handler(request)
