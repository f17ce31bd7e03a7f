"""The pieces of containment that need no server: model roots, cache permissions, the workers'
environment and ids, the data dir."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest

from coldbrew.artifacts import ArtifactError
from coldbrew.artifacts.extract import copy_tree
from coldbrew.artifacts.permissions import ContentGroups, seal, sealed
from coldbrew.artifacts.roots import ModelRoots, model_roots_default
from coldbrew.artifacts.sources import source_for
from coldbrew.backends.containment import base_env, parse_ids, parse_names, private_ancestors
from coldbrew.datadir import secure_data_dir


def no_s3() -> None:
    raise AssertionError("no S3 here")


def test_model_roots_default() -> None:
    assert model_roots_default(auth_on=False).unrestricted
    assert not model_roots_default(auth_on=True).allows("/anything")
    assert not model_roots_default(auth_on=False, loopback=False).allows("/anything")
    assert ModelRoots.from_setting("", auth_on=False).roots == ()
    assert ModelRoots.from_setting(None, auth_on=False).unrestricted


def test_paths_are_resolved_before_they_are_checked(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret").write_text("s")
    (root / "link").symlink_to(outside / "secret")
    (root / "model.tar.gz").write_text("m")
    roots = ModelRoots([root])
    assert roots.allows(root / "model.tar.gz")
    assert roots.allows(root)
    assert not roots.allows(root / "link")
    assert not roots.allows(f"{root}/../outside/secret")
    assert not roots.allows(f"{root}x/model.tar.gz")  # a sibling with the root's name as prefix
    messages = set()
    for url in (f"file://{root}/link", f"{root}/../outside/secret", "/etc/shadow", "/no/such/file"):
        with pytest.raises(ArtifactError) as excinfo:
            source_for({"ModelDataUrl": url}, no_s3, roots)
        message = str(excinfo.value)
        assert str(outside) not in message.replace(url, "")
        messages.add(message.replace(url, "URL"))
    # Existing or not, inside another directory or behind a link: one answer.
    assert len(messages) == 1
    assert "not under an allowed model root (COLDBREW_MODEL_ROOTS)" in messages.pop()


def test_a_link_out_of_the_roots_in_a_model_directory_is_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "model" / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret").write_text("s")
    (root / "model" / "weights").write_text("w")
    (root / "model" / "sub" / "inner").symlink_to(root / "model" / "weights")
    roots = ModelRoots([root])
    copy_tree(root / "model", tmp_path / "ok", 1 << 20, "file:///m", roots.allows)
    assert (tmp_path / "ok" / "sub" / "inner").read_text() == "w"
    (root / "model" / "sub" / "leak").symlink_to(outside / "secret")
    with pytest.raises(
        ArtifactError, match=r"'sub/leak' is a link to a file outside the allowed model roots"
    ):
        copy_tree(root / "model", tmp_path / "refused", 1 << 20, "file:///m", roots.allows)


def test_sealed_entries_are_never_readable_by_others(tmp_path: Path) -> None:
    entry = tmp_path / "entry"
    (entry / "code").mkdir(parents=True)
    (entry / "weights").write_text("w")
    (entry / "weights").chmod(0o644)
    (entry / "code" / "run.sh").write_text("#!/bin/sh\n")
    (entry / "code" / "run.sh").chmod(0o755)
    (entry / "link").symlink_to("weights")
    seal(entry, None)
    assert sealed(entry, None)
    assert stat.S_IMODE(entry.stat().st_mode) == 0o700
    assert stat.S_IMODE((entry / "weights").stat().st_mode) == 0o600
    assert stat.S_IMODE((entry / "code" / "run.sh").stat().st_mode) == 0o700
    assert stat.S_IMODE((entry / "code").stat().st_mode) == 0o700


@pytest.mark.skipif(os.geteuid() != 0, reason="giving files another group needs root")
def test_each_entry_gets_a_group_of_its_own(tmp_path: Path) -> None:
    cas = tmp_path / "sha256"
    cas.mkdir()
    groups = ContentGroups(range(1_901_000_000, 1_901_000_004), [cas])
    first, second = cas / "a", cas / "b"
    for entry in (first, second):
        entry.mkdir()
        (entry / "weights").write_text("w")
        seal(entry, groups)
        assert sealed(entry, groups)
        assert stat.S_IMODE(entry.stat().st_mode) == 0o750
        assert stat.S_IMODE((entry / "weights").stat().st_mode) == 0o640
        assert (entry / "weights").stat().st_gid == entry.stat().st_gid
    assert first.stat().st_gid != second.stat().st_gid
    # A restart finds the groups in use from the entries themselves.
    again = ContentGroups(range(1_901_000_000, 1_901_000_004), [cas])
    assert again.allocate() not in {first.stat().st_gid, second.stat().st_gid}


def test_base_env_keeps_what_the_interpreter_needs_and_no_secrets() -> None:
    environ = {
        "PATH": "/usr/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONPATH": "/src",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_SESSION_TOKEN": "token",
        "COLDBREW_AUTH": "on",
        "DATABASE_URL": "postgres://user:pw@db",
        "HF_TOKEN": "hf",
        "HOME": "/root",
    }
    assert base_env((), environ) == {
        "PATH": "/usr/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONPATH": "/src",
    }
    assert base_env(parse_names("HF_TOKEN, DATABASE_URL"), environ)["HF_TOKEN"] == "hf"


def test_worker_ids() -> None:
    auto = parse_ids("auto")
    assert auto is not None
    assert auto.users.start == 1_900_000_000 and auto.groups.stop == 1_902_000_000
    assert not set(auto.users) & set(auto.groups)
    assert parse_ids("off") is None
    custom = parse_ids("200000-200009")
    assert custom is not None and list(custom.users) == list(range(200000, 200005))
    for bad in ("nobody", "0-100", "5000-5001", "100-2147483647"):
        with pytest.raises(ValueError):
            parse_ids(bad)


def test_private_ancestors() -> None:
    # Not under tmp_path, whose own ancestor (/tmp/pytest-of-<user>) is private.
    with tempfile.TemporaryDirectory() as base:
        os.chmod(base, 0o755)
        check_private_ancestors(Path(base) / "home")


def check_private_ancestors(private: Path) -> None:
    (private / "python" / "lib").mkdir(parents=True)
    (private / "secret").mkdir()
    private.chmod(0o700)
    (private / "python").chmod(0o755)
    (private / "python" / "lib").chmod(0o755)
    (private / "secret").chmod(0o700)
    hide, expose = private_ancestors(
        [str(private / "python"), str(private / "python" / "lib"), str(private / "secret"), "/usr"]
    )
    assert hide == [str(private)]
    # The secret directory is not readable by others anyway; lib comes with python.
    assert expose == [str(private / "python")]


def test_data_dir_is_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    (data / "coldbrew.db").write_text("")
    (data / "coldbrew.db").chmod(0o644)
    (data / "artifacts").mkdir(mode=0o755)
    previous = os.umask(0o022)
    try:
        secure_data_dir(data)
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        assert stat.S_IMODE((data / "coldbrew.db").stat().st_mode) == 0o600
        assert stat.S_IMODE((data / "artifacts").stat().st_mode) == 0o700
        assert os.umask(0o077) == 0o077
    finally:
        os.umask(previous)
    fresh = tmp_path / "fresh" / "data"
    secure_data_dir(fresh)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700
    os.umask(previous)


def test_network_isolation_without_root() -> None:
    """A server that is not root gets the network namespace inside a user namespace of the
    worker's own (here: a child that gave up root first, as such a server's workers are)."""
    import encodings.idna  # noqa: F401  (the child, as nobody, may not be able to import it)
    import socket

    from coldbrew.worker.messages import Sandbox
    from coldbrew.worker.sandbox import SandboxError, enter

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        outcome = "crashed"
        try:
            if os.geteuid() == 0:
                os.setgroups([])
                os.setresgid(65534, 65534, 65534)
                os.setresuid(65534, 65534, 65534)
            try:
                enter(Sandbox(network=False))
            except SandboxError as exc:
                outcome = f"refused: {exc}"
            else:
                try:
                    socket.create_connection(("127.0.0.1", port), 2).close()
                    outcome = "connected"
                except OSError:
                    outcome = f"isolated as {os.getuid()}"
        finally:
            os.write(write_fd, outcome.encode())
            os._exit(0)
    os.close(write_fd)
    os.waitpid(pid, 0)
    outcome = os.read(read_fd, 1000).decode()
    os.close(read_fd)
    listener.close()
    if outcome.startswith("refused:") and "does not let coldbrew create" in outcome:
        pytest.skip(f"this host allows no unprivileged user namespaces: {outcome}")
    expected = 65534 if os.geteuid() == 0 else os.geteuid()
    assert outcome == f"isolated as {expected}"
