"""``coldbrew deploy-stack | delete-stack | describe-stack | stacks``: CloudFormation stacks on a
running server, through its CloudFormation API (as ``aws cloudformation deploy`` does it: a
change set, shown, then executed), with the stack's events printed as they happen.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from coldbrew.server_client import DEFAULT_URL, server_client, server_url
from coldbrew.terminal import console, print_json

POLL_S = 0.5
DONE = frozenset(
    {
        "CREATE_COMPLETE",
        "CREATE_FAILED",
        "ROLLBACK_COMPLETE",
        "ROLLBACK_FAILED",
        "UPDATE_COMPLETE",
        "UPDATE_ROLLBACK_COMPLETE",
        "UPDATE_ROLLBACK_FAILED",
        "DELETE_COMPLETE",
        "DELETE_FAILED",
        "UPDATE_FAILED",
    }
)
SUCCEEDED = frozenset({"CREATE_COMPLETE", "UPDATE_COMPLETE", "DELETE_COMPLETE"})


def _fail(message: str) -> int:
    print(f"coldbrew: {message}", file=sys.stderr)
    return 1


def _error(exc: Exception) -> tuple[str, str]:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return str(error.get("Code", "Error")), str(error.get("Message", exc))
    return type(exc).__name__, str(exc)


def _parameters(pairs: list[str]) -> dict[str, str]:
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--parameter {pair!r} is not KEY=VALUE")
        values[key] = value
    return values


def _stack(cf: Any, name: str) -> dict[str, Any] | None:
    from botocore.exceptions import ClientError

    try:
        stacks = cf.describe_stacks(StackName=name)["Stacks"]
    except ClientError as exc:
        if _error(exc)[0] == "ValidationError" and "does not exist" in _error(exc)[1]:
            return None
        raise
    return stacks[0] if stacks else None


def _style(status: str) -> str:
    if status.endswith("FAILED") or "ROLLBACK" in status:
        return "red"
    if status.endswith("COMPLETE"):
        return "green"
    return "yellow"


class _Events:
    """Prints a stack's new events, oldest first, as they appear."""

    def __init__(self, cf: Any, stack_id: str, seen: set[str]) -> None:
        self.cf, self.stack_id, self.seen = cf, stack_id, seen
        self.out = console()

    def print_new(self) -> None:
        fresh = []
        for page in self.cf.get_paginator("describe_stack_events").paginate(StackName=self.stack_id):
            batch = [e for e in page["StackEvents"] if e["EventId"] not in self.seen]
            fresh += batch
            if len(batch) < len(page["StackEvents"]):
                break
        for event in reversed(fresh):
            self.seen.add(event["EventId"])
            status = event["ResourceStatus"]
            reason = event.get("ResourceStatusReason")
            line = (
                f"{event['Timestamp'].strftime('%H:%M:%S')}  [{_style(status)}]{status:<45}[/]  "
                f"{event['ResourceType']:<32} {event['LogicalResourceId']}"
            )
            physical = event.get("PhysicalResourceId")
            if physical and not physical.startswith("arn:aws:cloudformation"):
                line += f" ({physical})"
            self.out.print(line, highlight=False)
            if reason:
                self.out.print(f"          {reason}", highlight=False, style="dim")


def _existing_event_ids(cf: Any, stack_id: str) -> set[str]:
    seen: set[str] = set()
    for page in cf.get_paginator("describe_stack_events").paginate(StackName=stack_id):
        seen.update(e["EventId"] for e in page["StackEvents"])
    return seen


def _follow(cf: Any, stack_id: str, seen: set[str]) -> dict[str, Any] | None:
    """Print the stack's events until its operation ends; the stack as it ends (None: gone)."""
    events = _Events(cf, stack_id, seen)
    while True:
        events.print_new()
        stack = _stack(cf, stack_id)
        if stack is None or stack["StackStatus"] in DONE:
            events.print_new()
            return stack
        time.sleep(POLL_S)


def _print_changes(changes: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table("action", "logical id", "type", "replacement", title="changes")
    for change in changes:
        resource = change["ResourceChange"]
        table.add_row(
            resource["Action"],
            resource["LogicalResourceId"],
            resource["ResourceType"],
            resource.get("Replacement", "-"),
        )
    console().print(table)


def _print_outputs(stack: dict[str, Any]) -> None:
    outputs = stack.get("Outputs") or []
    if not outputs:
        return
    from rich.table import Table

    table = Table("output", "value", "description", title="outputs")
    for output in outputs:
        table.add_row(output["OutputKey"], output["OutputValue"], output.get("Description", ""))
    console().print(table)


def deploy_stack_command(args: argparse.Namespace) -> int:
    try:
        body = Path(args.template).read_text()
        parameters = _parameters(args.parameter or [])
        tags = _parameters(args.tag or [])
    except (OSError, ValueError) as exc:
        return _fail(str(exc))
    cf = server_client(args, "cloudformation")
    name = args.stack_name
    try:
        stack = _stack(cf, name)
        if stack is not None and stack["StackStatus"] == "ROLLBACK_COMPLETE":
            return _fail(
                f"stack {name} is ROLLBACK_COMPLETE: its creation failed and was rolled back "
                f"({stack.get('StackStatusReason', 'see coldbrew describe-stack')}). Delete it "
                f"(coldbrew delete-stack {name}) and deploy again."
            )
        creating = stack is None or stack["StackStatus"] == "REVIEW_IN_PROGRESS"
        values: list[dict[str, Any]] = [
            {"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()
        ]
        if not creating:
            # As aws cloudformation deploy: parameters not given keep their previous values.
            summary = cf.get_template_summary(StackName=name)
            values += [
                {"ParameterKey": p["ParameterKey"], "UsePreviousValue": True}
                for p in summary["Parameters"]
                if p["ParameterKey"] not in parameters
            ]
            summary_new = cf.get_template_summary(TemplateBody=body)
            wanted = {p["ParameterKey"] for p in summary_new["Parameters"]}
            values = [v for v in values if v["ParameterKey"] in wanted or "ParameterValue" in v]
        request: dict[str, Any] = {
            "StackName": name,
            "ChangeSetName": f"coldbrew-deploy-{int(time.time() * 1000)}",
            "ChangeSetType": "CREATE" if creating else "UPDATE",
            "TemplateBody": body,
            "Parameters": values,
            "Description": "Created by coldbrew deploy-stack",
        }
        if tags:
            request["Tags"] = [{"Key": k, "Value": v} for k, v in tags.items()]
        created = cf.create_change_set(**request)
        change_set = cf.describe_change_set(ChangeSetName=created["Id"])
        if change_set["Status"] == "FAILED":
            reason = change_set.get("StatusReason", "")
            if "didn't contain changes" in reason:
                cf.delete_change_set(ChangeSetName=created["Id"])
                console().print(f"No changes to deploy: stack {name} is up to date.")
                return 0
            return _fail(f"the change set failed: {reason}")
        _print_changes(change_set.get("Changes", []))
        seen = _existing_event_ids(cf, created["StackId"])
        cf.execute_change_set(
            ChangeSetName=created["Id"], StackName=created["StackId"], DisableRollback=args.disable_rollback
        )
        final = _follow(cf, created["StackId"], seen)
    except Exception as exc:  # noqa: BLE001 - one line for whatever the server or network said
        code, message = _error(exc)
        return _fail(f"cannot deploy stack {name} at {server_url(args)}: {code}: {message}")
    if final is None:
        return _fail(f"stack {name} is gone")
    status = final["StackStatus"]
    out = console()
    out.print(f"stack {name}: [{_style(status)}]{status}[/]", highlight=False)
    if status not in SUCCEEDED:
        if final.get("StackStatusReason"):
            out.print(final["StackStatusReason"], highlight=False)
        return 1
    _print_outputs(final)
    return 0


def delete_stack_command(args: argparse.Namespace) -> int:
    cf = server_client(args, "cloudformation")
    name = args.stack_name
    try:
        stack = _stack(cf, name)
        if stack is None:
            return _fail(f"stack {name} does not exist at {server_url(args)}")
        seen = _existing_event_ids(cf, stack["StackId"])
        cf.delete_stack(StackName=stack["StackId"])
        if args.no_wait:
            return 0
        final = _follow(cf, stack["StackId"], seen)
    except Exception as exc:  # noqa: BLE001
        code, message = _error(exc)
        return _fail(f"cannot delete stack {name} at {server_url(args)}: {code}: {message}")
    status = final["StackStatus"] if final is not None else "DELETE_COMPLETE"
    console().print(f"stack {name}: [{_style(status)}]{status}[/]", highlight=False)
    return 0 if status == "DELETE_COMPLETE" else 1


def describe_stack_command(args: argparse.Namespace) -> int:
    cf = server_client(args, "cloudformation")
    name = args.stack_name
    try:
        stack = _stack(cf, name)
        if stack is None:
            return _fail(f"stack {name} does not exist at {server_url(args)}")
        resources = cf.describe_stack_resources(StackName=stack["StackId"])["StackResources"]
        events = cf.describe_stack_events(StackName=stack["StackId"])["StackEvents"][: args.events]
    except Exception as exc:  # noqa: BLE001
        code, message = _error(exc)
        return _fail(f"cannot describe stack {name} at {server_url(args)}: {code}: {message}")
    if args.json:
        print_json({"Stack": stack, "Resources": resources, "Events": events})
        return 0
    from rich.table import Table

    out = console()
    status = stack["StackStatus"]
    out.print(f"[bold]{stack['StackName']}[/]  [{_style(status)}]{status}[/]", highlight=False)
    if stack.get("StackStatusReason"):
        out.print(f"  {stack['StackStatusReason']}", highlight=False)
    if stack.get("Description"):
        out.print(f"  {' '.join(stack['Description'].split())}", highlight=False, style="dim")
    out.print(f"  {stack['StackId']}", highlight=False, style="dim")
    if stack.get("Parameters"):
        table = Table("parameter", "value", title="parameters")
        for parameter in stack["Parameters"]:
            table.add_row(parameter["ParameterKey"], parameter["ParameterValue"])
        out.print(table)
    table = Table("logical id", "type", "physical id", "status", title="resources")
    for resource in resources:
        table.add_row(
            resource["LogicalResourceId"],
            resource["ResourceType"],
            resource.get("PhysicalResourceId", ""),
            f"[{_style(resource['ResourceStatus'])}]{resource['ResourceStatus']}[/]",
        )
    out.print(table)
    _print_outputs(stack)
    if events:
        table = Table("time", "logical id", "status", "reason", title=f"last {len(events)} events")
        for event in events:
            table.add_row(
                event["Timestamp"].strftime("%H:%M:%S"),
                event["LogicalResourceId"],
                f"[{_style(event['ResourceStatus'])}]{event['ResourceStatus']}[/]",
                event.get("ResourceStatusReason", ""),
            )
        out.print(table)
    return 0


def stacks_command(args: argparse.Namespace) -> int:
    cf = server_client(args, "cloudformation")
    try:
        stacks = [s for page in cf.get_paginator("describe_stacks").paginate() for s in page["Stacks"]]
    except Exception as exc:  # noqa: BLE001
        code, message = _error(exc)
        return _fail(f"cannot list stacks at {server_url(args)}: {code}: {message}")
    rows = [
        {
            "name": s["StackName"],
            "status": s["StackStatus"],
            "created": s["CreationTime"].isoformat(timespec="seconds"),
            "updated": s["LastUpdatedTime"].isoformat(timespec="seconds")
            if s.get("LastUpdatedTime")
            else None,
        }
        for s in stacks
    ]
    if args.json:
        print_json(rows)
        return 0
    from rich.table import Table

    out = console()
    if not rows:
        out.print(f"no stacks at {server_url(args)}")
        return 0
    table = Table("stack", "status", "created", "updated")
    for row in rows:
        table.add_row(
            row["name"], f"[{_style(row['status'])}]{row['status']}[/]", row["created"], row["updated"] or "-"
        )
    out.print(table)
    return 0


def add_commands(commands: Any) -> None:
    def with_url(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument("--url", help=f"the coldbrew server (COLDBREW_URL, default {DEFAULT_URL})")
        return parser

    deploy = with_url(
        commands.add_parser(
            "deploy-stack",
            help="create or update a stack from a CloudFormation template, printing its events",
        )
    )
    deploy.add_argument("template", help="the template file (YAML or JSON)")
    deploy.add_argument("--stack-name", required=True, help="the stack's name")
    deploy.add_argument(
        "--parameter", action="append", metavar="KEY=VALUE", help="a template parameter (repeatable)"
    )
    deploy.add_argument(
        "--tag", action="append", metavar="KEY=VALUE", help="a tag for the stack and its resources"
    )
    deploy.add_argument(
        "--disable-rollback", action="store_true", help="keep what was created when a resource fails"
    )
    deploy.set_defaults(func=deploy_stack_command)

    delete = with_url(commands.add_parser("delete-stack", help="delete a stack and the resources it created"))
    delete.add_argument("stack_name", help="the stack's name")
    delete.add_argument("--no-wait", action="store_true", help="return once the deletion has started")
    delete.set_defaults(func=delete_stack_command)

    describe = with_url(
        commands.add_parser(
            "describe-stack", help="a stack's status, parameters, resources, outputs and events"
        )
    )
    describe.add_argument("stack_name", help="the stack's name")
    describe.add_argument("--events", type=int, default=10, help="how many of the latest events to show")
    describe.add_argument("--json", action="store_true", help="JSON for programs instead of tables")
    describe.set_defaults(func=describe_stack_command)

    listing = with_url(commands.add_parser("stacks", help="list the stacks"))
    listing.add_argument("--json", action="store_true", help="JSON for programs instead of a table")
    listing.set_defaults(func=stacks_command)
