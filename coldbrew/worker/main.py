"""The worker process: load a model, listen, report readiness on a pipe, serve until told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import io
import logging
import os
import signal
import socket
import stat
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

from coldbrew.worker.errors import ModelLoadError, one_line
from coldbrew.worker.messages import WorkerLaunch, WorkerStages, WorkerStatus
from coldbrew.worker.sandbox import SandboxError
from coldbrew.worker.sandbox import enter as enter_sandbox

if TYPE_CHECKING:
    from coldbrew.worker.app import WorkerApp
    from coldbrew.worker.handlers import InferenceHandler

logger = logging.getLogger("coldbrew.worker")

_BACKLOG = 128
_MAX_SOCKET_PATH = 107  # sun_path is 108 bytes on Linux, including the terminating NUL


def run_worker(launch: WorkerLaunch, status_fd: int) -> NoReturn:
    """Serve ``launch.model_dir`` until SIGTERM or the parent's death; never returns.

    Writes exactly one :class:`~coldbrew.worker.messages.WorkerStatus` line to ``status_fd`` and
    closes it: ready, with ``pid`` and ``setup_ms`` (plus ``port`` when listening on TCP), once
    requests can be served, or not ready with the ``error`` before exiting with status 1.

    Signals: SIGINT is ignored because the parent owns shutdown. A Ctrl+C in a terminal reaches
    every process in the foreground group; if workers died on it, in-flight requests would fail
    before the gateway could drain them. The gateway stops a worker with SIGTERM, which drains
    for up to a second and exits 0 (while the model is still loading, SIGTERM ends the process
    at once: there is nothing to drain).

    Safe to call in a freshly forked child of a process that has imported coldbrew (the zygote):
    everything with state (signal dispositions, the event loop, threads, the socket) is created
    here, and the process always leaves through ``os._exit`` so it never runs the parent's
    ``atexit`` handlers or returns into the parent's code.
    """
    code = 1
    try:
        code = _run(launch, status_fd)
    except BaseException:
        logger.exception("worker crashed")
    finally:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed stdout must not stop the exit
                stream.flush()
        os._exit(code)


def _run(launch: WorkerLaunch, status_fd: int) -> int:
    running = time.monotonic()
    reset_process(launch)
    parent_pid = os.getppid()
    try:
        loaded = load(launch, running)
        sock = _bind(launch)
    except ModelLoadError as exc:
        return _fail(status_fd, str(exc))
    except BaseException as exc:
        logger.error("worker setup failed", exc_info=exc)
        return _fail(status_fd, one_line(exc))
    return serve_loaded(launch, loaded, sock, status_fd, parent_pid)


@dataclass(frozen=True)
class Loaded:
    """A model loaded in this process, ready to be served (here, or by children forked from a
    template, :mod:`coldbrew.worker.template`)."""

    handler: InferenceHandler
    setup_ms: float
    running: float
    """``time.monotonic()`` at the process's first step, the model's load begun and ended."""
    loading: float
    loaded: float


def reset_process(launch: WorkerLaunch) -> None:
    """What a process forked from a zygote resets before anything else: signals, the running loop
    Python 3.11 keeps across fork, its niceness."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A forked child inherits the parent's Python handlers, which would act on the parent's
    # state; until the event loop installs ours, SIGTERM simply ends the process.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.version_info < (3, 12):
        # Python 3.11 keeps the parent's running loop across fork (3.12 resets it at fork), and
        # asyncio refuses to start a loop while one is marked running.
        asyncio.events._set_running_loop(None)
    if launch.nice:
        # Before any thread starts: Linux keeps a niceness per thread, and new ones inherit it.
        os.nice(launch.nice)


def load(launch: WorkerLaunch, running: float) -> Loaded:
    """Contain this process, configure it as the model's environment and load its handler.

    Raises ModelLoadError (or SandboxError, or whatever the user's code raised) if it cannot."""
    if launch.sandbox is not None:
        # Before anything of the model's is read: from here on it is contained.
        try:
            enter_sandbox(launch.sandbox)
        except SandboxError as exc:
            raise ModelLoadError(str(exc)) from None
    os.environ.update(launch.env)
    os.environ["SM_MODEL_DIR"] = launch.model_dir
    _apply_pythonpath(launch.env)
    _line_buffered_stdout()
    _configure_logging()
    _export_sagemaker_env(launch.model_dir)
    loading, started = time.monotonic(), time.perf_counter()
    from coldbrew.worker.handlers import load_handler

    handler = load_handler(launch.model_dir)
    setup_ms = (time.perf_counter() - started) * 1000
    loaded = time.monotonic()
    logger.info("loaded %s in %.1f ms", launch.model_dir, setup_ms)
    return Loaded(handler, setup_ms, running, loading, loaded)


def serve_loaded(
    launch: WorkerLaunch,
    loaded: Loaded,
    sock: socket.socket,
    status_fd: int,
    parent_pid: int,
    template_pid: int | None = None,
    prepared: Prepared | None = None,
) -> int:
    """Serve the loaded model on the bound ``sock``, report ready on ``status_fd``; the exit status.
    ``prepared``: what a spare made while it waited (:func:`prepare`), used rather than made now."""
    from concurrent.futures import ThreadPoolExecutor

    from coldbrew.worker.server import serve

    if prepared is None:
        from coldbrew.worker.app import WorkerApp

        app, runner = WorkerApp(loaded.handler), None
    else:
        app, runner = prepared.app, prepared.runner

    executor = None
    if launch.environment_concurrency > 1:
        # Created here, not at import: a zygote that forks us must not hold threads.
        executor = ThreadPoolExecutor(launch.environment_concurrency, thread_name_prefix="predict")
    status = WorkerStatus(
        ready=True,
        pid=os.getpid(),
        setup_ms=round(loaded.setup_ms, 3),
        port=sock.getsockname()[1] if launch.port is not None else None,
        template_pid=template_pid,
    )
    socket_id = _socket_identity(launch.socket_path)
    reported: list[bool] = []

    def on_ready() -> bool:
        stages = WorkerStages(
            running=loaded.running,
            loading=loaded.loading,
            loaded=loaded.loaded,
            listening=time.monotonic(),
            rehearsed=prepared is not None and prepared.rehearsed,
        )
        reported.append(_report(status_fd, status.model_copy(update={"stages": stages})))
        return reported[-1]

    try:
        serve(app, sock, on_ready, parent_pid, executor, runner)
    finally:
        if executor is not None:
            # Threads still predicting are abandoned: os._exit follows and must not wait for them.
            executor.shutdown(wait=False, cancel_futures=True)
        _remove_socket(launch.socket_path, socket_id)
    return 0 if reported == [True] else 1


@dataclass(frozen=True)
class Prepared:
    """What a process that will serve ``loaded`` made before it knew its listener."""

    app: WorkerApp
    runner: asyncio.Runner
    rehearsed: bool
    """Whether the app answered its handler's warm-up request with a 200."""


def prepare(loaded: Loaded) -> Prepared:
    """Make ahead, in a process that will serve ``loaded`` and never forks (a template's spare),
    what a cold start would otherwise make (or touch first) between its assignment and its first
    answer: the event loop, the ready status's encoding, the first request (the handler's warm-up
    request, when its model has one). Each is a first call in a freshly forked process, paying
    copy-on-write faults and one-time caches: bench/coldstart.py's breakdown, listen and
    first_invoke."""
    from coldbrew.worker.app import WorkerApp
    from coldbrew.worker.server import prepared_runner, rehearse

    app = WorkerApp(loaded.handler)
    runner = prepared_runner()
    body = loaded.handler.warm_up
    rehearsed = rehearse(runner, app, body) if body is not None else False
    stages = WorkerStages(running=0.0, loading=0.0, loaded=0.0, listening=0.0)
    WorkerStatus(ready=True, pid=os.getpid(), setup_ms=0.0).model_copy(update={"stages": stages}).line()
    return Prepared(app, runner, rehearsed)


def _apply_pythonpath(env: dict[str, str]) -> None:
    """Put the model's PYTHONPATH on sys.path, as a fresh interpreter would have.

    A worker forked from the zygote started its interpreter before it saw this model's
    environment. (Modules the zygote has already imported stay as they are: a model that must
    replace one of those needs a freshly started worker.) A fresh worker has them already, made
    absolute by its interpreter.
    """
    entries = [entry for entry in env.get("PYTHONPATH", "").split(os.pathsep) if entry]
    missing = [entry for entry in entries if entry not in sys.path and os.path.abspath(entry) not in sys.path]
    if missing:
        # After sys.path[0] (the script's or the working directory), where Python puts PYTHONPATH.
        sys.path[1:1] = missing
        importlib.invalidate_caches()


def _export_sagemaker_env(model_dir: str) -> None:
    """Set the variables SageMaker's containers set, unless the model's environment sets them."""
    from coldbrew.worker import container

    try:
        entry = container.entry_point(model_dir, os.environ)
    except ModelLoadError:
        return  # reported by load_handler, which resolves the entry point again
    for name, value in container.sagemaker_env(model_dir, entry).items():
        os.environ.setdefault(name, value)


def _line_buffered_stdout() -> None:
    """A model's print() reaches its log stream line by line, as in a terminal.

    The worker's stdout is a pipe (to the log collector, or the gateway's own output), which
    Python would otherwise block-buffer: lines printed while loading or predicting would show up
    kilobytes late, or be lost with a worker that is killed. stderr is line-buffered already.
    """
    if isinstance(sys.stdout, io.TextIOWrapper) and not sys.stdout.line_buffering:
        with contextlib.suppress(Exception):  # a closed or exotic stdout: leave it as it is
            sys.stdout.reconfigure(line_buffering=True)


def _configure_logging() -> None:
    # A zygote may have configured logging already; its handlers are inherited and kept.
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s [worker %(process)d] %(name)s: %(message)s")
        )
        root.addHandler(handler)
        root.setLevel(logging.INFO)
    # uvicorn narrates start-up and shutdown at INFO; per worker that is noise.
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)


def _bind(launch: WorkerLaunch) -> socket.socket:
    if launch.socket_path is not None:
        path = launch.socket_path
        if len(os.fsencode(path)) > _MAX_SOCKET_PATH:
            raise ModelLoadError(
                f"socket path {path} is longer than {_MAX_SOCKET_PATH} bytes: use a shorter one"
            )
        try:
            if stat.S_ISSOCK(os.stat(path).st_mode):
                os.unlink(path)  # left by a worker that was killed; a live one would own a fresh path
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            os.chmod(path, 0o600)  # only our own user may invoke the model
            sock.listen(_BACKLOG)
        except OSError as exc:
            sock.close()
            raise ModelLoadError(f"cannot listen on {path}: {exc.strerror or exc}") from exc
        return sock
    assert launch.port is not None
    family = socket.AF_INET6 if ":" in launch.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((launch.host, launch.port))
        sock.listen(_BACKLOG)
    except OSError as exc:
        sock.close()
        raise ModelLoadError(f"cannot listen on {launch.host}:{launch.port}: {exc.strerror or exc}") from exc
    return sock


def _report(status_fd: int, status: WorkerStatus) -> bool:
    """Write the status line and close the fd; False if the parent is no longer reading."""
    data = status.line()
    try:
        while data:
            data = data[os.write(status_fd, data) :]
        return True
    except OSError as exc:  # EPIPE: the parent died while we loaded
        logger.warning("cannot report status on fd %d: %s", status_fd, exc)
        return False
    finally:
        with contextlib.suppress(OSError):
            os.close(status_fd)


def _fail(status_fd: int, error: str) -> int:
    logger.error("worker not ready: %s", error)
    _report(status_fd, WorkerStatus(ready=False, error=error))
    return 1


def _socket_identity(path: str | None) -> tuple[int, int] | None:
    if path is None:
        return None
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _remove_socket(path: str | None, identity: tuple[int, int] | None) -> None:
    # Only our own file: a replacement worker may already be listening on the same path.
    if path is None or identity is None:
        return
    try:
        st = os.stat(path)
        if (st.st_dev, st.st_ino) == identity:
            os.unlink(path)
    except OSError:
        pass
