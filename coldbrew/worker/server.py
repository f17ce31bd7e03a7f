"""The worker's event loop: listen on a socket we bound, serve, and stop on SIGTERM or orphaning."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from concurrent.futures import Executor

from coldbrew.worker.app import WorkerApp
from coldbrew.worker.protocol import ServerState, connection_factory

logger = logging.getLogger(__name__)

# SIGTERM normally comes when the worker is idle; an in-flight request gets this long to finish.
GRACEFUL_SHUTDOWN_S = 1.0

# How often to check that the parent is still alive.
PARENT_CHECK_S = 0.5


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
    try:
        if not on_ready():
            return
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), PARENT_CHECK_S)
            except TimeoutError:
                # Polled rather than PR_SET_PDEATHSIG: that signal fires when the *thread* that
                # forked us exits, which would kill workers a gateway spawned from a pool thread.
                if os.getppid() != parent_pid:
                    logger.warning("parent process %d is gone; shutting down", parent_pid)
                    break
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        await _shutdown(server, state)


async def _shutdown(server: asyncio.Server, state: ServerState) -> None:
    """Stop accepting, close idle connections, give in-flight requests a grace period."""
    server.close()
    state.shutting_down = True  # busy connections close after their response
    deadline = time.monotonic() + GRACEFUL_SHUTDOWN_S
    while True:
        for connection in list(state.connections):
            if connection.idle():
                connection.close()
        if not state.connections or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.01)
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
