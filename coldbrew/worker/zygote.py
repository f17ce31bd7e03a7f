"""The zygote: a process that has imported the heavy modules once and forks workers on request.

A cold start then skips interpreter start-up and imports (a second or more for scikit-learn) and
pays only for ``fork`` and loading the model. The zygote must stay single-threaded: a fork copies
only the calling thread, so locks held by any other thread would stay locked in the child. It
therefore pins BLAS/OpenMP pools to one thread *before* numpy loads (fresh workers get the same
settings, so both kinds behave alike) and turns off the threads other libraries are known to start
at import (:data:`QUIET_ENV`: pyarrow's jemalloc, which pandas and so scikit-learn import when
installed). It checks its threads after each preload module: one whose import still started a
thread is left out, the zygote starts again without it (``exec``, same pid and status pipe) and
reports it (``WorkerStatus.left_out``: the module, the threads, what its import costs each worker),
so the supervisor can say so loudly instead of losing the zygote (issue 18). It checks again
before every fork and refuses (then exits, to be restarted) if a thread has appeared since.

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
import importlib.abc
import importlib.machinery
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from types import ModuleType
from typing import NoReturn

from pydantic import TypeAdapter, ValidationError

from coldbrew.worker.messages import ForkReply, LeftOutModule, TemplateStart, WorkerLaunch, WorkerStatus
from coldbrew.worker.sandbox import PR_SET_DUMPABLE, die_with_parent, prctl
from coldbrew.worker.threads import limit_threads, thread_count, thread_names

# Thread pools of numerical libraries, one thread each unless the caller chose otherwise.
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")

# Documented settings that stop a library from starting threads at import, applied before the
# preload (a value the operator set is kept, see ``quiet_threads``). pyarrow's bundled jemalloc
# starts a purging thread ("jemalloc_bg_thd") as libarrow loads, and pandas imports pyarrow, and
# scikit-learn imports pandas, whenever they are installed (the SageMaker SDK installs both):
# without this the scikit-learn zygote could not fork. JE_ARROW_MALLOC_CONF is jemalloc's
# MALLOC_CONF under Arrow's symbol prefix (Arrow's docs, "Environment variables"); with the
# background thread off jemalloc purges on the allocating threads instead, which changes no result.
QUIET_ENV: dict[str, tuple[str, str]] = {
    "JE_ARROW_MALLOC_CONF": ("background_thread", "false"),
}

DEFAULT_PRELOAD = ("numpy", "joblib")
# What every worker imports, so the child does not pay for it either.
WORKER_MODULES = (
    "coldbrew.worker.main",
    "coldbrew.worker.messages",
    "coldbrew.worker.handlers",
    "coldbrew.worker.app",
    "coldbrew.worker.server",
    "coldbrew.worker.protocol",
    "coldbrew.worker.template",
    "coldbrew.worker.codecs",
    "coldbrew.worker.frameworks.sklearn",
    "uvloop",
    "concurrent.futures",
)

log = logging.getLogger("coldbrew.zygote")


def quiet_threads(environ: dict[str, str] | os._Environ[str]) -> None:
    """Apply :data:`QUIET_ENV` to ``environ``: add each option unless the operator set it."""
    for name, (option, value) in QUIET_ENV.items():
        current = environ.get(name, "")
        options = [o for o in current.split(",") if o]
        if any(o.split(":", 1)[0] == option for o in options):
            continue
        environ[name] = ",".join([*options, f"{option}:{value}"])


class _ThreadWatch(importlib.abc.MetaPathFinder):
    """Notes the module whose import was under way when a thread appeared (installed only during
    the preload): each import begins with a ``find_spec`` here, so the first one that sees a new
    thread names the module begun just before it (an extension whose library started it)."""

    def __init__(self) -> None:
        self.last: str | None = None
        self.culprit: str | None = None

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if self.culprit is None and thread_count() > 1:
            self.culprit = self.last
        self.last = fullname
        return None  # the other finders find it

    def finish(self) -> str | None:
        if self.culprit is None and thread_count() > 1:
            self.culprit = self.last
        return self.culprit


def preload(modules: list[str]) -> tuple[list[str], LeftOutModule | None]:
    """Import what can be imported, in order (``module:function`` also calls the function: a
    warm-up); a missing optional framework is not the zygote's failure. Stops at the first module
    whose import leaves a thread behind, and returns it with what was loaded before it (the
    zygote then starts again without it)."""
    loaded: list[str] = []
    for name in modules:
        watch = _ThreadWatch()
        sys.meta_path.insert(0, watch)
        started = time.perf_counter()
        try:
            module, _, function = name.partition(":")
            imported = importlib.import_module(module)
            if function:
                getattr(imported, function)()
        except ImportError as exc:
            log.info("zygote: not preloading %s: %s", name, exc)
            continue
        finally:
            sys.meta_path.remove(watch)
        if thread_count() > 1:
            return loaded, LeftOutModule(
                module=name,
                threads=thread_names(),
                started_by=watch.finish(),
                import_ms=round((time.perf_counter() - started) * 1000, 1),
            )
        loaded.append(name)
    return loaded, None


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
    limit_threads(launch.env.get("OMP_NUM_THREADS"))
    run_worker(launch, status_fd)


def _handle(conn: socket.socket, listener: socket.socket) -> bool:
    """Fork a worker (or a model template) for the request on ``conn``; False if the zygote must
    stop (it has threads)."""
    # A worker's status pipe, then optionally its stdout/stderr (a pipe to the log collector); a
    # template's channel before those.
    message, fds, _flags, _addr = socket.recv_fds(conn, 1 << 20, 3)
    try:
        request = _REQUEST.validate_json(message)
    except ValidationError as exc:
        for fd in fds:
            os.close(fd)
        conn.sendall(ForkReply(error=f"bad request: {exc}").encoded())
        return True
    expected = (2, 3) if isinstance(request, TemplateStart) else (1, 2)
    if len(fds) not in expected:
        for fd in fds:
            os.close(fd)
        error = f"expected {' or '.join(map(str, expected))} file descriptors"
        conn.sendall(ForkReply(error=error).encoded())
        return True
    if thread_count() != 1:
        # Nothing the zygote runs after its preload starts one, but a fork now would copy a
        # process whose other threads may hold locks: refuse, and exit so a new one is started.
        for fd in fds:
            os.close(fd)
        names = ", ".join(thread_names()) or "unnamed"
        error = f"the zygote has started threads since its preload ({names}); it exits to be restarted"
        log.error("zygote: %s", error)
        conn.sendall(ForkReply(error=error).encoded())
        return False
    pid = os.fork()
    if pid == 0:
        try:
            listener.close()
            conn.close()
            if isinstance(request, TemplateStart):
                from coldbrew.worker.template import run_template

                run_template(request, fds[0], fds[1], fds[2] if len(fds) == 3 else None)
            _child(request, fds[0], fds[1] if len(fds) == 2 else None)
        finally:
            os._exit(1)
    for fd in fds:
        os.close(fd)
    conn.sendall(ForkReply(pid=pid).encoded())
    return True


_REQUEST: TypeAdapter[WorkerLaunch | TemplateStart] = TypeAdapter(WorkerLaunch | TemplateStart)


def serve_zygote(
    socket_path: str, modules: list[str], status_fd: int, left_out: Sequence[LeftOutModule] = ()
) -> NoReturn:
    code = 1
    try:
        code = _serve(socket_path, modules, status_fd, list(left_out))
    except BaseException:
        log.exception("zygote crashed")
    finally:
        os._exit(code)


def _serve(socket_path: str, modules: list[str], status_fd: int, left_out: list[LeftOutModule]) -> int:
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
    quiet_threads(os.environ)
    started = time.perf_counter()
    skip = {m.module for m in left_out}
    wanted = [m for m in dict.fromkeys([*modules, *WORKER_MODULES]) if m not in skip]
    loaded, offender = preload(wanted)
    if offender is not None:
        _restart_without(socket_path, modules, status_fd, [*left_out, offender])
    threads = thread_count()
    if threads != 1:
        names = ", ".join(thread_names())
        error = f"the zygote holds {threads} threads after its imports ({names}): it cannot fork safely"
        os.write(status_fd, WorkerStatus(ready=False, error=error, left_out=left_out or None).line())
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
        left_out=left_out or None,
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
                if not _handle(conn, listener):
                    stopping.append(True)
            except OSError as exc:
                log.warning("zygote: request failed: %s", exc)
    listener.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket_path)
    return 0


def _restart_without(
    socket_path: str, modules: list[str], status_fd: int, left_out: list[LeftOutModule]
) -> NoReturn:
    """Start this zygote again, as the same process, without the modules in ``left_out``: the
    threads their import started cannot be stopped, only never started."""
    skip = {m.module for m in left_out}
    log.warning(
        "zygote: importing %s started threads (%s, in %s); starting again without it",
        left_out[-1].module,
        ", ".join(left_out[-1].threads),
        left_out[-1].started_by,
    )
    os.set_inheritable(status_fd, True)
    argv = [
        sys.executable,
        "-m",
        "coldbrew.worker.zygote",
        "--socket",
        socket_path,
        "--status-fd",
        str(status_fd),
        "--preload",
        ",".join(m for m in modules if m not in skip),
        "--left-out",
        _LEFT_OUT.dump_json(left_out).decode(),
    ]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)


_LEFT_OUT = TypeAdapter(list[LeftOutModule])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m coldbrew.worker.zygote")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--status-fd", type=int, required=True)
    parser.add_argument("--preload", default=",".join(DEFAULT_PRELOAD), help="comma-separated modules")
    parser.add_argument("--left-out", default="[]", help="JSON: modules an earlier start left out")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s [zygote %(process)d] %(message)s"
    )
    left_out = _LEFT_OUT.validate_json(args.left_out)
    skip = {m.module for m in left_out}
    modules = [m for m in args.preload.split(",") if m and m not in skip]
    serve_zygote(args.socket, modules, args.status_fd, left_out)


if __name__ == "__main__":
    main()
