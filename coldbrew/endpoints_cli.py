"""``coldbrew endpoints | describe | delete | invoke | deploy``: a running server, through its API.

Every command speaks to the server the way users' code does (boto3 on the SageMaker API, and
``/metrics`` for what is live), so it works against any coldbrew a URL reaches. The one exception
is ``endpoints``' invocations and cost today, which come from the server's store under
``--data-dir`` (the server offers no HTTP read of its metered history). Errors are one line and
exit 1; a missing endpoint is an error naming it, not an empty answer.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coldbrew.server_client import DEFAULT_URL, server_client, server_url, signed_get
from coldbrew.terminal import console, print_json


def _fail(message: str) -> int:
    print(f"coldbrew: {message}", file=sys.stderr)
    return 1


def _error_message(exc: Exception) -> str:
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'Error')}: {error.get('Message', exc)}"
    if isinstance(exc, BotoCoreError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _live_environments(args: argparse.Namespace) -> dict[str, dict[str, int]]:
    """Per endpoint (lower-case), environments by state, from the server's /metrics."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    try:
        response = signed_get(args, "/metrics")
    except httpx.HTTPError:
        return {}
    if response.status_code != 200:  # refused (a key without coldbrew:GetMetrics): no live counts
        return {}
    text = response.text
    out: dict[str, dict[str, int]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "coldbrew_scaling_environments":
            continue
        for sample in family.samples:
            states = out.setdefault(sample.labels["EndpointName"], {})
            state = sample.labels["state"]
            states[state] = states.get(state, 0) + int(sample.value)
    return out


def _variants(described: dict[str, Any]) -> str:
    parts = []
    for variant in described.get("ProductionVariants", []):
        serverless = variant.get("CurrentServerlessConfig") or variant.get("DesiredServerlessConfig")
        if serverless:
            parts.append(
                f"{variant['VariantName']}: {serverless['MemorySizeInMB']} MB x{serverless['MaxConcurrency']}"
            )
        else:
            count = variant.get("CurrentInstanceCount", variant.get("DesiredInstanceCount"))
            parts.append(f"{variant['VariantName']}: {count} instance(s)")
    return ", ".join(parts) or "-"


@dataclass(frozen=True)
class _Today:
    note: str
    """What the figures are, or (with no ``currency``) why there are none."""
    currency: str | None = None
    usage: dict[str, tuple[int, float]] = field(default_factory=dict)
    """Per endpoint (lower-case): invocations and cost."""


def _usage_today(args: argparse.Namespace, described: list[dict[str, Any]]) -> _Today:
    """Invocations and cost since 00:00 UTC, read from the store as ``coldbrew cost`` reads it.

    A data dir may hold another server's store (the default one, a previous run's) with endpoints
    of the same names, so it is believed only if it holds every listed endpoint with the creation
    time the server reports.
    """
    from coldbrew.metering.prices import load_prices
    from coldbrew.metering.query import MeterQueryError, cost_report, endpoint_creation_times, open_readonly

    now = time.time()
    try:
        db = _data_dir(args) / "coldbrew.db"
        prices = load_prices()
        conn = open_readonly(db)
        try:
            created = endpoint_creation_times(conn)
            for endpoint in described:
                at = created.get(endpoint["EndpointName"].lower())
                if at is None or abs(at - endpoint["CreationTime"].timestamp()) > 0.01:
                    return _Today(
                        f"{db} is not the store of the server at {server_url(args)}; pass its --data-dir"
                    )
            report = cost_report(conn, prices, None, now // 86400 * 86400, now)
        finally:
            conn.close()
    except (MeterQueryError, OSError, ValueError, sqlite3.Error) as exc:
        return _Today(str(exc))
    note = f"today: since 00:00 UTC; cost in {prices.currency} at {prices.region} prices of {prices.date}"
    region_note = prices.region_note(_region(described))
    if region_note:
        note += f"\nnote: {region_note}"
    return _Today(
        note,
        prices.currency,
        {e["EndpointName"]: (e["Invocations"], e["Cost"]) for e in report["Endpoints"]},
    )


def _region(described: list[dict[str, Any]]) -> str:
    """The region the endpoints are in, from their ARNs (the server's default if none)."""
    for endpoint in described:
        parts = str(endpoint.get("EndpointArn", "")).split(":")
        if len(parts) > 3 and parts[3]:
            return parts[3]
    from coldbrew.settings import Settings

    return Settings().region


def _data_dir(args: argparse.Namespace) -> Path:
    if args.data_dir is not None:
        return Path(args.data_dir)
    from coldbrew.settings import Settings

    return Settings().data_dir


def _environments(row: dict[str, Any]) -> str:
    counts = [f"{row[state]} {state}" for state in ("busy", "idle", "starting") if row[state]]
    return ", ".join(counts) or "none"


def _cost(cost: float | None) -> str:
    if cost is None:
        return "-"
    # A serverless invocation costs millionths of a dollar: say that it is not nothing.
    return "<0.0001" if 0 < cost < 0.00005 else f"{cost:,.4f}"


def endpoints_command(args: argparse.Namespace) -> int:
    sm = server_client(args, "sagemaker")
    try:
        listed = [e for page in sm.get_paginator("list_endpoints").paginate() for e in page["Endpoints"]]
        described = [sm.describe_endpoint(EndpointName=e["EndpointName"]) for e in listed]
    except Exception as exc:  # noqa: BLE001 - one line for whatever the server or network said
        return _fail(f"cannot list endpoints at {server_url(args)}: {_error_message(exc)}")
    # Before the store is read: a scrape of /metrics makes the server write its meter out first.
    live = _live_environments(args)
    today = _usage_today(args, described)
    if today.currency is None and described:
        print(f"coldbrew: no invocations and cost today: {today.note}", file=sys.stderr)
    rows = []
    for endpoint in described:
        name = endpoint["EndpointName"]
        states = live.get(name.lower(), {})
        invocations, cost = today.usage.get(name.lower(), (0, 0.0))
        known = today.currency is not None
        rows.append(
            {
                "name": name,
                "status": endpoint["EndpointStatus"],
                "variants": _variants(endpoint),
                "busy": states.get("busy", 0),
                "idle": states.get("idle", 0),
                "starting": states.get("starting", 0),
                "invocations_today": invocations if known else None,
                "cost_today": cost if known else None,
                "created": endpoint["CreationTime"].isoformat(timespec="seconds"),
            }
        )
    if args.json:
        print_json(rows)
        return 0
    from rich.table import Table

    out = console()
    if not rows:
        out.print(f"no endpoints at {server_url(args)}")
        return 0
    # Within 80 columns for everyday names; the variants and creation times only with --wide.
    wide = args.wide
    cost_header = f"{today.currency} today" if today.currency else "cost today"
    table = Table(
        "endpoint",
        "status",
        *(("variants",) if wide else ()),
        "environments",
        "invocations today",
        cost_header,
        *(("created",) if wide else ()),
    )
    for row in rows:
        invocations = row["invocations_today"]
        table.add_row(
            row["name"],
            row["status"],
            *((row["variants"],) if wide else ()),
            _environments(row),
            "-" if invocations is None else f"{invocations:,}",
            _cost(row["cost_today"]),
            *((row["created"],) if wide else ()),
        )
    out.print(table)
    if today.currency is not None:
        out.print(today.note)
    return 0


def describe_command(args: argparse.Namespace) -> int:
    sm = server_client(args, "sagemaker")
    try:
        described = sm.describe_endpoint(EndpointName=args.endpoint)
    except Exception as exc:  # noqa: BLE001
        return _fail(_not_found(args.endpoint, exc))
    described.pop("ResponseMetadata", None)
    if args.json:
        print_json(described)
        return 0
    out = console()
    out.print(f"[bold]{described['EndpointName']}[/]  {described['EndpointStatus']}")
    out.print(f"config     {described['EndpointConfigName']}")
    out.print(f"variants   {_variants(described)}")
    out.print(f"created    {described['CreationTime'].isoformat(timespec='seconds')}")
    if described.get("FailureReason"):
        out.print(f"failure    {described['FailureReason']}")
    return 0


def delete_command(args: argparse.Namespace) -> int:
    sm = server_client(args, "sagemaker")
    try:
        sm.delete_endpoint(EndpointName=args.endpoint)
        if args.wait:
            sm.get_waiter("endpoint_deleted").wait(
                EndpointName=args.endpoint, WaiterConfig={"Delay": 0.2, "MaxAttempts": 600}
            )
    except Exception as exc:  # noqa: BLE001
        return _fail(_not_found(args.endpoint, exc))
    print(f"deleted {args.endpoint}" if args.wait else f"deleting {args.endpoint}")
    return 0


def invoke_command(args: argparse.Namespace) -> int:
    body: bytes
    if args.body == "-":
        body = sys.stdin.buffer.read()
    elif args.body.startswith("@"):
        try:
            with open(args.body[1:], "rb") as source:
                body = source.read()
        except OSError as exc:
            return _fail(f"cannot read {args.body[1:]}: {exc.strerror or exc}")
    else:
        body = args.body.encode()
    runtime = server_client(args, "sagemaker-runtime")
    extra = {"Accept": args.accept} if args.accept else {}
    try:
        response = runtime.invoke_endpoint(
            EndpointName=args.endpoint, Body=body, ContentType=args.content_type, **extra
        )
    except Exception as exc:  # noqa: BLE001
        return _fail(_not_found(args.endpoint, exc))
    sys.stdout.buffer.write(response["Body"].read())
    if sys.stdout.isatty():
        sys.stdout.write("\n")
    sys.stdout.flush()
    return 0


def _not_found(endpoint: str, exc: Exception) -> str:
    message = _error_message(exc)
    if "not found" in message.lower() or "could not find" in message.lower():
        return f"endpoint {endpoint} not found ({message})"
    return message


def add_commands(commands: Any) -> None:
    def with_url(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument("--url", help=f"the coldbrew server (COLDBREW_URL, default {DEFAULT_URL})")
        return parser

    listing = with_url(
        commands.add_parser(
            "endpoints", help="list endpoints with their live environments, invocations and cost today"
        )
    )
    listing.add_argument(
        "--data-dir",
        type=Path,
        help="the server's data dir, for invocations and cost today (COLDBREW_DATA_DIR)",
    )
    listing.add_argument("--wide", action="store_true", help="every column, whatever the terminal's width")
    listing.add_argument("--json", action="store_true", help="JSON for programs instead of a table")
    listing.set_defaults(func=endpoints_command)

    describe = with_url(commands.add_parser("describe", help="one endpoint's status, config and variants"))
    describe.add_argument("endpoint", help="the endpoint's name")
    describe.add_argument("--json", action="store_true", help="DescribeEndpoint's answer as JSON")
    describe.set_defaults(func=describe_command)

    delete = with_url(commands.add_parser("delete", help="delete an endpoint"))
    delete.add_argument("endpoint", help="the endpoint's name")
    delete.add_argument("--wait", action="store_true", help="return once it is gone")
    delete.set_defaults(func=delete_command)

    invoke = with_url(commands.add_parser("invoke", help="invoke an endpoint and print its answer"))
    invoke.add_argument("endpoint", help="the endpoint's name")
    invoke.add_argument(
        "--body", required=True, help="the payload: @FILE, - for standard input, or the text itself"
    )
    invoke.add_argument("--content-type", default="text/csv", help="the payload's type (default text/csv)")
    invoke.add_argument("--accept", help="the answer's type to ask for")
    invoke.set_defaults(func=invoke_command)

    add_deploy_command(commands)


def _model_data_url(source: str) -> str:
    """A ModelDataUrl for ``source``: URLs as they are; a local archive as a file:// URL; a model
    file or a directory packed into an archive first, kept (by content) in the user's cache
    directory so the server can fetch it again after a restart."""
    import hashlib
    import io
    import tarfile
    from pathlib import Path

    import platformdirs

    if source.startswith(("s3://", "https://", "file://")):
        return source
    path = Path(source).expanduser().resolve()
    if not path.exists():
        raise ValueError(f"{source}: no such file or directory")
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz")):
        return path.as_uri()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file():
                    tar.add(child, arcname=str(child.relative_to(path)))
        else:
            tar.add(path, arcname=path.name)
    data = buffer.getvalue()
    cache = Path(platformdirs.user_cache_dir("coldbrew", appauthor=False)) / "deploy"
    cache.mkdir(parents=True, exist_ok=True)
    archive = cache / f"{hashlib.sha256(data).hexdigest()[:16]}.tar.gz"
    if not archive.exists():
        partial = archive.with_suffix(".partial")
        partial.write_bytes(data)
        partial.replace(archive)
    return archive.as_uri()


def _endpoint_name(source: str) -> str:
    import re

    stem = source.rstrip("/").rsplit("/", 1)[-1].split(".", 1)[0]
    name = re.sub(r"[^a-zA-Z0-9]+", "-", stem).strip("-")[:50] or "model"
    return name if name[0].isalnum() else f"m{name}"


def deploy_command(args: argparse.Namespace) -> int:
    import time

    try:
        url = _model_data_url(args.model)
    except (OSError, ValueError) as exc:
        return _fail(str(exc))
    name = args.name or _endpoint_name(args.model)
    sm = server_client(args, "sagemaker")
    serverless = {"MemorySizeInMB": args.memory, "MaxConcurrency": args.max_concurrency}
    started = time.monotonic()
    try:
        sm.create_model(ModelName=name, PrimaryContainer={"ModelDataUrl": url})
        sm.create_endpoint_config(
            EndpointConfigName=f"{name}-config",
            ProductionVariants=[
                {"VariantName": "AllTraffic", "ModelName": name, "ServerlessConfig": serverless}
            ],
        )
        sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config")
        with console().status(f"deploying {name}") as spinner:
            while True:
                described = sm.describe_endpoint(EndpointName=name)
                status = described["EndpointStatus"]
                if status in ("InService", "Failed"):
                    break
                # Model downloads and pip installs can take minutes: say it is still going.
                spinner.update(f"deploying {name}: {status}, {time.monotonic() - started:.0f} s")
                time.sleep(0.05)
    except Exception as exc:  # noqa: BLE001
        return _fail(f"cannot deploy {name}: {_error_message(exc)}")
    elapsed_ms = (time.monotonic() - started) * 1000
    if status == "Failed":
        return _fail(f"{name} failed: {described.get('FailureReason', 'no reason given')}")
    size = f"{args.memory} MB, MaxConcurrency {args.max_concurrency}"
    print(f"{name} is InService ({size}) in {elapsed_ms:.0f} ms")
    return 0


def add_deploy_command(commands: Any) -> None:
    deploy = commands.add_parser(
        "deploy", help="one model file, directory or archive to a serverless endpoint"
    )
    deploy.add_argument(
        "model", help="a model file (model.joblib, xgboost-model, ...), a directory, an archive or a URL"
    )
    deploy.add_argument("--name", help="endpoint and model name (default: from the file name)")
    deploy.add_argument("--memory", type=int, default=2048, help="MemorySizeInMB (default 2048)")
    deploy.add_argument("--max-concurrency", type=int, default=5, help="MaxConcurrency (default 5)")
    deploy.add_argument("--url", help=f"the coldbrew server (COLDBREW_URL, default {DEFAULT_URL})")
    deploy.set_defaults(func=deploy_command)
