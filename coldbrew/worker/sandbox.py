"""Containing a worker from inside it: its mount and network namespaces and the user it runs as.

Applied by the worker process itself, before any of the model's code loads: in a child the zygote
has just forked, in a fresh interpreter before it starts a thread, and for a user's own server
between fork and exec (always in a network namespace of its own, with ``lo`` up, and its relay
joining that namespace: :mod:`coldbrew.backends.user_server`). All are single-threaded at that
point, which ``unshare`` (and ``setns``) of a user namespace requires. Everything here is a
handful of system calls (well under a millisecond; a network namespace costs about one), so a
cold start stays a fork.

The order matters: namespaces and mounts need root, so they come before the switch to the
worker's own user, and ``PR_SET_PDEATHSIG`` is cleared by that switch, so a caller sets it after.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import socket
import struct
from pathlib import Path

from coldbrew.worker.messages import Sandbox

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
PR_SET_NAME = 15
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1

_libc = ctypes.CDLL(None, use_errno=True)
_libc.unshare.argtypes = [ctypes.c_int]
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]


class SandboxError(Exception):
    """The worker could not be contained as asked; the message is fit for a FailureReason."""


class NetworkNamespaceError(SandboxError):
    """The host does not let coldbrew create a network namespace (no root, and no unprivileged
    user namespaces): a caller may choose to go on with the host's network."""


def enter(sandbox: Sandbox, loopback: bool = False) -> None:
    """Contain this process as ``sandbox`` says, or raise SandboxError (the process must then not
    go on to run the model: it is only partly contained).

    ``loopback``: with ``sandbox.network`` off, bring ``lo`` up in the new network namespace, so a
    user's own server can listen on 127.0.0.1 there (reached only through its relay,
    :mod:`coldbrew.backends.relay`); the namespace has no other interface either way.
    """
    held: dict[str, int] = {}
    try:
        if sandbox.needs_mounts:
            _mount(sandbox, held)
        if not sandbox.network:
            _isolate_network()
            if loopback:
                _loopback_up()
        if sandbox.uid is not None:
            gid = sandbox.gid if sandbox.gid is not None else sandbox.uid
            os.setgroups(sandbox.groups)
            os.setresgid(gid, gid, gid)
            os.setresuid(sandbox.uid, sandbox.uid, sandbox.uid)
        # No setuid program (sudo, su) gives the model back what was just taken.
        prctl(PR_SET_NO_NEW_PRIVS, 1)
        # Another process of the same user (another endpoint's worker when workers keep the
        # gateway's user) cannot read this one's /proc/<pid>/environ or memory, nor ptrace it.
        prctl(PR_SET_DUMPABLE, 0)
    except OSError as exc:
        raise SandboxError(f"the worker could not be contained: {exc.strerror or exc}") from None
    finally:
        for fd in held.values():
            with contextlib.suppress(OSError):
                os.close(fd)


def die_with_parent(signal_number: int, parent: int) -> None:
    """Have the kernel send ``signal_number`` to this process when its parent exits (SIGKILL of
    the gateway included); exits at once if the parent is already gone."""
    prctl(PR_SET_PDEATHSIG, signal_number)
    if os.getppid() != parent:
        os._exit(1)


def join_namespaces(fds: list[tuple[int, int]]) -> None:
    """Enter the namespaces open at each ``(fd, CLONE_NEW*)``, in order (a user namespace before
    the network namespace it owns): how a user server's relay joins the server's network."""
    for fd, kind in fds:
        if _libc.setns(fd, kind) != 0:
            errno = ctypes.get_errno()
            raise SandboxError(f"the relay could not join the server's namespace: {os.strerror(errno)}")


def _loopback_up() -> None:
    """``ip link set lo up``, without ``ip``: the SIOCSIFFLAGS ioctl on any socket of the namespace."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sh22x", b"lo", 0)
        (flags,) = struct.unpack_from("16xh", fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, request))
        fcntl.ioctl(sock.fileno(), SIOCSIFFLAGS, struct.pack("16sh22x", b"lo", flags | IFF_UP))


def _mount(sandbox: Sandbox, held: dict[str, int]) -> None:
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    # Nothing mounted here may propagate back to the host's namespace.
    _check(_libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
    # Held open before anything is covered, since a bind's source may lie under a hidden
    # directory; and opened in this namespace, since a bind takes its source from no other.
    for path in [*sandbox.expose, *(bind.source for bind in sandbox.binds)]:
        if path not in held:
            held[path] = os.open(path, os.O_PATH | os.O_DIRECTORY)
    for hidden in sandbox.hide:
        _check(
            _libc.mount(b"tmpfs", os.fsencode(hidden), b"tmpfs", MS_NOSUID | MS_NODEV, b"mode=755,size=64k"),
            f"mount tmpfs on {hidden}",
        )
    for path in sandbox.expose:
        _skeleton(Path(path))
        _bind(held[path], path)
    for hidden in sandbox.hide:
        flags = MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV
        _check(_libc.mount(None, os.fsencode(hidden), None, flags, None), f"remount {hidden} read-only")
    for bind in sandbox.binds:
        _bind(held[bind.source], bind.target)


def _skeleton(path: Path) -> None:
    """Create ``path`` in the tmpfs that hides its ancestor, crossable by anyone (the umask, 077
    under the gateway, does not apply)."""
    missing = [p for p in [path, *path.parents] if not p.exists()]
    for directory in reversed(missing):
        directory.mkdir()
        os.chmod(directory, 0o755)


def _bind(fd: int, target: str) -> None:
    source = f"/proc/self/fd/{fd}".encode()
    _check(_libc.mount(source, os.fsencode(target), None, MS_BIND | MS_REC, None), f"bind {target}")


def _isolate_network() -> None:
    """A network namespace of its own, with no interface up: not even loopback."""
    if os.geteuid() == 0:
        result = _libc.unshare(CLONE_NEWNET)
    else:
        # An unprivileged user may create a network namespace inside a user namespace of its own.
        uid, gid = os.getuid(), os.getgid()
        # Its /proc/self/uid_map is its own to write only while it is dumpable (a zygote's child
        # is not); ``enter`` makes it non-dumpable again.
        prctl(PR_SET_DUMPABLE, 1)
        result = _libc.unshare(CLONE_NEWUSER | CLONE_NEWNET)
        if result == 0:
            # Mapped to itself, so files it creates and getuid() look as before.
            Path("/proc/self/setgroups").write_text("deny")
            Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
            Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")
    if result != 0:
        errno = ctypes.get_errno()
        raise NetworkNamespaceError(
            "EnableNetworkIsolation needs a network namespace, which this host does not let coldbrew "
            f"create ({os.strerror(errno)}): run coldbrew as root, or allow unprivileged user namespaces"
        )


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise SandboxError(
            f"the worker could not be contained ({what}: {os.strerror(errno)}); this host does not allow "
            "the mount namespace a worker of its own user needs: give coldbrew CAP_SYS_ADMIN, or set "
            "COLDBREW_WORKER_IDS=off"
        )


def prctl(option: int, value: int) -> None:
    if _libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))


def set_process_name(name: str) -> None:
    """The name ``ps``, ``top`` and /proc/PID/comm show for this process (at most 15 bytes)."""
    set_name = _libc["prctl"]  # a function object of its own: ``_libc.prctl`` takes ints only
    set_name.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    set_name(PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def process_name() -> str:
    """This process's name as /proc/self/comm has it."""
    try:
        with open("/proc/self/comm") as comm:
            return comm.read().strip()
    except OSError:
        return ""
