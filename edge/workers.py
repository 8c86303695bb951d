"""`reel edge --workers N`: N edge processes on one port (SO_REUSEPORT), by default one per core.

Each worker is a whole edge with its own cache (so a hot object is cached once per worker) and
its own upstream pool; they share no memory and no lock, and a crash takes one worker. They talk
over private loopback sockets, one per worker: every key has an owner worker, and the others
fetch a missing key from its owner rather than from the origin (Settings.owner), so a burst for a
cold object makes one origin fetch per edge and its waiters are fed from every core. A purge
received by any worker is relayed to the others, and /metrics on any worker sums all of them.

The supervisor forks the workers before any event loop exists, forwards SIGTERM and SIGINT to
them, and replaces a worker that dies after running a while; a worker that dies at once (the port
is taken, say) stops them all.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable

from aiohttp import web

from edge.server import serve
from reel.logs import fields

log = logging.getLogger("reel.edge.workers")

STEADY = 5.0  # seconds a worker must have run to be restarted rather than stop everything
KILL_AFTER = 15.0  # seconds workers get to finish after SIGTERM


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def run(
    build: Callable[..., web.Application],
    host: str,
    port: int,
    workers: int = 1,
    access_log: bool = False,
) -> int:
    """Serve `build(workers=URLS, worker=INDEX)` (the workers' private URLs, and which one this
    is: edge.node.Settings) in each worker until told to stop; with one worker, `build()`."""
    if workers <= 1:
        serve(build(), host, port, access_log=access_log)
        return 0
    privates = []
    for _ in range(workers):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(1024)
        privates.append(sock)
    urls = [f"http://127.0.0.1:{sock.getsockname()[1]}" for sock in privates]

    supervisor = os.getpid()

    def start(index: int) -> int:
        pid = os.fork()
        if pid:
            return pid
        code = 1
        try:
            for other, sock in enumerate(privates):
                if other != index:
                    sock.close()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            _stop_with_supervisor(supervisor)
            serve(build(workers=tuple(urls), worker=index), host, port, reuse_port=True,
                  sockets=(privates[index],), access_log=access_log)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
            if not isinstance(exc.code, int | None):
                print(f"reel edge: {exc.code}", flush=True)
        except BaseException:
            log.exception("worker failed", extra=fields(worker=index))
        finally:
            os._exit(code)

    children = {start(index): (index, time.monotonic()) for index in range(workers)}
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            _kill(pid, signal.SIGTERM)
        signal.signal(signal.SIGALRM, lambda *_: [_kill(pid, signal.SIGKILL) for pid in children])
        signal.alarm(int(KILL_AFTER))

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("workers started", extra=fields(workers=workers, url=f"http://{host}:{port}"))
    status = 0
    while children:
        try:
            pid, wait_status = os.wait()
        except ChildProcessError:
            break
        index, started = children.pop(pid, (None, 0.0))
        if index is None or stopping:
            continue
        code = os.waitstatus_to_exitcode(wait_status)
        if time.monotonic() - started < STEADY:
            log.error("worker died at start; stopping", extra=fields(worker=index, code=code))
            status = code or 1
            stop(signal.SIGTERM, None)
            continue
        log.error("worker died; replacing it", extra=fields(worker=index, code=code))
        children[start(index)] = (index, time.monotonic())
    signal.alarm(0)
    return status


def _stop_with_supervisor(supervisor: int) -> None:
    """A worker gets SIGTERM when the supervisor dies, even by SIGKILL, so a killed edge does not
    leave its workers serving the port (Linux: PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != supervisor:  # it died before the call above took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
