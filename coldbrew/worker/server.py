"""The worker's event loop: listen on a socket we bound, serve, and stop on SIGTERM or orphaning."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import warnings
from collections.abc import Callable
from concurrent.futures import Executor

from coldbrew.worker.app import WorkerApp
from coldbrew.worker.protocol import ServerState, connection_factory

logger = logging.getLogger(__name__)

# SIGTERM normally comes when the worker is idle; an in-flight request gets this long to finish.
GRACEFUL_SHUTDOWN_S = 1.0
ORPHANED_SHUTDOWN_S = 3600.0
"""When the parent (a zygote) dies, requests in flight may take this long: the gateway, if it still
runs, routes nothing new here and waits for them; if it is gone too, so are its connections, and
the worker stops at once. A SIGTERM meanwhile cuts the wait to ``GRACEFUL_SHUTDOWN_S``."""


def serve(
    app: WorkerApp,
    sock: socket.socket,
    on_ready: Callable[[], bool],
    parent_pid: int,
    executor: Executor | None = None,
    runner: asyncio.Runner | None = None,
) -> None:
    """Serve ``app`` on the bound, listening ``sock`` until SIGTERM or the parent's death.

    ``on_ready`` runs once connections are being accepted; if it returns False (nobody reads
    the status line any more) the server stops at once. ``runner``, from :func:`prepared_runner`,
    is one made before the listener was known (a template's spare); it is closed here.
    """
    with runner or asyncio.Runner(loop_factory=_loop_factory()) as running:
        running.run(_serve(app, sock, on_ready, parent_pid, executor))


def prepared_runner() -> asyncio.Runner:
    """An entered runner whose loop has run once: what serve() would otherwise build after the
    listener is known (~1.5 ms in a process forked from a template: the loop's creation, its
    first run, the copy-on-write faults of both). Only for a process that never forks again: the
    loop holds file descriptors (and uvloop's signal wake-up) a fork would share."""
    runner = asyncio.Runner(loop_factory=_loop_factory())
    runner.__enter__()
    runner.run(asyncio.sleep(0))
    return runner


REHEARSAL_TIMEOUT_S = 5.0


def rehearse(runner: asyncio.Runner, app: WorkerApp, body: bytes) -> bool:
    """Send ``app`` one CSV request, ``body``, over a socket pair on ``runner``'s loop, through
    the same protocol a real connection takes, and drop the answer; whether it was a 200.

    For a process that will serve and has not yet (a template's spare): its first real request
    then finds the code and data of the whole path paged in and copied-on-write, and every
    first-call cache filled (scikit-learn reads all installed packages' entry points once per
    process): ~4 ms of the random forest's first invoke (bench/coldstart.py). Warnings are
    silenced and forgotten afterwards, so the first real request still shows the user each one.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return runner.run(asyncio.wait_for(_rehearse(app, body), REHEARSAL_TIMEOUT_S))
        except (OSError, TimeoutError):
            logger.debug("the warm-up request failed", exc_info=True)
            return False


async def _rehearse(app: WorkerApp, body: bytes) -> bool:
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    try:
        ours.setblocking(False)
        await loop.connect_accepted_socket(connection_factory(app, None, ServerState()), theirs)
        await loop.sock_sendall(
            ours,
            b"POST /invocations HTTP/1.1\r\nHost: worker\r\nContent-Type: text/csv\r\n"
            b"Accept: application/json\r\nX-Amzn-RequestId: warm-up\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body),
        )
        answer = b""
        while chunk := await loop.sock_recv(ours, 1 << 16):
            answer += chunk  # the worker closes after answering: the request said so
        return answer.startswith(b"HTTP/1.1 200 ")
    finally:
        ours.close()


async def _serve(
    app: WorkerApp,
    sock: socket.socket,
    on_ready: Callable[[], bool],
    parent_pid: int,
    executor: Executor | None,
) -> None:
    loop = asyncio.get_running_loop()
    state = ServerState()
    stop = asyncio.Event()
    factory = connection_factory(app, executor, state)
    if sock.family == socket.AF_UNIX:
        server = await loop.create_unix_server(factory, sock=sock)
    else:
        server = await loop.create_server(factory, sock=sock)
    terminated = asyncio.Event()

    def on_sigterm() -> None:
        terminated.set()
        stop.set()

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    unwatch: Callable[[], None] | None = None
    try:
        if not on_ready():
            return
        unwatch = _stop_when_parent_exits(loop, parent_pid, stop)
        await stop.wait()
    finally:
        if unwatch is not None:
            unwatch()
        grace_s = GRACEFUL_SHUTDOWN_S if terminated.is_set() else ORPHANED_SHUTDOWN_S
        try:
            await _shutdown(server, state, grace_s, terminated)
        finally:
            loop.remove_signal_handler(signal.SIGTERM)


def _stop_when_parent_exits(
    loop: asyncio.AbstractEventLoop, parent_pid: int, stop: asyncio.Event
) -> Callable[[], None]:
    """Set ``stop`` once the parent exits (it becomes readable through a pidfd); returns the
    function that stops watching.

    Not PR_SET_PDEATHSIG: that signal fires when the *thread* that forked us exits, which would
    kill workers a gateway spawned from a pool thread.
    """

    def gone() -> None:
        logger.warning("parent process %d is gone; shutting down", parent_pid)
        stop.set()

    try:
        pidfd = os.pidfd_open(parent_pid)
    except ProcessLookupError:
        gone()
        return lambda: None
    # A child is adopted when its parent exits, so while it is still ours the pidfd is of our
    # parent, not of a process that took its pid later.
    if os.getppid() != parent_pid:
        os.close(pidfd)
        gone()
        return lambda: None

    def readable() -> None:
        loop.remove_reader(pidfd)  # it stays readable: one report is enough
        gone()

    def unwatch() -> None:
        loop.remove_reader(pidfd)
        os.close(pidfd)

    loop.add_reader(pidfd, readable)
    return unwatch


async def _shutdown(
    server: asyncio.Server, state: ServerState, grace_s: float, terminated: asyncio.Event
) -> None:
    """Stop accepting, close idle connections, give in-flight requests ``grace_s`` (cut to
    ``GRACEFUL_SHUTDOWN_S`` from a SIGTERM on)."""
    server.close()
    state.shutting_down = True  # busy connections close after their response
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_s
    cut = False
    while True:
        state.connection_lost.clear()
        for connection in list(state.connections):
            if connection.idle():
                connection.close()
        if terminated.is_set() and not cut:
            cut = True
            deadline = min(deadline, loop.time() + GRACEFUL_SHUTDOWN_S)
        remaining = deadline - loop.time()
        if not state.connections or remaining <= 0:
            break
        waits = {asyncio.ensure_future(state.connection_lost.wait())}
        if not cut:
            waits.add(asyncio.ensure_future(terminated.wait()))
        try:
            await asyncio.wait(waits, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
    for connection in list(state.connections):
        connection.close()
    for task in list(state.tasks):
        task.cancel()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop
