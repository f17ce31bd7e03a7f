"""The zygote: a process that has imported the heavy modules once and forks workers on request.

A cold start then skips interpreter start-up and imports (a second or more for scikit-learn) and
pays only for ``fork`` and loading the model. The zygote must stay single-threaded: a fork copies
only the calling thread, so locks held by any other thread would stay locked in the child. It
therefore pins BLAS/OpenMP pools to one thread *before* numpy loads (fresh workers get the same
settings, so both kinds behave alike) and checks that it holds no other thread before serving.

Protocol, over a Unix stream socket, one request per connection: the gateway sends a
:class:`~coldbrew.worker.messages.WorkerLaunch` with the worker's status pipe attached
(SCM_RIGHTS), and optionally the pipe its stdout and stderr go to (its log stream); the zygote
forks, the child runs :func:`coldbrew.worker.main.run_worker` with that pipe, and the zygote
answers with a :class:`~coldbrew.worker.messages.ForkReply`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import signal
import socket
import sys
import time
from typing import NoReturn

from pydantic import ValidationError

from coldbrew.worker.messages import ForkReply, WorkerLaunch, WorkerStatus
from coldbrew.worker.sandbox import PR_SET_DUMPABLE, die_with_parent, prctl

# Thread pools of numerical libraries, one thread each unless the caller chose otherwise.
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")

DEFAULT_PRELOAD = ("numpy", "joblib")
# What every worker imports, so the child does not pay for it either.
WORKER_MODULES = (
    "coldbrew.worker.main",
    "coldbrew.worker.messages",
    "coldbrew.worker.handlers",
    "coldbrew.worker.app",
    "coldbrew.worker.server",
    "coldbrew.worker.protocol",
    "coldbrew.worker.codecs",
    "coldbrew.worker.frameworks.sklearn",
    "uvloop",
    "concurrent.futures",
)

log = logging.getLogger("coldbrew.zygote")


def thread_count() -> int:
    """Threads of this process as the kernel sees them (not only Python's)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        import threading

        return threading.active_count()


def preload(modules: list[str]) -> list[str]:
    """Import what can be imported; a missing optional framework is not the zygote's failure."""
    loaded = []
    for name in modules:
        try:
            importlib.import_module(name)
            loaded.append(name)
        except ImportError as exc:
            log.info("zygote: not preloading %s: %s", name, exc)
    return loaded


def _child(launch: WorkerLaunch, status_fd: int, output_fd: int | None) -> NoReturn:
    from coldbrew.worker.main import run_worker

    if output_fd is not None:
        # The environment's own stdout and stderr (its log stream), before anything is written.
        os.dup2(output_fd, 1)
        os.dup2(output_fd, 2)
        os.close(output_fd)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    # The worker sets up its own log format (the zygote's would label it as the zygote).
    logging.getLogger().handlers.clear()
    # Every worker draws its own random numbers, as a freshly started one would.
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    _limit_threads(launch.env.get("OMP_NUM_THREADS"))
    run_worker(launch, status_fd)


def _limit_threads(threads: str | None) -> None:
    """The zygote loaded BLAS with one thread; give this worker the count its memory size buys
    (a fresh worker gets it from the environment before the libraries load)."""
    if not threads or not threads.isdigit() or int(threads) <= 1:
        return
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(int(threads))
    except ImportError:
        pass
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(threads))


def _handle(conn: socket.socket, listener: socket.socket) -> None:
    # The status pipe, then optionally the worker's stdout/stderr (a pipe to the log collector).
    message, fds, _flags, _addr = socket.recv_fds(conn, 1 << 20, 2)
    if len(fds) not in (1, 2):
        for fd in fds:
            os.close(fd)
        conn.sendall(ForkReply(error="expected a status pipe and at most one output pipe").encoded())
        return
    try:
        launch = WorkerLaunch.model_validate_json(message)
    except ValidationError as exc:
        for fd in fds:
            os.close(fd)
        conn.sendall(ForkReply(error=f"bad request: {exc}").encoded())
        return
    pid = os.fork()
    if pid == 0:
        try:
            listener.close()
            conn.close()
            _child(launch, fds[0], fds[1] if len(fds) == 2 else None)
        finally:
            os._exit(1)
    for fd in fds:
        os.close(fd)
    conn.sendall(ForkReply(pid=pid).encoded())


def serve_zygote(socket_path: str, modules: list[str], status_fd: int) -> NoReturn:
    code = 1
    try:
        code = _serve(socket_path, modules, status_fd)
    except BaseException:
        log.exception("zygote crashed")
    finally:
        os._exit(code)


def _serve(socket_path: str, modules: list[str], status_fd: int) -> int:
    parent = os.getppid()
    # Gone with the gateway, SIGKILL included, rather than at its next look at its parent; and
    # not readable (/proc/<pid>/environ, memory) by workers that share its user.
    die_with_parent(signal.SIGKILL, parent)
    prctl(PR_SET_DUMPABLE, 0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Children are reaped by the kernel: the gateway follows them through pidfds, not waitpid.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    for name in THREAD_ENV:
        os.environ.setdefault(name, "1")
    started = time.perf_counter()
    loaded = preload([*modules, *WORKER_MODULES])
    threads = thread_count()
    if threads != 1:
        error = f"the zygote holds {threads} threads after its imports; forking it would not be safe"
        os.write(status_fd, WorkerStatus(ready=False, error=error).line())
        return 1
    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket_path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    os.chmod(socket_path, 0o600)
    listener.listen(64)
    listener.settimeout(0.5)
    status = WorkerStatus(
        ready=True,
        pid=os.getpid(),
        setup_ms=round((time.perf_counter() - started) * 1000, 1),
        modules=loaded,
    )
    os.write(status_fd, status.line())
    os.close(status_fd)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    while not stopping and os.getppid() == parent:
        try:
            conn, _ = listener.accept()
        except (TimeoutError, InterruptedError):
            continue
        with conn:
            conn.settimeout(5)
            try:
                _handle(conn, listener)
            except OSError as exc:
                log.warning("zygote: request failed: %s", exc)
    listener.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket_path)
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m coldbrew.worker.zygote")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--status-fd", type=int, required=True)
    parser.add_argument("--preload", default=",".join(DEFAULT_PRELOAD), help="comma-separated modules")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s [zygote %(process)d] %(message)s"
    )
    serve_zygote(args.socket, [m for m in args.preload.split(",") if m], args.status_fd)


if __name__ == "__main__":
    main()
