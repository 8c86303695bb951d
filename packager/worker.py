"""`reel worker`: claims packaging jobs from control over HTTP and publishes them into the store.

A job runs in a child process (`python -m packager`) with a time limit, while the worker renews
its lease and reports progress. Renditions are uploaded first and `master.m3u8` last, so a video
is never visible half-published.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from origin.store import Store, StoreError, open_store
from reel.logs import fields

log = logging.getLogger("packager.worker")

HTTP_TIMEOUT = aiohttp.ClientTimeout(total=30, connect=5)
PROGRESS_EVERY = 1.0  # seconds: a client polling the video once a second sees progress move


@dataclass(frozen=True)
class Job:
    id: str
    video_id: str
    source_key: str
    output_prefix: str
    lease_seconds: float


class JobFailed(Exception):
    def __init__(self, reason: str, message: str, permanent: bool) -> None:
        super().__init__(message)
        self.reason, self.permanent = reason, permanent


class LeaseLost(Exception):
    """Control says this job is no longer ours (lease expired and re-claimed, or finished)."""


class ControlClient:
    """The worker's side of control's job API."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str, token: str) -> None:
        self.http = http
        self.base = base_url.rstrip("/") + "/api/v1/jobs"
        self.headers = {"Authorization": f"Bearer {token}"}

    async def claim(self, worker: str) -> Job | None:
        async with self.http.post(f"{self.base}/claim", json={"worker": worker},
                                  headers=self.headers) as resp:
            if resp.status == 204:
                return None
            resp.raise_for_status()
            job = (await resp.json())["job"]
        return Job(job["id"], job["video_id"], job["source_key"], job["output_prefix"],
                   float(job.get("lease_seconds", 60)))

    async def _post(self, job: Job, action: str, body: dict) -> None:
        async with self.http.post(f"{self.base}/{job.id}/{action}", json=body,
                                  headers=self.headers) as resp:
            if resp.status == 409:
                raise LeaseLost(job.id)
            resp.raise_for_status()

    async def heartbeat(self, job: Job, progress: tuple[int, int] | None,
                        preview: str | None = None) -> None:
        body: dict = {"progress": {"done": progress[0], "total": progress[1]}} if progress else {}
        if preview:
            body["preview"] = preview
        await self._post(job, "heartbeat", body)

    async def complete(self, job: Job, result: dict) -> None:
        await self._post(job, "complete", {"duration": result["duration"],
                                           "renditions": result["renditions"]})

    async def fail(self, job: Job, exc: JobFailed) -> None:
        await self._post(job, "fail", {"reason": exc.reason, "detail": str(exc),
                                       "permanent": exc.permanent})


class JobRunner:
    """Runs one job: fetch the source, package it in a child process that publishes into the
    store as it goes, report. A failed job's objects are removed: nothing half-made stays."""

    def __init__(self, control: ControlClient, store: Store, store_spec: str, job: Job,
                 timeout: float, processes: int = 1) -> None:
        self.control, self.store, self.store_spec = control, store, store_spec
        self.job, self.timeout, self.processes = job, timeout, processes
        self.progress: tuple[int, int] | None = None
        self.preview: str | None = None  # the rendition playlist playable before the end
        self._news = asyncio.Event()  # something to tell control before the next heartbeat

    async def run(self) -> None:
        heartbeat = asyncio.create_task(self._heartbeats())
        try:
            # Leftovers of an earlier, interrupted attempt go first: this run rewrites them all.
            await self.store.delete_prefix(self.job.output_prefix)
            with tempfile.TemporaryDirectory(prefix="reel-job-") as tmp:
                source = Path(tmp) / "source"
                await self.store.read_to_file(self.job.source_key, source)
                result = await self._package(source)
        except (JobFailed, StoreError, FileNotFoundError) as exc:
            failure = exc if isinstance(exc, JobFailed) else JobFailed("store_error", str(exc), False)
            log.warning("job failed", extra=fields(job=self.job.id, reason=failure.reason,
                                                    detail=str(failure)))
            heartbeat.cancel()
            with contextlib.suppress(StoreError):
                await self.store.delete_prefix(self.job.output_prefix)
            await self.control.fail(self.job, failure)
            return
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError, LeaseLost, aiohttp.ClientError):
                await heartbeat
        await self.control.complete(self.job, result)
        log.info("job done", extra=fields(job=self.job.id, video=self.job.video_id, **result))

    async def _heartbeats(self) -> None:
        interval = max(1.0, self.job.lease_seconds / 3)
        while True:
            # News (progress, a playable preview) is told within PROGRESS_EVERY; with none, the
            # lease is still renewed every `interval`.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._news.wait(), interval)
            self._news.clear()
            try:
                await self.control.heartbeat(self.job, self.progress, self.preview)
            except aiohttp.ClientError as exc:
                log.warning("heartbeat failed", extra=fields(job=self.job.id, error=str(exc)))
            await asyncio.sleep(PROGRESS_EVERY)

    async def _package(self, source: Path) -> dict:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "packager", str(source), "--store", self.store_spec,
            "--prefix", self.job.output_prefix, "--max-processing-seconds", str(self.timeout),
            "--workers", str(self.processes),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        outcome: dict = {}

        async def read_events() -> None:
            assert proc.stdout is not None
            async for line in proc.stdout:
                event = json.loads(line)
                if "progress" in event:
                    self.progress = tuple(event["progress"])
                    self._news.set()
                if "preview" in event:
                    self.preview = event["preview"]
                    self._news.set()
                outcome.update(event)

        async def read_stderr() -> bytes:
            assert proc.stderr is not None
            return (await proc.stderr.read())[-2000:]  # the tail is what explains a crash

        try:
            # A little past the child's own limit: it should fail first, with its own reason.
            _, stderr = await asyncio.wait_for(
                asyncio.gather(read_events(), read_stderr()), self.timeout + 30)
            await proc.wait()
        except (TimeoutError, asyncio.CancelledError):
            proc.kill()
            await proc.wait()
            raise JobFailed("timeout", f"packaging took longer than {self.timeout:.0f} s",
                            False) from None
        if "error" in outcome:
            raise JobFailed(outcome["error"]["reason"], outcome["error"]["message"], True)
        if proc.returncode != 0 or "result" not in outcome:
            tail = stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise JobFailed("packager_crashed", f"exit status {proc.returncode}: {tail[0]}", False)
        return outcome["result"]


async def run_worker(control_url: str, store_spec: str, token: str, stop: asyncio.Event, *,
                     job_timeout: float = 3600.0, idle_wait: float = 1.0, processes: int = 1) -> None:
    """Claim and run jobs one at a time until `stop` is set."""
    name = f"{socket.gethostname()}-{os.getpid()}"
    store = open_store(store_spec)
    async with store, aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
        control = ControlClient(http, control_url, token)
        log.info("worker started", extra=fields(worker=name, control=control_url))
        while not stop.is_set():
            try:
                job = await control.claim(name)
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning("claim failed", extra=fields(error=str(exc)))
                job = None
            if job is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), idle_wait)
                continue
            log.info("job claimed", extra=fields(job=job.id, video=job.video_id))
            runner = asyncio.create_task(
                JobRunner(control, store, store_spec, job, job_timeout, processes).run())
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait([runner, stopper], return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if not runner.done():
                runner.cancel()  # kills the child; the lease expires and another worker retries
            try:
                await runner
            except (LeaseLost, asyncio.CancelledError):
                log.warning("job abandoned", extra=fields(job=job.id))
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning("job report failed", extra=fields(job=job.id, error=str(exc)))
