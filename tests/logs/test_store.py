"""The log store and the Logs API's reads on it, without a server: cap, retention, ordering, and
GetLogEvents' and FilterLogEvents' paging exactly as CloudWatch Logs pages."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coldbrew.logs import query
from coldbrew.logs.errors import InvalidParameterException, ResourceNotFoundException
from coldbrew.logs.names import CAP_STREAM
from coldbrew.logs.store import EVENT_OVERHEAD, Event, LogWriter, NewStream, connect

GROUP = "/aws/sagemaker/Endpoints/ep"
CALLER = query.Caller("us-east-1", "123456789012", 7.0)


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[LogWriter]:
    w = LogWriter(tmp_path / "logs.db", max_bytes_per_group=10_000, retention_ms=86_400_000)
    yield w
    w.close()


@pytest.fixture
def conn(writer: LogWriter, tmp_path: Path) -> Iterator[sqlite3.Connection]:
    c = connect(tmp_path / "logs.db", readonly=True)
    yield c
    c.close()


def write(writer: LogWriter, stream: str, messages: list[str], at: int, group: str = GROUP) -> None:
    writer.write(
        [NewStream(group, stream, at)], [Event(group, stream, at + i, m) for i, m in enumerate(messages)], at
    )


def messages(answer: dict[str, Any]) -> list[str]:
    return [e["message"] for e in answer["events"]]


def test_timestamps_never_go_back_so_a_follower_misses_nothing(
    writer: LogWriter, conn: sqlite3.Connection
) -> None:
    write(writer, "A/i-1", ["first"], 5000)
    # An event that happened "earlier" but arrives later (a clock step back) is placed after.
    writer.write([], [Event(GROUP, "A/i-1", 1000, "late")], 6000)
    got = query.get_log_events(
        conn, {"logGroupName": GROUP, "logStreamName": "A/i-1", "startFromHead": True}, CALLER
    )
    assert messages(got) == ["first", "late"]
    assert [e["timestamp"] for e in got["events"]] == [5000, 5000]


def test_get_log_events_tokens_as_cloudwatch(writer: LogWriter, conn: sqlite3.Connection) -> None:
    write(writer, "A/i-1", [f"line {i}" for i in range(10)], 1000)
    params = {"logGroupName": GROUP, "logStreamName": "A/i-1"}
    # Without a token: the newest events, in ascending order.
    tail = query.get_log_events(conn, {**params, "limit": 3}, CALLER)
    assert messages(tail) == ["line 7", "line 8", "line 9"]
    # Backward: the three before, then the one left, then the same token back at the beginning.
    back = query.get_log_events(conn, {**params, "limit": 3, "nextToken": tail["nextBackwardToken"]}, CALLER)
    assert messages(back) == ["line 4", "line 5", "line 6"]
    back = query.get_log_events(conn, {**params, "limit": 5, "nextToken": back["nextBackwardToken"]}, CALLER)
    assert messages(back) == ["line 0", "line 1", "line 2", "line 3"]
    start = back["nextBackwardToken"]
    at_start = query.get_log_events(conn, {**params, "nextToken": start}, CALLER)
    assert at_start["events"] == [] and at_start["nextBackwardToken"] == start
    # Forward from the head: pages, then the same token back while nothing is new.
    head = query.get_log_events(conn, {**params, "limit": 4, "startFromHead": True}, CALLER)
    assert messages(head) == ["line 0", "line 1", "line 2", "line 3"]
    token = tail["nextForwardToken"]
    at_end = query.get_log_events(conn, {**params, "nextToken": token}, CALLER)
    assert at_end["events"] == [] and at_end["nextForwardToken"] == token
    assert at_end["nextBackwardToken"].startswith("b/")
    # New events: exactly those, after the token.
    writer.write([], [Event(GROUP, "A/i-1", 2000, "new one"), Event(GROUP, "A/i-1", 2001, "new two")], 2001)
    fresh = query.get_log_events(conn, {**params, "nextToken": token}, CALLER)
    assert messages(fresh) == ["new one", "new two"]
    assert fresh["nextForwardToken"] != token
    # startTime is inclusive, endTime exclusive.
    window = query.get_log_events(
        conn, {**params, "startTime": 1002, "endTime": 1005, "startFromHead": True}, CALLER
    )
    assert messages(window) == ["line 2", "line 3", "line 4"]


def test_an_empty_stream_gives_tokens_that_find_its_first_events(
    writer: LogWriter, conn: sqlite3.Connection
) -> None:
    writer.write([NewStream(GROUP, "A/i-1", 1000)], [], 1000)
    params = {"logGroupName": GROUP, "logStreamName": "A/i-1"}
    empty = query.get_log_events(conn, params, CALLER)
    assert empty["events"] == []
    writer.write([], [Event(GROUP, "A/i-1", 1500, "hello")], 1500)
    assert messages(
        query.get_log_events(conn, {**params, "nextToken": empty["nextForwardToken"]}, CALLER)
    ) == ["hello"]


def test_bad_tokens_and_missing_things(writer: LogWriter, conn: sqlite3.Connection) -> None:
    write(writer, "A/i-1", ["x"], 1000)
    params = {"logGroupName": GROUP, "logStreamName": "A/i-1"}
    for token in ("nonsense", "f/12/s", "x" * 60):
        with pytest.raises(InvalidParameterException, match="The specified nextToken is invalid."):
            query.get_log_events(conn, {**params, "nextToken": token}, CALLER)
    # A token of one query is no token of another.
    page = query.filter_log_events(conn, {"logGroupName": GROUP, "limit": 1}, CALLER)
    assert "nextToken" not in page
    write(writer, "A/i-1", ["y", "z"], 2000)
    page = query.filter_log_events(conn, {"logGroupName": GROUP, "limit": 1}, CALLER)
    with pytest.raises(InvalidParameterException):
        query.filter_log_events(
            conn, {"logGroupName": GROUP, "filterPattern": "y", "nextToken": page["nextToken"]}, CALLER
        )
    with pytest.raises(ResourceNotFoundException, match="^The specified log group does not exist.$"):
        query.describe_log_streams(conn, {"logGroupName": "/aws/sagemaker/Endpoints/nope"}, CALLER)
    with pytest.raises(ResourceNotFoundException, match="^The specified log stream does not exist.$"):
        query.get_log_events(conn, {"logGroupName": GROUP, "logStreamName": "B/i-2"}, CALLER)
    with pytest.raises(InvalidParameterException, match="mutually exclusive"):
        query.describe_log_streams(conn, {"logGroupName": GROUP, "logGroupIdentifier": GROUP}, CALLER)


def test_filter_interleaves_streams_in_time_order_and_pages(
    writer: LogWriter, conn: sqlite3.Connection
) -> None:
    writer.write(
        [NewStream(GROUP, "A/i-1", 1000), NewStream(GROUP, "B/i-2", 1000)],
        [
            Event(GROUP, "A/i-1" if i % 2 else "B/i-2", 1000 + i, f"event {i} {'odd' if i % 2 else 'even'}")
            for i in range(9)
        ],
        1010,
    )
    params: dict[str, Any] = {"logGroupName": GROUP, "limit": 2}
    seen: list[str] = []
    while True:
        page = query.filter_log_events(conn, params, CALLER)
        seen += [f"{e['logStreamName']}:{e['message']}" for e in page["events"]]
        if "nextToken" not in page:
            break
        params["nextToken"] = page["nextToken"]
    assert seen == [
        f"{'A/i-1' if i % 2 else 'B/i-2'}:event {i} {'odd' if i % 2 else 'even'}" for i in range(9)
    ]
    odd = query.filter_log_events(conn, {"logGroupName": GROUP, "filterPattern": 'odd -"event 3"'}, CALLER)
    assert [e["message"] for e in odd["events"]] == ["event 1 odd", "event 5 odd", "event 7 odd"]
    by_prefix = query.filter_log_events(conn, {"logGroupName": GROUP, "logStreamNamePrefix": "B/"}, CALLER)
    assert {e["logStreamName"] for e in by_prefix["events"]} == {"B/i-2"}
    by_name = query.filter_log_events(conn, {"logGroupName": GROUP, "logStreamNames": ["A/i-1"]}, CALLER)
    assert len(by_name["events"]) == 4
    # Both ends inclusive, as CloudWatch's FilterLogEvents has them.
    window = query.filter_log_events(
        conn, {"logGroupName": GROUP, "startTime": 1002, "endTime": 1004}, CALLER
    )
    assert [e["timestamp"] for e in window["events"]] == [1002, 1003, 1004]
    ids = [e["eventId"] for e in query.filter_log_events(conn, {"logGroupName": GROUP}, CALLER)["events"]]
    assert len(set(ids)) == 9 and all(len(i) == 56 and i.isdigit() for i in ids)


def test_describe_streams_and_groups_order_and_page(writer: LogWriter, conn: sqlite3.Connection) -> None:
    write(writer, "A/i-a", ["x"], 1000)
    write(writer, "B/i-c", ["x"], 2000)
    write(writer, "A/i-b", ["x"], 3000)
    write(writer, "A/i-1", ["x"], 1000, group="/aws/sagemaker/Endpoints/other")
    names = lambda answer: [s["logStreamName"] for s in answer["logStreams"]]  # noqa: E731
    base = {"logGroupName": GROUP}
    assert names(query.describe_log_streams(conn, base, CALLER)) == ["A/i-a", "A/i-b", "B/i-c"]
    assert names(query.describe_log_streams(conn, {**base, "descending": True}, CALLER)) == [
        "B/i-c",
        "A/i-b",
        "A/i-a",
    ]
    by_time = query.describe_log_streams(
        conn, {**base, "orderBy": "LastEventTime", "descending": True}, CALLER
    )
    assert names(by_time) == ["A/i-b", "B/i-c", "A/i-a"]
    assert names(query.describe_log_streams(conn, {**base, "logStreamNamePrefix": "A/"}, CALLER)) == [
        "A/i-a",
        "A/i-b",
    ]
    paged: list[str] = []
    params: dict[str, Any] = {**base, "limit": 1, "orderBy": "LastEventTime"}
    while True:
        page = query.describe_log_streams(conn, params, CALLER)
        paged += names(page)
        if "nextToken" not in page:
            break
        params["nextToken"] = page["nextToken"]
    assert paged == ["A/i-a", "B/i-c", "A/i-b"]
    with pytest.raises(
        InvalidParameterException, match="Cannot order by LastEventTime with a logStreamNamePrefix."
    ):
        query.describe_log_streams(
            conn, {**base, "orderBy": "LastEventTime", "logStreamNamePrefix": "A"}, CALLER
        )
    stream = query.describe_log_streams(conn, {**base, "limit": 1}, CALLER)["logStreams"][0]
    assert stream["arn"] == f"arn:aws:logs:us-east-1:123456789012:log-group:{GROUP}:log-stream:A/i-a"
    assert (
        stream["storedBytes"] == 0 and stream["firstEventTimestamp"] == stream["lastEventTimestamp"] == 1000
    )

    groups = query.describe_log_groups(conn, {"limit": 1}, CALLER)
    assert [g["logGroupName"] for g in groups["logGroups"]] == [GROUP]
    rest = query.describe_log_groups(conn, {"limit": 1, "nextToken": groups["nextToken"]}, CALLER)
    assert [g["logGroupName"] for g in rest["logGroups"]] == ["/aws/sagemaker/Endpoints/other"]
    assert "nextToken" not in rest
    group = groups["logGroups"][0]
    assert group["storedBytes"] == 3 * (1 + EVENT_OVERHEAD) and group["retentionInDays"] == 7
    assert group["arn"] == f"arn:aws:logs:us-east-1:123456789012:log-group:{GROUP}:*"
    assert query.describe_log_groups(conn, {"logGroupNamePattern": "OTH"}, CALLER)["logGroups"][0][
        "logGroupName"
    ].endswith("/other")
    by_arn = query.describe_log_streams(conn, {"logGroupIdentifier": group["logGroupArn"]}, CALLER)
    assert names(by_arn) == ["A/i-a", "A/i-b", "B/i-c"]


def test_the_cap_drops_the_oldest_events_counts_them_and_says_so(
    writer: LogWriter, conn: sqlite3.Connection
) -> None:
    size = 100 + EVENT_OVERHEAD
    for batch in range(3):  # 3 x 40 events of 126 bytes = 15,120 bytes against a cap of 10,000
        write(writer, "A/i-1", [f"{batch:02d}-{i:02d} " + "x" * 94 for i in range(40)], 1000 * (batch + 1))
    row = conn.execute(
        "SELECT stored_bytes, dropped_events, dropped_bytes FROM log_groups WHERE name = ?", [GROUP]
    ).fetchone()
    stored, dropped, dropped_bytes = row
    assert stored <= 10_000 and dropped >= 40 and dropped_bytes == dropped * size
    kept = messages(
        query.get_log_events(
            conn, {"logGroupName": GROUP, "logStreamName": "A/i-1", "startFromHead": True}, CALLER
        )
    )
    # The newest survive, in order; what went is the oldest, none in between.
    everything = [f"{b:02d}-{i:02d} " + "x" * 94 for b in range(3) for i in range(40)]
    assert kept == everything[len(everything) - len(kept) :]
    assert len(kept) + dropped == len(everything)
    notice = messages(
        query.get_log_events(conn, {"logGroupName": GROUP, "logStreamName": CAP_STREAM}, CALLER)
    )
    assert len(notice) == 1  # at most one a minute: the first drop is said at once, the rest later
    said = re.search(r"dropped the ([\d,]+) oldest events of this log group \(([\d,]+) bytes\)", notice[0])
    assert said is not None and 0 < int(said[1].replace(",", "")) <= dropped
    assert int(said[2].replace(",", "")) == int(said[1].replace(",", "")) * size
    assert "under its cap of 10,000 bytes (COLDBREW_LOGS_MAX_BYTES_PER_ENDPOINT)" in notice[0]
    # A single batch far over the cap keeps only its newest events and writes no more than the cap.
    write(writer, "A/i-1", ["y" * 200 for _ in range(200)], 9000)
    stored = conn.execute("SELECT stored_bytes FROM log_groups WHERE name = ?", [GROUP]).fetchone()[0]
    assert stored <= 10_000
    # ... and what the group held before is older than all of them: it went first.
    left = query.get_log_events(
        conn, {"logGroupName": GROUP, "logStreamName": "A/i-1", "startFromHead": True}, CALLER
    )
    assert set(messages(left)) == {"y" * 200}
    # A minute on, the next notice says every drop since the last one, and the total. (Notices
    # are events of the group like any other: an old one may itself have been dropped since.)
    write(writer, "A/i-1", ["z" * 100 for _ in range(40)], 70_000)
    notices = messages(
        query.get_log_events(conn, {"logGroupName": GROUP, "logStreamName": CAP_STREAM}, CALLER)
    )
    total = conn.execute("SELECT dropped_events FROM log_groups WHERE name = ?", [GROUP]).fetchone()[0]
    first = int(said[1].replace(",", ""))
    assert notices[-1].startswith(f"coldbrew: dropped the {total - first:,} oldest events")
    assert notices[-1].endswith(f"; {total:,} dropped in all")


def test_the_counters_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "logs.db"
    first = LogWriter(path, 10_000, 86_400_000)
    write(first, "A/i-1", ["x" * 100] * 60, 1000)
    first.close()
    second = LogWriter(path, 10_000, 86_400_000)
    write(second, "A/i-1", ["y" * 100] * 60, 5000)
    total = second.conn.execute("SELECT SUM(size) FROM log_events").fetchone()[0]
    stored = second.conn.execute("SELECT stored_bytes FROM log_groups").fetchone()[0]
    second.close()
    assert total == stored <= 10_000


def test_retention_drops_old_events_then_empty_streams_and_groups(
    writer: LogWriter, conn: sqlite3.Connection
) -> None:
    day = 86_400_000
    write(writer, "A/i-old", ["old"], 1000)
    write(writer, "A/i-new", ["new"], 1000 + day)
    write(writer, "A/i-x", ["gone"], 1000, group="/aws/sagemaker/Endpoints/deleted")
    assert writer.prune(1000 + day + 10, live_streams=set()) == 2
    streams = [
        s["logStreamName"]
        for s in query.describe_log_streams(conn, {"logGroupName": GROUP}, CALLER)["logStreams"]
    ]
    assert streams == ["A/i-new"]
    assert [g["logGroupName"] for g in query.describe_log_groups(conn, {}, CALLER)["logGroups"]] == [GROUP]
    assert conn.execute("SELECT stored_events FROM log_groups").fetchone()[0] == 1
