"""The command lines that read logs: the AWS CLI (v1's ``aws logs`` calls, v2's ``aws logs tail``
and its ``--follow``) and ``coldbrew logs``, each as a user runs it, in a subprocess."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

from tests.logs.conftest import aws_env, group, invoke
from tests.support import REPO, ColdbrewServer, free_port

LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z AllTraffic/i-[0-9a-f]{17} .+$")


def run(argv: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
    )


def coldbrew_logs(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "coldbrew", "logs", *args], env or {})


class Lines:
    """A running command's stdout, line by line, with a timeout."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.queue.put(line.rstrip("\n"))

    def until(self, text: str, timeout: float) -> list[str]:
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while not any(text in line for line in seen):
            try:
                seen.append(self.queue.get(timeout=max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"{text!r} not printed within {timeout} s; got {seen}") from None
        return seen


def interrupted(process: subprocess.Popen[str]) -> tuple[int, str]:
    process.send_signal(signal.SIGINT)
    code = process.wait(timeout=15)
    assert process.stderr is not None
    return code, process.stderr.read()


# --- AWS CLI v1 (PyPI's awscli): the API calls one by one ------------------------------------


def aws_v1(server: ColdbrewServer, *args: str) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "awscli", "logs", *args, "--output", "json"], aws_env(server))


def test_aws_cli_v1_lists_reads_and_filters(logs_server: ColdbrewServer, printer: str) -> None:
    listed = aws_v1(logs_server, "describe-log-groups", "--log-group-name-prefix", group(printer))
    assert listed.returncode == 0, listed.stderr
    assert [g["logGroupName"] for g in json.loads(listed.stdout)["logGroups"]] == [group(printer)]
    streams = aws_v1(logs_server, "describe-log-streams", "--log-group-name", group(printer))
    stream = json.loads(streams.stdout)["logStreams"][0]["logStreamName"]
    read = aws_v1(
        logs_server,
        "get-log-events",
        "--log-group-name",
        group(printer),
        "--log-stream-name",
        stream,
        "--start-from-head",
    )
    assert read.returncode == 0, read.stderr
    assert "predict on stdout first" in [e["message"] for e in json.loads(read.stdout)["events"]]
    filtered = aws_v1(
        logs_server, "filter-log-events", "--log-group-name", group(printer), "--filter-pattern", "stderr"
    )
    assert filtered.returncode == 0, filtered.stderr
    found = [e["message"] for e in json.loads(filtered.stdout)["events"]]
    assert "predict on stderr first" in found and all("stderr" in m for m in found)
    missing = aws_v1(logs_server, "filter-log-events", "--log-group-name", group("nope"))
    assert missing.returncode != 0
    assert (
        "ResourceNotFoundException" in missing.stderr
        and "The specified log group does not exist." in missing.stderr
    )


# --- AWS CLI v2: aws logs tail [--follow] -----------------------------------------------------


def test_aws_logs_tail_and_follow(aws_v2: str, logs_server: ColdbrewServer, printer: str) -> None:
    # CLI 2.9 (Debian 12's) predates AWS_ENDPOINT_URL, so the URL goes on the command line.
    common = ["--endpoint-url", logs_server.url, "--no-cli-pager", "--color", "off"]
    env = {**aws_env(logs_server), "AWS_PAGER": ""}
    tail = run([aws_v2, "logs", "tail", group(printer), "--since", "1h", "--format", "short", *common], env)
    assert tail.returncode == 0, tail.stderr
    assert re.search(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d predict on stdout first$", tail.stdout, re.M), (
        tail.stdout
    )
    assert tail.stdout.count("predict on stdout first") == 1
    follow = subprocess.Popen(
        [aws_v2, "logs", "tail", group(printer), "--since", "1h", "--follow", *common],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    try:
        lines = Lines(follow)
        first = lines.until("predict on stdout first", 30)
        assert re.search(r" AllTraffic/i-[0-9a-f]{17} predict on stdout first$", first[-1])
        invoke(logs_server, printer, marker="tailed")
        # tail polls every 5 s, from the newest timestamp it has seen, leaving out what it printed.
        later = lines.until("predict on stderr tailed", 20)
        assert not any("predict on stdout first" in line for line in later)
    finally:
        code, errors = interrupted(follow)
    # The CLI ends on Ctrl+C with 0 (caught in its poll's sleep) or 130 (elsewhere), never a traceback.
    assert code in (0, 130) and "Traceback" not in errors, errors


# --- coldbrew logs ----------------------------------------------------------------------------


def test_coldbrew_logs_prints_one_event_per_line(logs_server: ColdbrewServer, printer: str) -> None:
    shown = coldbrew_logs(printer, "--url", logs_server.url)
    assert shown.returncode == 0 and shown.stderr == "", shown.stderr
    lines = shown.stdout.splitlines()
    assert lines and all(LINE.match(line) for line in lines), lines
    assert any(line.endswith(" predict on stdout first") for line in lines)
    assert any(" coldbrew: environment started in " in line for line in lines)
    # COLDBREW_URL instead of --url; a filter pattern; a start in the future shows nothing.
    filtered = coldbrew_logs(
        printer, "--filter-pattern", '"on stderr"', env={"COLDBREW_URL": logs_server.url}
    )
    assert filtered.returncode == 0, filtered.stderr
    shown_filtered = filtered.stdout.splitlines()
    assert shown_filtered and all(LINE.match(line) and "on stderr" in line for line in shown_filtered)
    assert any(line.endswith(" predict on stderr first") for line in shown_filtered)
    later = coldbrew_logs(printer, "--url", logs_server.url, "--since", "2099-01-01T00:00:00")
    assert later.returncode == 0 and later.stdout == ""
    recent = coldbrew_logs(printer, "--url", logs_server.url, "--since", "1h")
    assert recent.stdout == shown.stdout or len(recent.stdout) >= len(shown.stdout)


def test_coldbrew_logs_errors_are_one_line(logs_server: ColdbrewServer, printer: str) -> None:
    missing = coldbrew_logs("no-such-endpoint", "--url", logs_server.url)
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr == f"coldbrew: endpoint no-such-endpoint not found at {logs_server.url}\n"
    bad = coldbrew_logs(printer, "--url", logs_server.url, "--since", "yesterday")
    assert bad.returncode == 2 and bad.stderr.startswith(
        "coldbrew: --since 'yesterday': give a number and a unit"
    )
    pattern = coldbrew_logs(printer, "--url", logs_server.url, "--filter-pattern", "[a, b]")
    assert pattern.returncode == 1
    assert pattern.stderr.startswith("coldbrew: InvalidParameterException: Invalid filter pattern '[a, b]'")
    down = coldbrew_logs(printer, "--url", f"http://127.0.0.1:{free_port()}")
    assert down.returncode == 1 and down.stderr.startswith(
        "coldbrew: cannot read the logs at http://127.0.0.1:"
    )
    assert len(down.stderr.splitlines()) == 1


def test_coldbrew_logs_follow_until_ctrl_c(logs_server: ColdbrewServer, printer: str) -> None:
    follow = subprocess.Popen(
        [sys.executable, "-m", "coldbrew", "logs", printer, "--follow", "--url", logs_server.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
    )
    try:
        lines = Lines(follow)
        lines.until("predict on stdout first", 30)
        invoke(logs_server, printer, marker="followed")
        later = lines.until("predict on stderr followed", 10)
        assert all(LINE.match(line) for line in later)
        assert sum("predict on stdout followed" in line for line in later) == 1
    finally:
        code, errors = interrupted(follow)
    assert code == 130 and errors == ""  # as aws logs tail --follow and coldbrew serve end on Ctrl+C


def test_coldbrew_logs_finds_an_endpoint_named_in_another_case(
    logs_server: ColdbrewServer, printer: str
) -> None:
    # Endpoint names are unique whatever their case; the log group is named as it was created.
    shown = coldbrew_logs(printer.upper(), "--url", logs_server.url)
    assert shown.returncode == 0 and "predict on stdout first" in shown.stdout, shown.stderr
