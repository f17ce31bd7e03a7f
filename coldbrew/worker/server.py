"""The worker's event loop: listen on a socket we bound, serve, and stop on SIGTERM or orphaning."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable
from concurrent.futures import Executor

from coldbrew.worker.app import WorkerApp
from coldbrew.worker.protocol import ServerState, connection_factory

logger = logging.getLogger(__name__)

# SIGTERM normally comes when the worker is idle; an in-flight request gets this long to finish.
GRACEFUL_SHUTDOWN_S = 1.0


def serve(
    app: WorkerApp,
    sock: socket.socket,
    on_ready: Callable[[], bool],
    parent_pid: int,
    executor: Executor | None = None,
) -> None:
    """Serve ``app`` on the bound, listening ``sock`` until SIGTERM or the parent's death.

    ``on_ready`` runs once connections are being accepted; if it returns False (nobody reads
    the status line any more) the server stops at once.
    """
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(_serve(app, sock, on_ready, parent_pid, executor))


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
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    unwatch: Callable[[], None] | None = None
    try:
        if not on_ready():
            return
        unwatch = _stop_when_parent_exits(loop, parent_pid, stop)
        await stop.wait()
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        if unwatch is not None:
            unwatch()
        await _shutdown(server, state)


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


async def _shutdown(server: asyncio.Server, state: ServerState) -> None:
    """Stop accepting, close idle connections, give in-flight requests a grace period."""
    server.close()
    state.shutting_down = True  # busy connections close after their response
    loop = asyncio.get_running_loop()
    deadline = loop.time() + GRACEFUL_SHUTDOWN_S
    while True:
        state.connection_lost.clear()
        for connection in list(state.connections):
            if connection.idle():
                connection.close()
        remaining = deadline - loop.time()
        if not state.connections or remaining <= 0:
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.connection_lost.wait(), remaining)
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
