"""Run one aiohttp application until SIGINT/SIGTERM, on uvloop; stop with `reel up`."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable

import uvloop
from aiohttp import web

from reel.logs import AccessLogger

log = logging.getLogger("reel.service")

PARENT_ENV = "REEL_UP_PID"  # `reel up` tells each service it starts who started it


async def _serve(app: web.Application, host: str, port: int, reuse_port: bool,
                 sockets: tuple[socket.socket, ...]) -> None:
    runner = web.AppRunner(app, access_log_class=AccessLogger, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_port=reuse_port, backlog=1024)
    try:
        await site.start()
        for sock in sockets:
            await web.SockSite(runner, sock).start()
    except OSError as exc:
        await runner.cleanup()
        raise SystemExit(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    log.info("listening", extra={"fields": {"url": f"http://{host}:{port}"}})
    try:
        await _wait_for_signal()
    finally:
        await runner.cleanup()


async def _wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def serve(app: web.Application, host: str, port: int, reuse_port: bool = False,
          sockets: tuple[socket.socket, ...] = ()) -> None:
    """Serve `app` on host:port (and on `sockets`, already listening) until the process is told
    to stop."""
    uvloop.run(_serve(app, host, port, reuse_port, sockets))


def run_until_signal(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run a non-HTTP service (`main(stop)`) on uvloop; `stop` is set on SIGINT/SIGTERM."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    uvloop.run(runner())


def stop_with_parent() -> None:
    """A service `reel up` started gets SIGTERM when `reel up` dies, even by SIGKILL, so a killed
    stack never leaves its services running (Linux: PR_SET_PDEATHSIG; the signal comes when the
    thread that started us ends, which for `reel up` is its main thread)."""
    parent = os.environ.pop(PARENT_ENV, None)
    if parent is None or not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != int(parent):  # it died before the call above took effect
        os.kill(os.getpid(), signal.SIGTERM)
