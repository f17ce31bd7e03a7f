"""A model template: a process, forked from its runtime's zygote, that loads one model once and
then forks that model's workers (issue 18: a cold start that does not load the model).

A cold start from the zygote forks a child that loads the model (12 ms of a 2 MB forest's 31 ms
cold start, 260 ms of MiniLM's 340). A template pays that once: every later worker of the same
launch (same model directory, environment, containment) is a fork of a process that has it loaded
already, and shares its pages copy-on-write: twenty workers of a 90 MB embedding model hold one
copy of its weights. The template is not an environment: it serves nothing, and the gateway counts
its memory in the budget and stops it once no worker of its model has run for a while
(:mod:`coldbrew.backends.templates`).

Protocol: the zygote forks the template for a :class:`~coldbrew.worker.messages.TemplateStart`,
handing it its channel (a SOCK_SEQPACKET socket whose other end the gateway holds), the first
worker's status pipe and optionally its output pipe. The template loads the model (contained as
that worker would be), says how that went with a :class:`TemplateStatus` on the channel, forks the
first worker and answers with its :class:`ForkReply`. Then each :class:`TemplateFork` on the
channel, with a status pipe and optionally an output pipe, is one more worker, answered with its
ForkReply. A TemplateFork with ``spare`` (and the spare's own channel) forks a spare: a child that
waits on that channel, forked already, for the next cold start's TemplateFork and pipes, and then
serves as that worker. The template exits when the channel closes, or with the zygote; a spare
exits at the end of its channel, or with the template.

A template must stay single-threaded to fork safely, like the zygote. A model whose load leaves a
thread behind (a library's pool, the user's own) cannot be a template: the process then serves as
the first worker itself, as a zygote's child would, and says so (``serving``), so the gateway forks
that model's later workers from the zygote as before.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import NoReturn

from pydantic import ValidationError

from coldbrew.worker.errors import ModelLoadError, one_line
from coldbrew.worker.main import Loaded, Prepared, _bind, _fail, load, prepare, reset_process, serve_loaded
from coldbrew.worker.messages import (
    SPARE_NAME,
    TEMPLATE_NAME,
    ForkReply,
    TemplateFork,
    TemplateStart,
    TemplateStatus,
    WorkerLaunch,
)
from coldbrew.worker.sandbox import PR_SET_PDEATHSIG, die_with_parent, prctl, process_name, set_process_name
from coldbrew.worker.threads import limit_threads, quiet_loaders, thread_count, thread_names

log = logging.getLogger("coldbrew.template")

_MAX_MESSAGE = 1 << 16


def run_template(start: TemplateStart, channel_fd: int, status_fd: int, output_fd: int | None) -> NoReturn:
    """The template's life, in the zygote's freshly forked child; never returns."""
    code = 1
    try:
        code = _run(start.template, channel_fd, status_fd, output_fd)
    except BaseException:
        log.exception("template crashed")
    finally:
        _exit(code)


def _run(launch: WorkerLaunch, channel_fd: int, status_fd: int, output_fd: int | None) -> int:
    running = time.monotonic()
    zygote_pid = os.getppid()
    # Gone with the zygote (which is gone with the gateway), its workers after it.
    die_with_parent(signal.SIGKILL, zygote_pid)
    worker_name = process_name()
    set_process_name(TEMPLATE_NAME)
    channel = socket.socket(fileno=channel_fd)
    # The load's output belongs to the first worker's log stream. The template keeps no copy of the
    # gateway's own output: it runs the model's code, which must not write into the gateway's log.
    if output_fd is not None:
        os.dup2(output_fd, 1)
        os.dup2(output_fd, 2)
        os.close(output_fd)
    logging.getLogger().handlers.clear()
    reset_process(launch)
    # The numerical libraries' pools stay at the zygote's one thread while the model loads: a pool
    # of more (OpenBLAS starts its threads when told their number) would keep it from forking.
    # Each worker sizes its own after the fork.
    quiet_loaders()
    try:
        loaded = load(launch, running)
    except BaseException as exc:
        error = str(exc) if isinstance(exc, ModelLoadError) else one_line(exc)
        if not isinstance(exc, ModelLoadError):
            log.error("worker setup failed", exc_info=exc)
        _send(channel, TemplateStatus(ready=False, error=error))
        return _fail(status_fd, error)
    # Again: entering the sandbox switched users, which clears the parent-death signal.
    die_with_parent(signal.SIGKILL, zygote_pid)
    if thread_count() != 1:
        names = ", ".join(thread_names()) or "unnamed"
        _send(
            channel,
            TemplateStatus(ready=False, serving=True, error=f"loading the model started threads ({names})"),
        )
        channel.close()
        # As a zygote's worker: when the zygote goes, it finishes what it serves (it watches its
        # parent), rather than being killed with the template's signal.
        prctl(PR_SET_PDEATHSIG, 0)
        limit_threads(launch.env.get("OMP_NUM_THREADS"))
        try:
            sock = _bind(launch)
        except ModelLoadError as exc:
            return _fail(status_fd, str(exc))
        set_process_name(worker_name)
        return serve_loaded(launch, loaded, sock, status_fd, zygote_pid)
    # The model's objects out of the collector's reach: a collection in a worker would otherwise
    # write to every one of them and copy each page they are on. (No collection first: on the
    # zygote's heap one took 80 ms, all of it before the first worker.)
    gc.freeze()
    _send(channel, TemplateStatus(ready=True, setup_ms=round(loaded.setup_ms, 3)))
    pid = _fork(launch, loaded, channel, status_fd, None, worker_name, first=True)
    os.close(status_fd)
    # Nor does it hold the first worker's stream open after that worker has gone: what it would
    # write from here on (a crash's traceback) has no reader; the gateway logs its exit.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)
    _send(channel, ForkReply(pid=pid))
    # The workers forked from here on did not load the model: their start begins at the fork.
    return _serve(launch, loaded, channel, worker_name)


def _serve(launch: WorkerLaunch, loaded: Loaded, channel: socket.socket, worker_name: str) -> int:
    while True:
        try:
            message, fds, _flags, _addr = socket.recv_fds(channel, _MAX_MESSAGE, 2)
        except InterruptedError:
            continue
        if not message:
            return 0  # the gateway closed the channel: stopped, or gone
        try:
            reply = _fork_request(launch, loaded, channel, message, fds, worker_name)
        finally:
            for fd in fds:
                os.close(fd)
        _send(channel, reply)
        if thread_count() != 1:
            return 1  # refused, and it cannot be fixed here: the gateway starts another


def _fork_request(
    launch: WorkerLaunch,
    loaded: Loaded,
    channel: socket.socket,
    message: bytes,
    fds: list[int],
    worker_name: str,
) -> ForkReply:
    try:
        request = TemplateFork.model_validate_json(message)
    except ValidationError as exc:
        return ForkReply(error=f"bad request: {exc}")
    if request.spare:
        if len(fds) != 1:
            return ForkReply(error="expected the spare's channel")
    elif len(fds) not in (1, 2):
        return ForkReply(error="expected a status pipe and at most one output pipe")
    if thread_count() != 1:
        # Nothing the template runs after its load starts one; a fork now would copy a process
        # whose other threads may hold locks.
        names = ", ".join(thread_names()) or "unnamed"
        return ForkReply(error=f"the template has started threads since its load ({names}); it exits")
    if request.spare:
        return ForkReply(pid=_fork_spare(launch, loaded, channel, fds[0], worker_name))
    try:
        target = _listening(launch, request)
    except ValidationError as exc:
        return ForkReply(error=f"bad request: {exc}")
    output_fd = fds[1] if len(fds) == 2 else None
    return ForkReply(pid=_fork(target, loaded, channel, fds[0], output_fd, worker_name))


def _listening(launch: WorkerLaunch, request: TemplateFork) -> WorkerLaunch:
    listener = request.model_dump(include={"socket_path", "port", "host"})
    return WorkerLaunch.model_validate({**launch.model_dump(), **listener})


def _fork(
    launch: WorkerLaunch,
    loaded: Loaded,
    channel: socket.socket,
    status_fd: int,
    output_fd: int | None,
    worker_name: str,
    first: bool = False,
) -> int:
    """Fork one worker serving ``loaded`` on ``launch``'s listener; its pid. The first one's start
    includes the template's own (its stamps are the template's); a later one's begins here."""
    return _child(
        channel,
        "worker",
        lambda template_pid: _become_worker(
            launch, loaded, status_fd, output_fd, worker_name, template_pid, first
        ),
    )


def _child(channel: socket.socket, what: str, life: Callable[[int], int]) -> int:
    """Fork a child of the template that lives ``life(template_pid)`` and exits with its status;
    the child's pid."""
    template_pid = os.getpid()
    pid = os.fork()
    if pid != 0:
        return pid
    code = 1
    try:
        channel.close()
        code = life(template_pid)
    except BaseException:
        log.exception("%s crashed", what)
    finally:
        _exit(code)


def _fork_spare(
    launch: WorkerLaunch, loaded: Loaded, channel: socket.socket, spare_fd: int, worker_name: str
) -> int:
    """Fork a spare: a child that waits, forked already (and moved into its memory cgroup by the
    gateway meanwhile), for the listener of the next cold start, which then costs no fork."""
    return _child(
        channel, "spare", lambda template_pid: _spare(launch, loaded, spare_fd, worker_name, template_pid)
    )


def _spare(launch: WorkerLaunch, loaded: Loaded, spare_fd: int, worker_name: str, template_pid: int) -> int:
    """A spare's life: wait on its channel for an assignment, then serve as that worker."""
    set_process_name(SPARE_NAME)
    # Until it serves, nothing of it is anyone's: it goes with the template.
    die_with_parent(signal.SIGKILL, template_pid)
    # Its pools sized while it waits (tens of ms for torch's and BLAS's), not after: it never
    # forks, so their threads harm nothing.
    limit_threads(launch.env.get("OMP_NUM_THREADS"))
    prepared = prepare(loaded)
    spare = socket.socket(fileno=spare_fd)
    while True:
        try:
            message, fds, _flags, _addr = socket.recv_fds(spare, _MAX_MESSAGE, 2)
        except InterruptedError:
            continue
        if not message:
            return 0  # the gateway released it (or is gone)
        try:
            request = TemplateFork.model_validate_json(message)
            target = _listening(launch, request)
        except ValidationError:
            request = None
        if request is None or request.spare or len(fds) not in (1, 2):
            for fd in fds:
                os.close(fd)
            continue  # not an assignment; the gateway sends none such
        spare.close()
        # A worker now: it finishes what it serves if the template goes (it watches it).
        prctl(PR_SET_PDEATHSIG, 0)
        output_fd = fds[1] if len(fds) == 2 else None
        return _become_worker(target, loaded, fds[0], output_fd, worker_name, template_pid, False, prepared)


def _become_worker(
    launch: WorkerLaunch,
    loaded: Loaded,
    status_fd: int,
    output_fd: int | None,
    worker_name: str,
    template_pid: int,
    first: bool,
    prepared: Prepared | None = None,
) -> int:
    """Serve as a worker: ``first`` is the template's first (whose start includes the template's
    own); ``prepared`` what a spare made while it waited (its thread pools sized among it)."""
    now = time.monotonic()
    set_process_name(worker_name)
    if output_fd is not None:
        os.dup2(output_fd, 1)
        os.dup2(output_fd, 2)
        os.close(output_fd)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    # Its own random numbers, as a fresh worker's (``random`` reseeds itself at fork). Generators
    # the model's code made while loading (numpy's default_rng) are copies in every worker.
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    if "torch" in sys.modules:
        sys.modules["torch"].seed()
    if prepared is None:
        limit_threads(launch.env.get("OMP_NUM_THREADS"))
    stamps = loaded if first else Loaded(loaded.handler, 0.0, running=now, loading=now, loaded=now)
    try:
        sock = _bind(launch)
    except ModelLoadError as exc:
        return _fail(status_fd, str(exc))
    return serve_loaded(launch, stamps, sock, status_fd, template_pid, template_pid, prepared)


def _exit(code: int) -> NoReturn:
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _send(channel: socket.socket, message: TemplateStatus | ForkReply) -> None:
    with contextlib.suppress(OSError):  # the gateway is gone: the next read ends the template
        channel.sendall(message.encoded())
