"""``coldbrew logs ENDPOINT [--follow] [--since 10m]``: an endpoint's logs, one event per line.

It reads the server's CloudWatch Logs API over HTTP, as ``aws logs tail`` would (FilterLogEvents
on ``/aws/sagemaker/Endpoints/<ENDPOINT>``, interleaved across its environments' streams), so it
works against any coldbrew a URL reaches (``--url``, or ``COLDBREW_URL``). ``--follow`` polls
every second as ``aws logs tail --follow`` does every five: from the newest timestamp seen, with
the events already printed at that timestamp left out. Ctrl+C ends it quietly (status 130,
as ``aws logs tail --follow``). A missing
endpoint is an error naming it (exit 1); one that exists but has not logged yet prints nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import sys
import time
from collections.abc import Iterator
from typing import Any

from coldbrew.logs.names import group_name
from coldbrew.server_client import DEFAULT_URL, server_client, server_url

POLL_S = 1.0
_RELATIVE = re.compile(r"(?P<amount>\d+)(?P<unit>[smhdw])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class _NoSuchEndpoint(Exception):
    pass


def since_ms(value: str, now: float) -> int:
    """``--since``: ``30s``, ``10m``, ``2h``, ``1d``, ``1w`` ago, or an ISO 8601 time (UTC unless
    it says otherwise); ValueError for anything else."""
    match = _RELATIVE.fullmatch(value.strip())
    if match:
        return int((now - int(match["amount"]) * _SECONDS[match["unit"]]) * 1000)
    try:
        moment = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(
            f"--since {value!r}: give a number and a unit (30s, 10m, 2h, 1d, 1w) or an ISO 8601 time"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


def format_event(event: dict[str, Any]) -> str:
    moment = dt.datetime.fromtimestamp(event["timestamp"] / 1000, dt.UTC)
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return f"{stamp} {event['logStreamName']} {event['message']}"


def _events(logs: Any, request: dict[str, Any], follow: bool) -> Iterator[dict[str, Any]]:
    """FilterLogEvents' pages; with ``follow``, forever, as ``aws logs tail --follow`` polls."""
    seen_at_newest: set[str] = set()
    newest: int | None = None
    while True:
        page = logs.filter_log_events(**request)
        for event in page["events"]:
            if event["timestamp"] == newest and event["eventId"] in seen_at_newest:
                continue  # printed already: a poll starts again at the newest timestamp seen
            if newest is None or event["timestamp"] > newest:
                newest, seen_at_newest = event["timestamp"], set()
            seen_at_newest.add(event["eventId"])
            yield event
        if "nextToken" in page:
            request["nextToken"] = page["nextToken"]
            continue
        if not follow:
            return
        request.pop("nextToken", None)
        if newest is not None:
            request["startTime"] = newest
        time.sleep(POLL_S)


def _resolve(args: argparse.Namespace) -> str | None:
    """The endpoint's name as it was created, or None if it does not exist (an endpoint without
    a log group yet, one whose environments never started, has none to show)."""
    from botocore.exceptions import ClientError

    try:
        described = server_client(args, "sagemaker", read_timeout=60).describe_endpoint(
            EndpointName=args.endpoint
        )
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("ValidationException", "ResourceNotFound"):
            return None
        raise
    return str(described["EndpointName"])


def logs_command(args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    request: dict[str, Any] = {"logGroupName": group_name(args.endpoint), "interleaved": True}
    try:
        if args.since:
            request["startTime"] = since_ms(args.since, time.time())
    except ValueError as exc:
        print(f"coldbrew: {exc}", file=sys.stderr)
        return 2
    if args.filter_pattern:
        request["filterPattern"] = args.filter_pattern
    logs = server_client(args, "logs", read_timeout=60)
    out = sys.stdout
    try:
        while True:
            try:
                for event in _events(logs, dict(request), args.follow):
                    out.write(format_event(event) + "\n")
                    out.flush()
                return 0
            except logs.exceptions.ResourceNotFoundException:
                name = _resolve(args)
                if name is None:
                    raise _NoSuchEndpoint from None
                if name != args.endpoint:
                    request["logGroupName"] = group_name(name)  # named in another case
                    args.endpoint = name
                    continue
                if not args.follow:
                    return 0  # it exists and has logged nothing yet
                time.sleep(POLL_S)
    except KeyboardInterrupt:
        return 130  # how --follow ends: quietly, with the status aws logs tail --follow gives
    except BrokenPipeError:
        # The reader went away (| head): nothing more to say, and nothing on stderr.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except _NoSuchEndpoint:
        print(f"coldbrew: endpoint {args.endpoint} not found at {server_url(args)}", file=sys.stderr)
        return 1
    except ClientError as exc:
        error = exc.response.get("Error", {})
        print(f"coldbrew: {error.get('Code', 'Error')}: {error.get('Message', exc)}", file=sys.stderr)
        return 1
    except BotoCoreError as exc:
        print(f"coldbrew: cannot read the logs at {server_url(args)}: {exc}", file=sys.stderr)
        return 1


def add_commands(commands: Any) -> None:
    parser = commands.add_parser(
        "logs", help="an endpoint's logs (its workers' output and coldbrew's events), one event per line"
    )
    parser.add_argument("endpoint", help="the endpoint's name")
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing new events (Ctrl+C stops)")
    parser.add_argument(
        "--since", help="from when: 30s, 10m, 2h, 1d, 1w ago or an ISO 8601 time (default: all that is kept)"
    )
    parser.add_argument(
        "--filter-pattern", help='only events that match: terms, "phrases", ?either ?term, -excluded'
    )
    parser.add_argument("--url", help=f"the coldbrew server (COLDBREW_URL, default {DEFAULT_URL})")
    parser.set_defaults(func=logs_command)
