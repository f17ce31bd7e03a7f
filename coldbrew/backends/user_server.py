"""A user's own server (``exec:`` images) as an execution environment.

It must answer ``GET /ping`` and ``POST /invocations`` on ``SAGEMAKER_BIND_TO_PORT``, as a
SageMaker container does, on the loopback address (``127.0.0.1``, also in
``COLDBREW_BIND_TO_HOST``). It starts in the model directory. Unlike coldbrew's workers it
reports nothing on a pipe, so it is ready once ``/ping`` answers 200.

**Reachable only through the gateway.** It runs in a network namespace of its own, where only
``lo`` is up: its port exists in that namespace alone, so no other process of the host (another
endpoint's worker, another user) can connect to it. The gateway reaches it through a relay
(:mod:`coldbrew.backends.relay`) in the same namespace, which accepts on a Unix socket in the
tenant's private run directory, as coldbrew's own workers listen. The price: the server has no
network either, with or without ``EnableNetworkIsolation`` (which then only forbids the way
out below). A model that needs the network (to download weights at start, to call a service)
sets ``COLDBREW_EXEC_NETWORK=host`` in its Environment: it then shares the host's network and
listens on a loopback TCP port that every local process can reach, as before; one found
listening on another address (``0.0.0.0``), where other machines could reach it without the
gateway, is stopped and reported. A host that lets coldbrew create no network namespace (not
root, and no unprivileged user namespaces) gets the same with a warning in the log, except
with ``EnableNetworkIsolation``, which then fails the deploy rather than run the model with
network.

It is contained as coldbrew's workers are (:mod:`coldbrew.backends.containment`) and never
outlives the gateway: it leads a process group of its own, which ``stop`` signals whole (its
relay joins it), and the kernel SIGKILLs it and its relay when the gateway dies, SIGKILL included
(``PR_SET_PDEATHSIG``). What it starts itself is in its process group; a child that leaves the
group, or outlives a killed server, is beyond coldbrew's reach (a memory cgroup per worker,
where the host allows one, still holds it, and holds the relay too).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import itertools
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil

# Imported here, not used here: the gateway (which can write __pycache__) compiles it once, so
# each relay, which runs as the tenant's user, starts from the cached bytecode.
import coldbrew
import coldbrew.backends.relay  # noqa: F401
from coldbrew.backends.base import WorkerSpec, WorkerStartError
from coldbrew.backends.cgroups import MemoryCgroups
from coldbrew.backends.containment import ContainedWorker, Containment
from coldbrew.backends.processes import SpawnedWorker, child_env, kill, rss
from coldbrew.backends.worker_client import WorkerClient, WorkerConnectionError
from coldbrew.worker.messages import Sandbox
from coldbrew.worker.sandbox import (
    CLONE_NEWNET,
    CLONE_NEWUSER,
    NetworkNamespaceError,
    die_with_parent,
    join_namespaces,
)
from coldbrew.worker.sandbox import enter as enter_sandbox

log = logging.getLogger("coldbrew.backends")

LOOPBACK = "127.0.0.1"

NETWORK_KEY = "COLDBREW_EXEC_NETWORK"
"""A model's Environment key: ``private`` (the default: a network namespace of its own) or
``host`` (the host's network, its port reachable by every local process)."""

# Bounds of the wait between pings of a starting server.
_PING_MIN_S = 0.005
_PING_MAX_S = 0.25

# What a server's containment writes before its reason when the host refused the network
# namespace (so the gateway can fall back to the host's network, or refuse with the reason).
_NO_NETNS = "netns:"

_ids = itertools.count()
_COLDBREW_PARENT = str(Path(coldbrew.__file__).resolve().parent.parent)
_no_network_namespaces = False
"""Set once the host has refused a server its network namespace: later ones do not try again."""


class _NoNetworkNamespace(Exception):
    pass


async def start_user_server(
    spec: WorkerSpec,
    command: str,
    cgroups: MemoryCgroups | None,
    startup_timeout_s: float,
    containment: Containment,
    contained: ContainedWorker,
) -> SpawnedWorker:
    global _no_network_namespaces
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise WorkerStartError(f"The serve command {command!r} cannot be parsed: {exc}.") from None
    if not argv:
        raise WorkerStartError("The serve command is empty: use Image 'exec:COMMAND ARGS'.")
    private = _private_network(spec.env, spec.network_isolation)
    if private and _no_network_namespaces and not spec.network_isolation:
        private = False
    start = functools.partial(_start, spec, argv, cgroups, startup_timeout_s, containment, contained)
    try:
        return await start(private)
    except _NoNetworkNamespace as exc:
        if spec.network_isolation:
            raise WorkerStartError(f"The serve command {argv[0]!r} could not be started: {exc}.") from None
        if not _no_network_namespaces:
            log.warning(
                "this host lets coldbrew create no network namespace (%s): exec: servers share the "
                "host's network, and any local process can connect to their loopback ports",
                exc,
            )
        _no_network_namespaces = True
        return await start(False)


def _private_network(env: Mapping[str, str], isolated: bool) -> bool:
    # Checked at CreateEndpoint already (serving.targets.EndpointSettings); again here, where it acts.
    value = env.get(NETWORK_KEY, "private")
    if value not in {"private", "host"}:
        raise WorkerStartError(f"{NETWORK_KEY}={value[:64]!r} is not valid: use private or host.")
    if value == "host" and isolated:
        raise WorkerStartError(
            f"{NETWORK_KEY}=host gives the server the host's network, which EnableNetworkIsolation "
            "forbids: remove one of them."
        )
    return value == "private"


async def _start(
    spec: WorkerSpec,
    argv: list[str],
    cgroups: MemoryCgroups | None,
    startup_timeout_s: float,
    containment: Containment,
    contained: ContainedWorker,
    private: bool,
) -> SpawnedWorker:
    # On the host's loopback even in a namespace of its own, where any port is free: a port
    # nothing on the host listens on makes a connection from the host to it fail plainly.
    port = _free_port()
    env = child_env(contained.env, containment.base_env)
    env.update(
        SAGEMAKER_BIND_TO_PORT=str(port),
        COLDBREW_BIND_TO_HOST=LOOPBACK,
        SM_MODEL_DIR=contained.model_dir,
        COLDBREW_MODEL_DIR=contained.model_dir,
    )
    if spec.output_fd is not None:
        # Its output goes to a pipe, where Python would hold print()s back in a block buffer; as in
        # SageMaker's framework containers (PYTHONUNBUFFERED=TRUE), each line is logged as it comes.
        env.setdefault("PYTHONUNBUFFERED", "1")
    sandbox = contained.sandbox.model_copy(update={"network": False}) if private else contained.sandbox
    started = time.perf_counter()
    process = await _spawn(
        argv,
        env,
        spec.output_fd,
        functools.partial(_contain_child, sandbox, contained.model_dir or None, os.getpid(), private),
    )
    if spec.nice:
        # Right after the exec: threads the server starts later inherit it (the main thread's
        # first instants at niceness 0 do not matter; preexec_fn would not be safe in a threaded
        # gateway).
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, process.pid, spec.nice)
    cgroup = (
        cgroups.attach(process.pid, spec.memory_mb, background=spec.nice > 0)
        if cgroups is not None and spec.memory_mb
        else None
    )
    relay: asyncio.subprocess.Process | None = None
    socket_path: str | None = None
    client: WorkerClient | None = None
    waits: list[asyncio.Future[Any]] = []
    try:
        if private:
            socket_path = str(contained.tenant.directory / f"x{os.getpid()}-{next(_ids)}.sock")
            relay = await _start_relay(
                process.pid, port, socket_path, contained.sandbox, containment.base_env, spec.output_fd
            )
            if cgroup is not None:
                cgroup.add(relay.pid)
        address = f"unix:{socket_path}" if socket_path else f"http://{LOOPBACK}:{port}"
        client = WorkerClient(address)
        answers = asyncio.ensure_future(_answers_ping(client, started))
        exited = asyncio.ensure_future(process.wait())
        waits = [answers, exited]
        relay_exited = asyncio.ensure_future(relay.wait()) if relay is not None else None
        if relay_exited is not None:
            waits.append(relay_exited)
        # Whichever comes first: a server that dies while loading is reported at once, not after
        # the next ping.
        await asyncio.wait(waits, timeout=startup_timeout_s, return_when=asyncio.FIRST_COMPLETED)
        if exited.done():
            raise WorkerStartError(
                f"The serve command exited with status {process.returncode} before answering /ping "
                f"on port {port}."
            )
        if relay_exited is not None and relay_exited.done():
            assert relay is not None
            raise WorkerStartError(f"coldbrew's relay to the server exited with status {relay.returncode}.")
        if not answers.done():
            raise WorkerStartError(
                f"The serve command did not answer GET /ping with 200 on port {port} within "
                f"{startup_timeout_s:.0f} s."
            )
        answers.result()
        if not private:
            _check_loopback(process.pid, port)
    except WorkerStartError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the relay too: it is in the server's group
        await kill(process, process.pid)
        if relay is not None:
            await kill(relay, relay.pid)
        if socket_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(socket_path)
        if cgroup is not None:
            cgroup.remove()
        raise
    finally:
        for task in waits:
            task.cancel()
        if client is not None:
            await client.aclose()
    setup_ms = (time.perf_counter() - started) * 1000
    worker = ExecServer(process, relay, socket_path, setup_ms, address)
    worker.cgroup = cgroup
    return worker


class ExecServer(SpawnedWorker):
    """A user's server, and the relay in its network namespace that the gateway reaches it by."""

    counts_children = True
    process_group = True

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        relay: asyncio.subprocess.Process | None,
        socket_path: str | None,
        setup_ms: float,
        address: str,
    ) -> None:
        super().__init__(process, socket_path, setup_ms, address=address)
        self.relay = relay

    def is_alive(self) -> bool:
        # Without its relay the server is out of reach: serving replaces the pair.
        return super().is_alive() and (self.relay is None or self.relay.returncode is None)

    def rss_bytes(self) -> int:
        return super().rss_bytes() + (rss(self.relay.pid, children=False) if self.relay is not None else 0)

    async def stop(self, grace_s: float = 2.0) -> None:
        # The relay first, and reaped before the cgroup (which it is in) is removed; the group's
        # SIGTERM would stop it at once anyway.
        if self.relay is not None:
            await kill(self.relay, self.relay.pid)
        await super().stop(grace_s)


async def _spawn(
    argv: list[str],
    env: dict[str, str],
    output_fd: int | None,
    contain: functools.partial[None],
) -> asyncio.subprocess.Process:
    """Start ``argv`` contained by ``contain(error_fd)`` between fork and exec, which writes why
    it could not be on ``error_fd``; raise WorkerStartError (or _NoNetworkNamespace) with it."""
    # Close-on-exec, so the process never holds it.
    error_read, error_write = os.pipe()
    try:
        return await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=output_fd,
            stderr=output_fd,
            preexec_fn=functools.partial(contain, error_write),
        )
    except subprocess.SubprocessError:
        os.close(error_write)
        reason = _read_all(error_read) or "it could not be contained"
        if reason.startswith(_NO_NETNS):
            raise _NoNetworkNamespace(reason[len(_NO_NETNS) :]) from None
        raise WorkerStartError(f"The serve command {argv[0]!r} could not be started: {reason}.") from None
    except OSError as exc:
        raise WorkerStartError(
            f"The serve command {argv[0]!r} could not be started: {exc.strerror or exc}."
        ) from None
    finally:
        with contextlib.suppress(OSError):
            os.close(error_write)
        with contextlib.suppress(OSError):
            os.close(error_read)


async def _start_relay(
    server_pid: int,
    port: int,
    socket_path: str,
    sandbox: Sandbox,
    base_env: Mapping[str, str],
    output_fd: int | None,
) -> asyncio.subprocess.Process:
    """The relay, in the server's network namespace and process group, as the server's user."""
    kinds = [CLONE_NEWNET] if os.geteuid() == 0 else [CLONE_NEWUSER, CLONE_NEWNET]
    fds: list[int] = []
    try:
        for kind in kinds:
            name = "user" if kind == CLONE_NEWUSER else "net"
            fds.append(os.open(f"/proc/{server_pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC))
    except OSError as exc:
        for fd in fds:
            os.close(fd)
        raise WorkerStartError(
            f"The serve command exited before it could be reached: {exc.strerror}."
        ) from None
    try:
        return await _spawn(
            # Without site (-S), which costs a cold start ~40 ms with many packages installed: the
            # relay needs only the standard library and coldbrew, found through PYTHONPATH.
            [sys.executable, "-S", "-m", "coldbrew.backends.relay", socket_path, str(port), str(server_pid)],
            _relay_env(base_env),
            output_fd,
            functools.partial(
                _contain_relay,
                # Its own mounts (the interpreter bound back under a private directory) and user,
                # but no network namespace of its own: it joins the server's.
                sandbox.model_copy(update={"network": True}),
                list(zip(fds, kinds, strict=True)),
                server_pid,
                os.getpid(),
            ),
        )
    finally:
        for fd in fds:
            os.close(fd)


def _relay_env(base_env: Mapping[str, str]) -> dict[str, str]:
    env = dict(base_env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_COLDBREW_PARENT, base_env.get("PYTHONPATH")) if p)
    return env


def _contain_child(sandbox: Sandbox, cwd: str | None, gateway: int, loopback: bool, error_fd: int) -> None:
    """Between fork and exec, in the server's process: contain it (in a network namespace with
    ``lo`` up if ``loopback``), then have it die with the gateway (after the switch of user,
    which clears the parent-death signal).

    A preexec_fn in a threaded gateway is safe only if it takes no lock another thread may have
    held at fork: this makes system calls through os, socket and ctypes functions resolved at
    import, and imports nothing.
    """
    try:
        # Its own process group (uvloop's subprocesses take no process_group argument).
        os.setpgid(0, 0)
        enter_sandbox(sandbox, loopback=loopback)
        if cwd:
            os.chdir(cwd)  # after the mounts: the model directory as the server sees it
        die_with_parent(signal.SIGKILL, gateway)
    except NetworkNamespaceError as exc:
        with contextlib.suppress(OSError):
            os.write(error_fd, (_NO_NETNS + str(exc)).encode()[:1000])
        raise
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.write(error_fd, str(exc).encode()[:1000])
        raise


def _contain_relay(
    sandbox: Sandbox, namespaces: list[tuple[int, int]], server: int, gateway: int, error_fd: int
) -> None:
    """Between fork and exec, in the relay's process: into the server's process group (stopped
    with it) and network namespace (where its port is), contained as the server is, and dying
    with the gateway. The same rules as :func:`_contain_child` hold."""
    try:
        os.setpgid(0, server)
        join_namespaces(namespaces)
        enter_sandbox(sandbox)
        die_with_parent(signal.SIGKILL, gateway)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.write(error_fd, f"coldbrew's relay to it could not be contained: {exc}".encode()[:1000])
        raise


def _read_all(fd: int) -> str:
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace").strip()


def _check_loopback(pid: int, port: int) -> None:
    """Refuse a server that listens on ``port`` on an address other machines can reach."""
    try:
        server = psutil.Process(pid)
        processes = [server, *server.children(recursive=True)]
    except psutil.Error:
        return
    for process in processes:
        try:
            listening = [c for c in process.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        except psutil.Error:
            continue
        for conn in listening:
            if conn.laddr and conn.laddr.port == port and not ipaddress.ip_address(conn.laddr.ip).is_loopback:
                raise WorkerStartError(
                    f"The serve command listens on {conn.laddr.ip or '*'}:{port}, where other machines "
                    f"can reach it without coldbrew: bind it to {LOOPBACK} (COLDBREW_BIND_TO_HOST)."
                )


async def _answers_ping(client: WorkerClient, started: float) -> None:
    """Returns once the server answers ``GET /ping`` with 200.

    A server tells nobody when it starts listening, so this asks. It asks often at first, when a
    small server is about to be up, then less: each wait is a tenth of the time it has taken so
    far, which keeps the delay this adds to a start to about 10 % however long the model loads.
    """
    while True:
        with contextlib.suppress(WorkerConnectionError, OSError):
            if (await client.request("GET", "/ping", {})).status == 200:
                return
        elapsed = time.perf_counter() - started
        await asyncio.sleep(min(max(elapsed / 10, _PING_MIN_S), _PING_MAX_S))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
