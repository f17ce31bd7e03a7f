"""``aws s3`` (AWS CLI v1 from PyPI) against the embedded S3 with only AWS_ENDPOINT_URL set (the
rest of the suite runs the ``aws`` command itself; here its driver runs in-process to keep this fast)."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.s3.conftest import client_env
from tests.support import ColdbrewServer


@pytest.fixture
def aws(user_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``aws s3 ...`` run by the CLI's own driver in this process (the user's environment is set by
    ``user_env``): the same code as the ``aws`` command, without an interpreter start per call."""
    monkeypatch.chdir(tmp_path)
    # Importing awscli sets AWS_DATA_PATH in this process's environment to its own data; it is kept
    # to this test, or every command the suite starts later inherits it (the AWS CLI v2 then loads
    # v1's cli.json and fails). Imported here, not at collection, for the same reason.
    monkeypatch.setenv("AWS_DATA_PATH", os.environ.get("AWS_DATA_PATH", ""))
    import awscli
    from awscli.clidriver import create_clidriver

    monkeypatch.setenv("AWS_DATA_PATH", str(Path(awscli.__file__).parent / "data"))

    def run(*args: str) -> str:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = create_clidriver().main(["s3", *args])
        assert status == 0, out.getvalue() + err.getvalue()
        return out.getvalue()

    return run


def test_mb_cp_ls_sync_rm_rb(aws: Any, tmp_path: Path, s3: Any) -> None:
    aws("mb", "s3://cli-bucket")
    local = tmp_path / "model.tar.gz"
    local.write_bytes(b"\x1f\x8b" + b"m" * 20000)
    aws("cp", str(local), "s3://cli-bucket/models/rf/model.tar.gz")
    assert (
        s3.get_object(Bucket="cli-bucket", Key="models/rf/model.tar.gz")["Body"].read() == local.read_bytes()
    )
    assert "PRE rf/" in aws("ls", "s3://cli-bucket/models/")
    tree = tmp_path / "tree"
    for name in ("a.txt", "sub/b.txt", "sub/deeper/c with space.txt"):
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_text(name)
    aws("sync", str(tree), "s3://cli-bucket/tree")
    assert aws("sync", str(tree), "s3://cli-bucket/tree").strip() == ""  # nothing changed: nothing sent
    (tree / "a.txt").write_text("changed, and longer")
    assert "upload: " in aws("sync", str(tree), "s3://cli-bucket/tree")
    recursive = aws("ls", "--recursive", "s3://cli-bucket/tree/")
    assert all(k in recursive for k in ("tree/a.txt", "tree/sub/b.txt", "tree/sub/deeper/c with space.txt"))
    back = tmp_path / "back"
    aws("sync", "s3://cli-bucket/tree", str(back))
    assert (back / "sub/deeper/c with space.txt").read_text() == "sub/deeper/c with space.txt"
    aws("cp", "s3://cli-bucket/models/rf/model.tar.gz", "s3://cli-bucket/copy.tar.gz")
    aws("rm", "s3://cli-bucket/models/rf/model.tar.gz")
    top = aws("ls", "s3://cli-bucket/")
    assert "copy.tar.gz" in top and "PRE models/" not in top and "PRE tree/" in top
    aws("rm", "--recursive", "s3://cli-bucket/")
    assert aws("ls", "--recursive", "s3://cli-bucket/").strip() == ""
    aws("rb", "s3://cli-bucket")
    assert "cli-bucket" not in aws("ls")


def test_a_large_file_goes_up_in_parts(aws: Any, tmp_path: Path, s3: Any, bucket: str) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * (20 * 4096))  # 20 MB: the CLI uses 8 MB parts
    aws("cp", str(big), f"s3://{bucket}/big.bin")
    head = s3.head_object(Bucket=bucket, Key="big.bin")
    assert head["ContentLength"] == big.stat().st_size and head["ETag"].endswith('-3"')
    aws("cp", f"s3://{bucket}/big.bin", str(tmp_path / "big-back.bin"))
    assert (tmp_path / "big-back.bin").read_bytes() == big.read_bytes()


def test_the_aws_cli_v2(server: ColdbrewServer, tmp_path: Path, aws_v2: str) -> None:
    """CLI v2 is what most users have; Debian's (2.9) predates AWS_ENDPOINT_URL, hence the flag."""
    env = client_env(server, tmp_path)

    def aws(*args: str) -> str:
        done = subprocess.run(
            [aws_v2, "--endpoint-url", server.url, "s3", *args], env=env, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(20 * 1024 * 1024))  # multipart, 8 MB parts
    aws("mb", "s3://cli-v2")
    aws("cp", str(big), "s3://cli-v2/big.bin")
    assert "20971520 big.bin" in aws("ls", "s3://cli-v2/")
    aws("cp", "s3://cli-v2/big.bin", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == big.read_bytes()
    aws("rm", "--recursive", "s3://cli-v2/")
    aws("rb", "s3://cli-v2")
