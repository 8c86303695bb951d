"""Fill a running stack with N videos for load tests, fast, over HTTP only.

One small generated clip is uploaded through control (multipart) and packaged by a worker like any
upload; once it is ready, an admin asks control to copy it N-1 times
(`POST /api/v1/videos/{id}/copies`, 100 a request): the store copies the objects (a directory
store hard-links them), each copy gets its own title and tags, so search has variety and every
copy has its own URLs, and so its own cache entries on the edges. Thousands of videos take
seconds, not thousands of packaging jobs.

    python -m loadtest.seed --videos 2000            # against `reel up` (./reel-data)
    python -m loadtest.seed --control URL --token-file FILE --videos N --catalog FILE

Viewers who signed in before the test, as a real app's viewers did (their token kept): an admin
asks control for N accounts each with a session (`POST /api/v1/admin/viewers`, 500 a request; no
password hashing), and the API suite's signed-in users use these tokens. Sign-ups, and their
password hashing, belong to the creators suite.

Writes the catalog file the suites read (--catalog):
{"control": URL, "videos": [ids], "viewers": [bearer tokens]}.
The admin token: `reel up` writes one to DATA/admin-token; elsewhere sign in as an account listed
in `reel control --admin-email` and pass its bearer token (--token or REEL_ADMIN_TOKEN).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import requests

from loadtest.clip import make_clip
from loadtest.popularity import WORDS

BATCH = 100  # copies per request (control's limit)
VIEWER_BATCH = 500  # signed-in viewers per request (control's limit)
TIMEOUT = 60.0
READY_TIMEOUT = 600.0


class SeedError(Exception):
    pass


class Shown:
    """Seeding's progress on stderr: a bar per step on a terminal (rich), else a line per step
    and then one every few seconds."""

    def __init__(self, every: float = 5.0) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

        self.terminal = sys.stderr.isatty()
        self.bars = Progress(TextColumn("{task.description:<18}"), BarColumn(), TaskProgressColumn(),
                             TimeRemainingColumn(), console=Console(stderr=True),
                             disable=not self.terminal)
        self.every, self._said = every, float("-inf")
        self.bars.start()

    def step(self, name: str, total: float) -> int:
        if not self.terminal:
            print(f"seed: {name}", file=sys.stderr, flush=True)
        return self.bars.add_task(name, total=total)

    def update(self, task: int, done: float) -> None:
        self.bars.update(task, completed=done)
        finished = done >= (self.bars.tasks[task].total or 0)
        if not self.terminal and (finished or time.monotonic() - self._said >= self.every):
            self._said = time.monotonic()
            total = self.bars.tasks[task].total or 1
            print(f"seed: {self.bars.tasks[task].description} {100 * done / total:.0f}%",
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        self.bars.stop()


def _check(resp: requests.Response, *ok: int) -> requests.Response:
    if resp.status_code not in ok:
        raise SeedError(f"{resp.request.method} {resp.url}: HTTP {resp.status_code} {resp.text[:300]}")
    return resp


def upload_source(http: requests.Session, control: str, seconds: float, shown: Shown) -> str:
    clip = make_clip(seconds, tone=random.randrange(200, 2000))  # a new tone: never a duplicate
    resp = _check(http.post(f"{control}/api/v1/videos", timeout=TIMEOUT,
                            data={"title": "loadtest source", "tags": "loadtest"},
                            files={"file": ("loadtest.mp4", clip, "video/mp4")}), 200, 202)
    video = resp.json()["video"]
    deadline = time.monotonic() + READY_TIMEOUT
    task = shown.step("packaging source", 1.0)
    while video["state"] != "ready":
        if progress := video.get("progress"):
            shown.update(task, progress["done"] / max(1, progress["total"]))
        if video["state"] == "failed":
            raise SeedError(f"the source clip failed to package: {video['reason']}")
        if time.monotonic() > deadline:
            raise SeedError(f"video {video['id']} not ready after {READY_TIMEOUT:.0f} s: "
                            "is a worker running?")
        time.sleep(0.5)
        video = _check(http.get(f"{control}/api/v1/videos/{video['id']}", timeout=TIMEOUT), 200).json()
    shown.update(task, 1.0)
    return video["id"]


def copies(http: requests.Session, control: str, source: str, count: int,
           rng: random.Random, shown: Shown) -> list[str]:
    made: list[str] = []
    task = shown.step("copying", count)
    while len(made) < count:
        batch = [{"title": f"{rng.choice(WORDS).title()} {rng.choice(WORDS)} #{len(made) + i + 1}",
                  "tags": rng.sample(WORDS, 3), "description": f"A load-test video about "
                                                               f"{rng.choice(WORDS)}."}
                 for i in range(min(BATCH, count - len(made)))]
        resp = _check(http.post(f"{control}/api/v1/videos/{source}/copies", json={"copies": batch},
                                timeout=TIMEOUT), 201)
        made += [v["id"] for v in resp.json()["items"]]
        shown.update(task, len(made))
    return made


def signed_in_viewers(http: requests.Session, control: str, count: int, shown: Shown) -> list[str]:
    tokens: list[str] = []
    task = shown.step("signing viewers in", count)
    while len(tokens) < count:
        resp = _check(http.post(f"{control}/api/v1/admin/viewers", timeout=TIMEOUT,
                                json={"count": min(VIEWER_BATCH, count - len(tokens))}), 201)
        tokens += [s["token"] for s in resp.json()["items"]]
        shown.update(task, len(tokens))
    return tokens


def seed(control: str, token: str, videos: int, source: str | None = None,
         clip_seconds: float = 12.0, viewers: int = 0) -> tuple[list[str], list[str]]:
    """`videos` ready videos (the source first) and `viewers` signed-in viewers: their ids and
    bearer tokens."""
    shown = Shown()
    with requests.Session() as http:
        http.headers["Authorization"] = f"Bearer {token}"
        me = _check(http.get(f"{control}/api/v1/me", timeout=TIMEOUT), 200).json()
        if not me.get("is_admin"):
            raise SeedError(f"{me.get('email')} is not an admin: copies need an admin token")
        try:
            source = source or upload_source(http, control, clip_seconds, shown)
            ids = [source, *copies(http, control, source, videos - 1, random.Random(), shown)]
            return ids, signed_in_viewers(http, control, viewers, shown) if viewers else []
        finally:
            shown.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reel loadtest seed", description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=100, help="how many videos the catalog holds")
    parser.add_argument("--data", type=Path, default=Path("reel-data"), help="`reel up`'s data directory")
    parser.add_argument("--control", default=os.environ.get("REEL_LOADTEST_CONTROL", "http://127.0.0.1:8401"))
    parser.add_argument("--token", default=os.environ.get("REEL_ADMIN_TOKEN"), help="admin bearer token")
    parser.add_argument("--token-file", type=Path, default=None, help="default: DATA/admin-token")
    parser.add_argument("--catalog", type=Path, default=None, help="default: DATA/loadtest-catalog.json")
    parser.add_argument("--viewers", type=int, default=200,
                        help="signed-in viewers the API suite uses (their bearer tokens)")
    parser.add_argument("--source", default=None, help="copy this ready video instead of uploading a clip")
    parser.add_argument("--clip-seconds", type=float, default=12.0, help="length of the uploaded clip")
    args = parser.parse_args(argv)
    if args.videos < 1:
        parser.error("--videos must be at least 1")
    if args.viewers < 0:
        parser.error("--viewers must be 0 or more")
    token = args.token
    if not token:
        token_file = args.token_file or args.data / "admin-token"
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            parser.error(f"no admin token: {exc}; give --token, --token-file or run `reel up`")
    catalog = args.catalog or args.data / "loadtest-catalog.json"
    control = args.control.rstrip("/")
    started = time.monotonic()
    try:
        ids, viewers = seed(control, token, args.videos, args.source, args.clip_seconds, args.viewers)
    except (SeedError, requests.RequestException) as exc:
        print(f"reel loadtest seed: {exc}", file=sys.stderr)
        return 1
    catalog.parent.mkdir(parents=True, exist_ok=True)
    catalog.write_text(json.dumps({"control": control, "videos": ids, "viewers": viewers}, indent=0))
    catalog.chmod(0o600)  # it holds bearer tokens
    took = time.monotonic() - started
    print(f"seeded {len(ids)} videos and {len(viewers)} signed-in viewers in {took:.1f} s; "
          f"catalog {catalog}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
