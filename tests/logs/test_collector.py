"""The collector with real pipes, as a worker writes to them: lines, partial lines, long lines,
end of file, coldbrew's events, the copy on the server's output and its rate limit."""

from __future__ import annotations

import io
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from coldbrew.logs import collector as collector_module
from coldbrew.logs.collector import LogCollector
from coldbrew.logs.store import MAX_MESSAGE_BYTES, connect


@pytest.fixture
def echo() -> io.StringIO:
    return io.StringIO()


@pytest.fixture
def collector(tmp_path: Path, echo: io.StringIO) -> Iterator[LogCollector]:
    c = LogCollector(tmp_path / "logs.db", max_bytes_per_endpoint=1 << 30, retention_days=7, echo=echo)
    c.start()
    yield c
    c.close()


def events(path: Path, stream: str) -> list[str]:
    conn = connect(path, readonly=True)
    try:
        rows = conn.execute(
            "SELECT e.message FROM log_events e JOIN log_streams s ON s.id = e.stream_id "
            "WHERE s.name = ? ORDER BY e.timestamp, e.id",
            [stream],
        )
        return [r[0] for r in rows]
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def test_lines_partial_lines_long_lines_and_end_of_file(collector: LogCollector, tmp_path: Path) -> None:
    env = collector.open("ep", "AllTraffic")
    assert env.group == "/aws/sagemaker/Endpoints/ep" and env.stream.startswith("AllTraffic/i-")
    assert len(env.stream.split("/i-")[1]) == 17
    fd = env.output_fd
    assert fd is not None
    worker = os.dup(fd)  # the worker's copy, as the backend hands it over
    env.handed_over()
    assert env.output_fd is None
    os.write(worker, "first line\r\nsecond ".encode())
    os.write(worker, "half\n\n".encode())
    os.write(worker, b"x" * (MAX_MESSAGE_BYTES + 10) + b"\n")
    os.write(worker, "caf\xc3\xa9 \xff\n".encode("latin-1"))
    collector.sync()
    env.event("environment started in 1.0 ms")
    collector.sync()
    got = events(tmp_path / "logs.db", env.stream)
    assert got[:2] == ["first line", "second half"]  # CR LF stripped, empty lines are no events
    assert [len(m) for m in got[2:4]] == [MAX_MESSAGE_BYTES, 10]  # split at CloudWatch's size
    assert got[4] == "café \ufffd"
    assert got[5] == "coldbrew: environment started in 1.0 ms"
    os.write(worker, b"no newline at the end")
    os.close(worker)  # the worker is gone: what is left is its last event
    deadline = time.monotonic() + 5
    while "no newline at the end" not in events(tmp_path / "logs.db", env.stream):
        assert time.monotonic() < deadline
        collector.sync()
        time.sleep(0.01)
    assert not collector._pipes  # the pipe is closed once every writer is


def test_output_without_newline_becomes_an_event_after_a_second(
    collector: LogCollector, tmp_path: Path
) -> None:
    env = collector.open("ep", "AllTraffic")
    assert env.output_fd is not None
    worker = os.dup(env.output_fd)
    env.handed_over()
    os.write(worker, b"progress 10%")
    time.sleep(collector_module.PARTIAL_LINE_S + 2 * collector.flush_interval_s)
    collector.sync()
    assert events(tmp_path / "logs.db", env.stream) == ["progress 10%"]
    os.close(worker)


def test_the_server_output_copy_is_labelled_and_rate_limited(
    collector: LogCollector, echo: io.StringIO, tmp_path: Path
) -> None:
    env = collector.open("ep", "AllTraffic")
    assert env.output_fd is not None
    worker = os.dup(env.output_fd)
    env.handed_over()
    lines = int(collector_module.ECHO_BURST) + 300
    os.write(worker, b"".join(b"line %d\n" % i for i in range(lines)))
    os.close(worker)
    deadline = time.monotonic() + 5
    while len(events(tmp_path / "logs.db", env.stream)) < lines:  # all kept in the store
        assert time.monotonic() < deadline
        collector.sync()
        time.sleep(0.01)
    copied = echo.getvalue().splitlines()
    assert copied[0] == f"ep {env.stream} | line 0"
    assert lines - 300 <= len(copied) - 1 < lines
    assert copied[-1].startswith(f"ep {env.stream} | (")
    assert "lines not shown here to keep the server's log small" in copied[-1]
    assert copied[-1].endswith("they are in log group /aws/sagemaker/Endpoints/ep)")


def test_held_back_lines_are_counted_while_the_environment_still_runs(
    collector: LogCollector, echo: io.StringIO
) -> None:
    """A burst past the echo's limit from a worker that then goes quiet (but lives on) is counted in
    the server's output within a flush interval, not only when it prints again or ends."""
    env = collector.open("ep", "AllTraffic")
    assert env.output_fd is not None
    worker = os.dup(env.output_fd)
    env.handed_over()
    try:
        os.write(worker, b"".join(b"burst %d\n" % i for i in range(int(collector_module.ECHO_BURST) + 300)))
        deadline = time.monotonic() + 5
        while "lines not shown here" not in echo.getvalue():
            assert time.monotonic() < deadline, echo.getvalue()[-300:]
            time.sleep(0.02)
    finally:
        os.close(worker)


def test_close_reads_what_the_pipes_still_hold(tmp_path: Path) -> None:
    c = LogCollector(tmp_path / "logs.db", max_bytes_per_endpoint=1 << 30, retention_days=7)
    c.start()
    env = c.open("ep", "v")
    assert env.output_fd is not None
    os.write(env.output_fd, b"last words\n")
    env.event("environment released: the server stopping")
    c.close()  # the write end is still open (a worker that outlived serving): no wait for EOF
    env.handed_over()
    assert sorted(events(tmp_path / "logs.db", env.stream)) == [
        "coldbrew: environment released: the server stopping",
        "last words",
    ]
