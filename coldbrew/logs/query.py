"""The read side of the Logs API: each operation as a function of a read-only connection and the
request's (validated) parameters, answering CloudWatch Logs' response shape.

Semantics follow CloudWatch Logs:

- DescribeLogGroups: groups by name; ``logGroupNamePrefix`` (case-sensitive) or
  ``logGroupNamePattern`` (a case-insensitive substring), not both; up to 50 a page.
- DescribeLogStreams: by name (or ``orderBy=LastEventTime``, which takes no prefix), ``descending``.
- GetLogEvents: one stream, ``startTime`` <= timestamp < ``endTime``; without a token the newest
  ``limit`` events (the oldest with ``startFromHead``), in ascending order either way; a
  ``nextForwardToken`` continues after the last event returned, a ``nextBackwardToken`` before the
  first, and a token with nothing past it comes back as it was sent.
- FilterLogEvents: the group's events in time order across streams (``interleaved``),
  ``startTime`` <= timestamp <= ``endTime``, matching the filter pattern; ``nextToken`` while more
  match. Responses stop at ``limit`` events or 1 MB, as CloudWatch's do.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from coldbrew.logs import patterns, tokens
from coldbrew.logs.errors import BAD_TOKEN, GROUP_NOT_FOUND, STREAM_NOT_FOUND, InvalidParameterException
from coldbrew.logs.errors import ResourceNotFoundException as NotFound
from coldbrew.logs.names import group_arn, group_from_identifier, stream_arn

MAX_RESPONSE_BYTES = 1_048_576
DEFAULT_PAGE = 50
DEFAULT_EVENTS = 10_000


@dataclass(frozen=True)
class Caller:
    """Who asks: the region and account the ARNs name."""

    region: str
    account: str
    retention_days: float | None = None


def _group_of(conn: sqlite3.Connection, params: dict[str, Any]) -> tuple[int, str]:
    name = params.get("logGroupName")
    identifier = params.get("logGroupIdentifier")
    if name is not None and identifier is not None:
        raise InvalidParameterException("LogGroup name and LogGroup ARN are mutually exclusive parameters.")
    if name is None and identifier is None:
        raise InvalidParameterException("Either logGroupName or logGroupIdentifier must be specified.")
    group = name if name is not None else group_from_identifier(str(identifier))
    row = conn.execute("SELECT id FROM log_groups WHERE name = ?", [group]).fetchone()
    if row is None:
        raise NotFound(GROUP_NOT_FOUND)
    return int(row[0]), str(group)


def _retention(caller: Caller) -> dict[str, int]:
    days = caller.retention_days
    return {"retentionInDays": int(days)} if days is not None and days == int(days) else {}


# --- DescribeLogGroups -----------------------------------------------------------------------


def describe_log_groups(conn: sqlite3.Connection, params: dict[str, Any], caller: Caller) -> dict[str, Any]:
    prefix = params.get("logGroupNamePrefix")
    pattern = params.get("logGroupNamePattern")
    if prefix is not None and pattern is not None:
        raise InvalidParameterException(
            "LogGroup name prefix and LogGroup name pattern are mutually exclusive parameters."
        )
    identifiers = params.get("logGroupIdentifiers")
    if identifiers is not None and (prefix is not None or pattern is not None):
        raise InvalidParameterException(
            "logGroupIdentifiers cannot be combined with logGroupNamePrefix or logGroupNamePattern."
        )
    if params.get("logGroupClass") not in (None, "STANDARD"):
        return {"logGroups": []}  # every group coldbrew keeps is of the STANDARD class
    limit = int(params.get("limit") or DEFAULT_PAGE)
    query = {k: params.get(k) for k in ("logGroupNamePrefix", "logGroupNamePattern", "logGroupIdentifiers")}
    where: list[str] = ["1"]
    args: list[Any] = []
    if params.get("nextToken"):
        (after,) = tokens.decode(params["nextToken"], ["groups", query])
        where.append("name > ?")
        args.append(str(after))
    if prefix is not None:
        where.append("substr(name, 1, ?) = ?")
        args += [len(prefix), prefix]
    if pattern is not None:
        where.append("instr(lower(name), lower(?)) > 0")
        args.append(pattern)
    if identifiers is not None:
        names = [group_from_identifier(i) for i in identifiers]
        where.append(f"name IN ({', '.join('?' * len(names))})")
        args += names
    rows = conn.execute(
        f"SELECT name, created_ms, stored_bytes FROM log_groups WHERE {' AND '.join(where)} "
        "ORDER BY name LIMIT ?",
        [*args, limit + 1],
    ).fetchall()
    groups = []
    for name, created, stored in rows[:limit]:
        arn = group_arn(caller.region, caller.account, name)
        groups.append(
            {
                "logGroupName": name,
                "creationTime": created,
                **_retention(caller),
                "metricFilterCount": 0,
                "arn": arn,
                "storedBytes": stored,
                "logGroupClass": "STANDARD",
                "logGroupArn": arn.removesuffix(":*"),
            }
        )
    answer: dict[str, Any] = {"logGroups": groups}
    if len(rows) > limit:
        answer["nextToken"] = tokens.encode([groups[-1]["logGroupName"]], ["groups", query])
    return answer


# --- DescribeLogStreams ----------------------------------------------------------------------


def describe_log_streams(conn: sqlite3.Connection, params: dict[str, Any], caller: Caller) -> dict[str, Any]:
    group_id, group = _group_of(conn, params)
    order = params.get("orderBy") or "LogStreamName"
    prefix = params.get("logStreamNamePrefix")
    if order == "LastEventTime" and prefix is not None:
        raise InvalidParameterException("Cannot order by LastEventTime with a logStreamNamePrefix.")
    descending = bool(params.get("descending"))
    limit = int(params.get("limit") or DEFAULT_PAGE)
    query = ["streams", group, order, descending, prefix]
    where: list[str] = ["group_id = ?"]
    args: list[Any] = [group_id]
    if prefix is not None:
        where.append("substr(name, 1, ?) = ?")
        args += [len(prefix), prefix]
    sort = ["COALESCE(last_event_ms, 0)", "name"] if order == "LastEventTime" else ["name"]
    if params.get("nextToken"):
        after = tokens.decode(params["nextToken"], query)
        if len(after) != len(sort):
            raise InvalidParameterException(BAD_TOKEN)
        marks = ", ".join("?" * len(after))
        where.append(f"({', '.join(sort)}) {'<' if descending else '>'} ({marks})")
        args += after
    direction = " DESC" if descending else ""
    columns = ", ".join(f"{c}{direction}" for c in sort)
    rows = conn.execute(
        "SELECT name, created_ms, first_event_ms, last_event_ms, last_ingestion_ms FROM log_streams "
        f"WHERE {' AND '.join(where)} ORDER BY {columns} LIMIT ?",
        [*args, limit + 1],
    ).fetchall()
    streams = []
    for name, created, first, last, ingested in rows[:limit]:
        stream: dict[str, Any] = {"logStreamName": name, "creationTime": created}
        if first is not None:
            stream.update(firstEventTimestamp=first, lastEventTimestamp=last, lastIngestionTime=ingested)
        # storedBytes: always 0, as CloudWatch has reported it for streams since 2019.
        stream.update(arn=stream_arn(caller.region, caller.account, group, name), storedBytes=0)
        streams.append(stream)
    answer: dict[str, Any] = {"logStreams": streams}
    if len(rows) > limit:
        last_row = rows[limit - 1]
        after_key = [last_row[3] or 0, last_row[0]] if order == "LastEventTime" else [last_row[0]]
        answer["nextToken"] = tokens.encode(after_key, query)
    return answer


# --- GetLogEvents ----------------------------------------------------------------------------


def get_log_events(conn: sqlite3.Connection, params: dict[str, Any], caller: Caller) -> dict[str, Any]:
    group_id, _ = _group_of(conn, params)
    row = conn.execute(
        "SELECT id FROM log_streams WHERE group_id = ? AND name = ?", [group_id, params["logStreamName"]]
    ).fetchone()
    if row is None:
        raise NotFound(STREAM_NOT_FOUND)
    stream_id = int(row[0])
    limit = int(params.get("limit") or DEFAULT_EVENTS)
    where: list[str] = ["stream_id = ?"]
    args: list[Any] = [stream_id]
    if params.get("startTime") is not None:
        where.append("timestamp >= ?")
        args.append(int(params["startTime"]))
    if params.get("endTime") is not None:
        where.append("timestamp < ?")
        args.append(int(params["endTime"]))
    token = params.get("nextToken")
    if token:
        way, position = tokens.parse_event_token(token)
        forward = way == "f"
        where.append(f"(timestamp, id) {'>' if forward else '<'} (?, ?)")
        args += list(position)
    else:
        forward = bool(params.get("startFromHead"))
    direction = "" if forward else " DESC"
    cursor = conn.execute(
        f"SELECT timestamp, id, message, ingestion, size FROM log_events WHERE {' AND '.join(where)} "
        f"ORDER BY timestamp{direction}, id{direction} LIMIT ?",
        [*args, limit],
    )
    rows = _within_bytes(cursor)
    if not forward:
        rows.reverse()
    events = [
        {"timestamp": ts, "message": message, "ingestionTime": ingested} for ts, _, message, ingested in rows
    ]
    if rows:
        first, last = (rows[0][0], rows[0][1]), (rows[-1][0], rows[-1][1])
        return {
            "events": events,
            "nextForwardToken": tokens.event_token("f", last),
            "nextBackwardToken": tokens.event_token("b", first),
        }
    if token:
        # Nothing past it: the same token back, as CloudWatch answers a reader at the end.
        way, position = tokens.parse_event_token(token)
        other = tokens.event_token("b" if way == "f" else "f", position)
        forward_token, backward_token = (token, other) if way == "f" else (other, token)
        return {"events": [], "nextForwardToken": forward_token, "nextBackwardToken": backward_token}
    start = (int(params.get("startTime") or 0), 0)
    return {
        "events": [],
        "nextForwardToken": tokens.event_token("f", start),
        "nextBackwardToken": tokens.event_token("b", start),
    }


def _within_bytes(cursor: sqlite3.Cursor) -> list[tuple[int, int, str, int]]:
    """Rows up to CloudWatch's 1 MB a response (at least one)."""
    rows: list[tuple[int, int, str, int]] = []
    total = 0
    for ts, event_id, message, ingested, size in cursor:
        total += size
        if rows and total > MAX_RESPONSE_BYTES:
            break
        rows.append((ts, event_id, message, ingested))
    cursor.close()
    return rows


# --- FilterLogEvents -------------------------------------------------------------------------


def filter_log_events(conn: sqlite3.Connection, params: dict[str, Any], caller: Caller) -> dict[str, Any]:
    group_id, group = _group_of(conn, params)
    names = params.get("logStreamNames")
    prefix = params.get("logStreamNamePrefix")
    if names is not None and prefix is not None:
        raise InvalidParameterException(
            "logStreamNames and logStreamNamePrefix are mutually exclusive parameters."
        )
    pattern = patterns.parse(params.get("filterPattern"))
    limit = int(params.get("limit") or DEFAULT_EVENTS)
    start, end = params.get("startTime"), params.get("endTime")
    query = ["filter", group, names, prefix, params.get("filterPattern"), start, end]
    where: list[str] = ["e.group_id = ?"]
    args: list[Any] = [group_id]
    join = ""
    if names is not None or prefix is not None:
        join = "JOIN log_streams s ON s.id = e.stream_id"
    if names is not None:
        where.append(f"s.name IN ({', '.join('?' * len(names))})")
        args += list(names)
    if prefix is not None:
        where.append("substr(s.name, 1, ?) = ?")
        args += [len(prefix), prefix]
    if start is not None:
        where.append("e.timestamp >= ?")
        args.append(int(start))
    if end is not None:
        where.append("e.timestamp <= ?")
        args.append(int(end))
    if params.get("nextToken"):
        after = tokens.decode(params["nextToken"], query)
        where.append("(e.timestamp, e.id) > (?, ?)")
        args += [int(after[0]), int(after[1])]
    matched, matched_args = pattern.sql("e.message")
    where.append(matched)
    args += matched_args
    cursor = conn.execute(
        f"SELECT e.timestamp, e.id, e.message, e.ingestion, e.size, e.stream_id FROM log_events e {join} "
        f"WHERE {' AND '.join(where)} ORDER BY e.timestamp, e.id LIMIT ?",
        [*args, limit + 1],
    )
    rows: list[tuple[int, int, str, int, int, int]] = []
    total = 0
    more = False
    for row in cursor:
        total += row[4]
        if len(rows) == limit or (rows and total > MAX_RESPONSE_BYTES):
            more = True
            break
        rows.append(row)
    cursor.close()
    stream_names = _stream_names(conn, {row[5] for row in rows})
    events = [
        {
            "logStreamName": stream_names[stream_id],
            "timestamp": ts,
            "message": message,
            "ingestionTime": ingested,
            "eventId": event_id_of(ts, event_id),
        }
        for ts, event_id, message, ingested, _, stream_id in rows
    ]
    answer: dict[str, Any] = {"events": events}
    if more:
        answer["nextToken"] = tokens.encode([rows[-1][0], rows[-1][1]], query)
    return answer


def event_id_of(timestamp: int, event_id: int) -> str:
    """CloudWatch's eventIds are 56 digits; coldbrew's are the event's position, as digits."""
    return f"{timestamp:020d}{event_id:036d}"


def _stream_names(conn: sqlite3.Connection, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    marks = ", ".join("?" * len(ids))
    return {
        int(i): str(n)
        for i, n in conn.execute(f"SELECT id, name FROM log_streams WHERE id IN ({marks})", list(ids))
    }
