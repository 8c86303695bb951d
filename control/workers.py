"""The worker job API: packaging workers claim jobs over HTTP, renew their lease, report the end.

Workers present the shared worker token (not a user's) and are never throttled. The handlers
speak to `control.jobs.JobQueue` only; each transition is counted in `events`, and `changed()`
is awaited after every change of a job's state (the app refreshes its gauge of jobs by state).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import hdrs, web
from prometheus_client import Counter

from control.api import PROBLEM, Api
from control.jobs import Job, JobQueue, LeaseLost, UnknownJob
from control.models import Claimed, ClaimIn, Completed, Completion, Failed, Failure, Heartbeat, Lease
from control.problems import ProblemError
from control.requests import path_id
from control.videos import output_prefix, source_key

JOB_HANDLE = path_id(
    "job_id", "^[A-Za-z0-9_-]{1,64}(\\.[0-9]{1,9})?$",
    "The `id` a claim returned: `{job}.{attempt}`, refused with 409 once the job was claimed "
    "again or ended. A bare job id means whoever holds it now.")


@contextmanager
def _job_errors(handle: str) -> Iterator[None]:
    """Queue refusals as problems: unknown job 404, lost lease 409."""
    try:
        yield
    except UnknownJob:
        raise ProblemError(404, f"no job {handle!r}") from None
    except LeaseLost as exc:
        raise ProblemError(409, f"{exc}: stop working on it", title="Lease lost") from None


def line(text: str, limit: int) -> str:
    """What a worker said, as stored: no NUL or other control characters, at most `limit`."""
    return "".join(ch for ch in text if ch >= " " or ch in "\n\t").strip()[:limit]


class JobHandlers:
    """POST /api/v1/jobs/claim and /api/v1/jobs/{handle}/{heartbeat,complete,fail}."""

    def __init__(self, queue: JobQueue, worker_token: str, events: Counter,
                 changed: Callable[[], Awaitable[None]]) -> None:
        if not worker_token:
            raise ValueError("worker_token must not be empty")
        self.queue = queue
        self._token = worker_token.encode()
        self.events = events
        self.changed = changed

    def add_routes(self, api: Api) -> None:
        api.guard("worker", self.require_worker)
        job = dict(tag="worker", auth="worker", throttled=False)
        api.route("POST", "/api/v1/jobs/claim", self.claim, **job, body=ClaimIn,
                  body_required=False, summary="Claim the next packaging job under a lease",
                  responses={200: Claimed, 204: "Nothing to do now"})
        for action, handler, model, answer, summary in (
                ("heartbeat", self.heartbeat, Heartbeat, Lease,
                 "Renew the lease and report progress"),
                ("complete", self.complete, Completion, Completed,
                 "Report the job done: the video becomes ready"),
                ("fail", self.fail, Failure, Failed,
                 "Report a failed attempt: retried after a backoff unless permanent or out of "
                 "attempts, then the video fails with `reason: detail`")):
            api.route("POST", f"/api/v1/jobs/{{job_id}}/{action}", handler, **job, body=model,
                      body_required=action != "heartbeat", summary=summary, params=[JOB_HANDLE],
                      responses={200: answer, 404: PROBLEM, 409: PROBLEM})

    async def require_worker(self, request: web.Request) -> None:
        scheme, _, token = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
        given = token.strip().encode("utf-8", "surrogateescape")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given, self._token):
            raise ProblemError(401, "a valid worker token is required: "
                                    "Authorization: Bearer <worker token>",
                               headers={hdrs.WWW_AUTHENTICATE: 'Bearer realm="reel-worker"'})

    def _job_json(self, job: Job) -> dict[str, Any]:
        return {"id": job.handle, "video_id": job.video_id, "source_key": source_key(job.video_id),
                "output_prefix": output_prefix(job.video_id),
                "lease_seconds": self.queue.lease_seconds, "attempt": job.attempts}

    async def claim(self, request: web.Request, body: ClaimIn) -> web.Response:
        job = await self.queue.claim(line(body.worker, 128) or "unnamed")
        if job is None:
            return web.Response(status=204)
        self.events.labels("claimed").inc()
        await self.changed()
        return web.json_response({"job": self._job_json(job)})

    async def heartbeat(self, request: web.Request, body: Heartbeat) -> web.Response:
        progress = None if body.progress is None else (body.progress.done, body.progress.total)
        with _job_errors(request.match_info["job_id"]):
            await self.queue.heartbeat(request.match_info["job_id"], progress, body.preview)
        self.events.labels("heartbeat").inc()
        return web.json_response({"lease_seconds": self.queue.lease_seconds})

    async def complete(self, request: web.Request, body: Completion) -> web.Response:
        with _job_errors(request.match_info["job_id"]):
            job = await self.queue.complete(request.match_info["job_id"],
                                            {"duration": body.duration,
                                             "renditions": body.renditions})
        self.events.labels("completed").inc()
        await self.changed()
        return web.json_response({"job": {"id": job.id, "state": job.state},
                                  "video": {"id": job.video_id, "state": "ready"}})

    async def fail(self, request: web.Request, body: Failure) -> web.Response:
        reason = line(body.reason, 64) or "error"
        detail = line(body.detail, 2000)
        with _job_errors(request.match_info["job_id"]):
            job = await self.queue.fail(request.match_info["job_id"],
                                        f"{reason}: {detail}" if detail else reason,
                                        permanent=body.permanent)
        retrying = job.state == "queued"
        self.events.labels("retried" if retrying else "failed").inc()
        await self.changed()
        answer: dict[str, Any] = {"job": {"id": job.id, "state": job.state,
                                          "attempts": job.attempts, "retry": retrying}}
        if retrying:
            answer["job"]["retry_in_seconds"] = max(0.0, round(job.not_before - self.queue.clock(), 3))
        return web.json_response(answer)
