"""The CloudFormation operations, one method each: requests in botocore's shapes (already decoded),
responses as dicts of the output shapes, errors as ``coldbrew.stacks.errors``.

Templates and parameters are checked here, before anything is accepted (a template CloudFormation
would refuse is a ValidationError at once); the operations that change a stack only record what
is to be done and return the stack to run, which the engine then runs in the background.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from coldbrew.stacks.catalog import TYPES
from coldbrew.stacks.errors import (
    AlreadyExistsException,
    ChangeSetNotFound,
    InvalidChangeSetStatus,
    StackError,
    ValidationError,
)
from coldbrew.stacks.evaluation import StackIdentity, evaluate_template
from coldbrew.stacks.parameters import NO_ECHO_MASK, ParameterInput, resolve
from coldbrew.stacks.plan import Change, Deployed, plan_changes
from coldbrew.stacks.statuses import (
    CREATE_IN_PROGRESS,
    CS_CREATE_COMPLETE,
    CS_FAILED,
    DELETE_COMPLETE,
    DELETE_IN_PROGRESS,
    EXEC_AVAILABLE,
    EXEC_COMPLETE,
    EXEC_UNAVAILABLE,
    REVIEW_IN_PROGRESS,
    RUNNING,
    STACK_TYPE,
    UPDATABLE,
    UPDATE_IN_PROGRESS,
)
from coldbrew.stacks.store import ChangeSetRecord, Operation, StackRecord, StackStore
from coldbrew.stacks.template import Template, parse_template

NAME = re.compile(r"[a-zA-Z][-a-zA-Z0-9]*")
MAX_NAME = 128
PAGE = 100
NO_CHANGES = (
    "The submitted information didn't contain changes. Submit different information to create a change set."
)


@dataclass(frozen=True)
class Caller:
    region: str
    account: str


@dataclass(frozen=True)
class Reply:
    """An operation's response, and the stack whose operation it started (to run)."""

    body: dict[str, Any]
    run: str | None = None


def _check_name(value: str, member: str) -> None:
    if not (1 <= len(value) <= MAX_NAME and NAME.fullmatch(value)):
        raise ValidationError(
            f"1 validation error detected: Value '{value[:128]}' at '{member}' failed to satisfy constraint: "
            f"Member must satisfy regular expression pattern: {NAME.pattern} (at most {MAX_NAME} characters)"
        )


def _inputs(request: dict[str, Any]) -> list[ParameterInput]:
    return [
        ParameterInput(p["ParameterKey"], p.get("ParameterValue"), bool(p.get("UsePreviousValue", False)))
        for p in request.get("Parameters") or []
        if "ParameterKey" in p
    ]


def _tags(request: dict[str, Any], default: list[dict[str, str]]) -> list[dict[str, str]]:
    tags = request.get("Tags")
    if tags is None:
        return default
    return [{"Key": t["Key"], "Value": t.get("Value", "")} for t in tags]


def _deployed(record: StackRecord) -> dict[str, Deployed]:
    return {
        lid: Deployed(s.type, s.physical_id, s.properties)
        for lid, s in record.resources.items()
        if s.physical_id and s.status not in (DELETE_COMPLETE, "CREATE_FAILED")
    }


def _change_json(change: Change) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "Action": change.action,
        "LogicalResourceId": change.logical_id,
        "ResourceType": change.resource_type,
        "Scope": ["Properties"] if change.details else [],
        "Details": [
            {
                "Target": {
                    "Attribute": "Properties",
                    "Name": d.name,
                    "RequiresRecreation": d.requires_recreation,
                },
                "Evaluation": d.evaluation,
                "ChangeSource": "DirectModification" if d.evaluation == "Static" else "ResourceReference",
            }
            for d in change.details
        ],
    }
    if change.physical_id is not None:
        resource["PhysicalResourceId"] = change.physical_id
    if change.replacement is not None:
        resource["Replacement"] = change.replacement
    return {"Type": "Resource", "ResourceChange": resource}


class StackService:
    def __init__(self, stacks: StackStore, account: str) -> None:
        self.stacks = stacks
        self.account = account
        self.operations = {
            "CreateStack": self.create_stack,
            "UpdateStack": self.update_stack,
            "DeleteStack": self.delete_stack,
            "DescribeStacks": self.describe_stacks,
            "ListStacks": self.list_stacks,
            "DescribeStackEvents": self.describe_stack_events,
            "DescribeStackResource": self.describe_stack_resource,
            "DescribeStackResources": self.describe_stack_resources,
            "ListStackResources": self.list_stack_resources,
            "GetTemplate": self.get_template,
            "GetTemplateSummary": self.get_template_summary,
            "ValidateTemplate": self.validate_template,
            "CreateChangeSet": self.create_change_set,
            "DescribeChangeSet": self.describe_change_set,
            "ExecuteChangeSet": self.execute_change_set,
            "DeleteChangeSet": self.delete_change_set,
            "ListChangeSets": self.list_change_sets,
            "ListExports": self.list_exports,
        }

    # --- lookups --------------------------------------------------------------------------------

    def _stack(self, name_or_id: str) -> StackRecord:
        record = self.stacks.find(name_or_id)
        if record is None:
            raise ValidationError(f"Stack with id {name_or_id[:256]} does not exist")
        return record

    def _live_stack(self, name_or_id: str) -> StackRecord:
        record = self._stack(name_or_id)
        if record.status == DELETE_COMPLETE:
            raise ValidationError(f"Stack with id {name_or_id[:256]} does not exist")
        return record

    def _template(self, request: dict[str, Any], previous: StackRecord | None) -> str:
        if request.get("UsePreviousTemplate"):
            if previous is None or previous.template is None:
                raise ValidationError("UsePreviousTemplate is set but the stack has no previous template")
            return previous.template
        if request.get("TemplateURL"):
            raise ValidationError(
                "coldbrew takes templates as TemplateBody, not TemplateURL: pass the template's text "
                "(aws cloudformation deploy without --s3-bucket does)"
            )
        body = request.get("TemplateBody")
        if not body:
            raise ValidationError("Either Template URL or Template Body must be specified.")
        return str(body)

    def _identity(self, caller: Caller, name: str, stack_id: str, arns: list[str]) -> StackIdentity:
        return StackIdentity(name, stack_id, caller.region, self.account, tuple(arns))

    def _prepare(
        self,
        body: str,
        request: dict[str, Any],
        identity: StackIdentity,
        previous: StackRecord | None,
    ) -> tuple[Template, dict[str, str], list[Change]]:
        """The template, its parameters' values and the changes it makes (a ValidationError if
        CloudFormation would refuse it)."""
        template = parse_template(body)
        resolved = resolve(
            template.parameters, _inputs(request), None if previous is None else previous.parameters
        )
        evaluation = evaluate_template(template, resolved, identity)
        deployed = {} if previous is None else _deployed(previous)
        changes = plan_changes(evaluation, deployed)
        return template, resolved.values, changes

    # --- stacks ---------------------------------------------------------------------------------

    def _new_stack(self, caller: Caller, name: str, request: dict[str, Any], status: str) -> StackRecord:
        stack_id = f"arn:aws:cloudformation:{caller.region}:{self.account}:stack/{name}/{uuid.uuid4()}"
        return StackRecord(
            stack_id=stack_id,
            name=name,
            region=caller.region,
            status=status,
            created_at=time.time(),
            parameters={},
            tags=_tags(request, []),
            notification_arns=list(request.get("NotificationARNs") or []),
            resources={},
            outputs=[],
        )

    def create_stack(self, caller: Caller, request: dict[str, Any]) -> Reply:
        name = request["StackName"]
        _check_name(name, "stackName")
        if self.stacks.find(name) is not None:
            raise AlreadyExistsException(f"Stack [{name}] already exists")
        body = self._template(request, None)
        record = self._new_stack(caller, name, request, CREATE_IN_PROGRESS)
        identity = self._identity(caller, name, record.stack_id, record.notification_arns)
        template, values, _ = self._prepare(body, request, identity, None)
        on_failure = request.get("OnFailure")
        disable = bool(request.get("DisableRollback")) or on_failure == "DO_NOTHING"
        record.template, record.parameters, record.description = body, values, template.description
        record.disable_rollback = disable
        record.operation = Operation("CREATE", delete_on_failure=on_failure == "DELETE")
        self.stacks.insert(record)
        self.stacks.add_event(record, name, STACK_TYPE, CREATE_IN_PROGRESS, "User Initiated", record.stack_id)
        return Reply({"StackId": record.stack_id}, run=record.stack_id)

    def _begin_update(
        self,
        record: StackRecord,
        body: str,
        values: dict[str, str],
        template: Template,
        request: dict[str, Any],
    ) -> None:
        previous = {
            "template": record.template,
            "parameters": record.parameters,
            "resources": record.resources_json(),
            "outputs": record.outputs,
            "description": record.description,
        }
        record.template, record.parameters, record.description = body, values, template.description
        record.tags = _tags(request, record.tags)
        if request.get("NotificationARNs") is not None:
            record.notification_arns = list(request["NotificationARNs"])
        record.disable_rollback = bool(request.get("DisableRollback", False))
        record.operation = Operation("UPDATE", previous=previous)
        record.status, record.status_reason, record.updated_at = UPDATE_IN_PROGRESS, None, time.time()
        if not self.stacks.save(record, expect_status=UPDATABLE):
            raise ValidationError(f"Stack:{record.stack_id} is in an operation and can not be updated.")
        self.stacks.add_event(
            record, record.name, STACK_TYPE, UPDATE_IN_PROGRESS, "User Initiated", record.stack_id
        )

    def _require_updatable(self, record: StackRecord) -> None:
        if record.status not in UPDATABLE:
            raise ValidationError(
                f"Stack:{record.stack_id} is in {record.status} state and can not be updated."
            )

    def update_stack(self, caller: Caller, request: dict[str, Any]) -> Reply:
        record = self._live_stack(request["StackName"])
        self._require_updatable(record)
        body = self._template(request, record)
        identity = self._identity(caller, record.name, record.stack_id, record.notification_arns)
        template, values, changes = self._prepare(body, request, identity, record)
        if not changes and body == record.template and values == record.parameters:
            if _tags(request, record.tags) == record.tags:
                raise ValidationError("No updates are to be performed.")
        self._begin_update(record, body, values, template, request)
        self.stacks.obsolete_others(record.stack_id, None)
        return Reply({"StackId": record.stack_id}, run=record.stack_id)

    def delete_stack(self, caller: Caller, request: dict[str, Any]) -> Reply:
        record = self.stacks.find(request["StackName"])
        if record is None or record.status == DELETE_COMPLETE:
            return Reply({})  # CloudFormation: deleting a stack that is not there succeeds
        if record.status in RUNNING:
            if record.status == DELETE_IN_PROGRESS:
                return Reply({}, run=record.stack_id)
            raise ValidationError(
                f"Stack [{record.name}] is in {record.status} state: delete it once that operation has "
                "finished."
            )
        retain = list(request.get("RetainResources") or [])
        prior = record.status
        record.operation = Operation("DELETE", retain=retain)
        record.status, record.status_reason = DELETE_IN_PROGRESS, None
        if not self.stacks.save(record, expect_status=frozenset({prior})):
            raise ValidationError(f"Stack [{record.name}] changed while it was being deleted; try again.")
        self.stacks.add_event(
            record, record.name, STACK_TYPE, DELETE_IN_PROGRESS, "User Initiated", record.stack_id
        )
        return Reply({}, run=record.stack_id)

    def _stack_json(self, record: StackRecord) -> dict[str, Any]:
        no_echo = set()
        if record.template:
            try:
                no_echo = {n for n, d in parse_template(record.template).parameters.items() if d.no_echo}
            except StackError:
                pass
        body: dict[str, Any] = {
            "StackId": record.stack_id,
            "StackName": record.name,
            "Parameters": [
                {"ParameterKey": k, "ParameterValue": NO_ECHO_MASK if k in no_echo else v}
                for k, v in sorted(record.parameters.items())
            ],
            "CreationTime": record.created_at,
            "RollbackConfiguration": {},
            "StackStatus": record.status,
            "DisableRollback": record.disable_rollback,
            "NotificationARNs": record.notification_arns,
            "Capabilities": [],
            "Outputs": [{k: v for k, v in o.items() if v is not None} for o in record.outputs],
            "Tags": record.tags,
            "EnableTerminationProtection": False,
            "DriftInformation": {"StackDriftStatus": "NOT_CHECKED"},
        }
        for key, value in (
            ("Description", record.description),
            ("StackStatusReason", record.status_reason),
            ("LastUpdatedTime", record.updated_at),
            ("DeletionTime", record.deleted_at),
        ):
            if value is not None:
                body[key] = value
        return body

    def describe_stacks(self, caller: Caller, request: dict[str, Any]) -> Reply:
        name = request.get("StackName")
        records = [self._stack(name)] if name else self.stacks.live()
        return Reply({"Stacks": [self._stack_json(r) for r in records]})

    def list_stacks(self, caller: Caller, request: dict[str, Any]) -> Reply:
        wanted = set(request.get("StackStatusFilter") or [])
        summaries = []
        for record in self.stacks.everything():
            if wanted and record.status not in wanted:
                continue
            summary: dict[str, Any] = {
                "StackId": record.stack_id,
                "StackName": record.name,
                "CreationTime": record.created_at,
                "StackStatus": record.status,
                "DriftInformation": {"StackDriftStatus": "NOT_CHECKED"},
            }
            for key, value in (
                ("TemplateDescription", record.description),
                ("StackStatusReason", record.status_reason),
                ("LastUpdatedTime", record.updated_at),
                ("DeletionTime", record.deleted_at),
            ):
                if value is not None:
                    summary[key] = value
            summaries.append(summary)
        return Reply({"StackSummaries": summaries})

    def describe_stack_events(self, caller: Caller, request: dict[str, Any]) -> Reply:
        record = self._stack(request["StackName"])
        before = _token(request.get("NextToken"))
        events = self.stacks.events(record, before, PAGE + 1)
        body: dict[str, Any] = {
            "StackEvents": [
                {
                    k: v
                    for k, v in {
                        "StackId": e.stack_id,
                        "EventId": e.event_id,
                        "StackName": e.stack_name,
                        "LogicalResourceId": e.logical_id,
                        "PhysicalResourceId": e.physical_id or "",
                        "ResourceType": e.resource_type,
                        "Timestamp": e.timestamp,
                        "ResourceStatus": e.status,
                        "ResourceStatusReason": e.reason,
                        "ResourceProperties": e.properties,
                    }.items()
                    if v is not None
                }
                for e in events[:PAGE]
            ]
        }
        if len(events) > PAGE:
            body["NextToken"] = str(events[PAGE - 1].seq)
        return Reply(body)

    def _resource_rows(self, record: StackRecord) -> list[dict[str, Any]]:
        rows = []
        for logical_id, state in record.resources.items():
            row: dict[str, Any] = {
                "StackName": record.name,
                "StackId": record.stack_id,
                "LogicalResourceId": logical_id,
                "PhysicalResourceId": state.physical_id or "",
                "ResourceType": state.type,
                "Timestamp": state.updated_at,
                "LastUpdatedTimestamp": state.updated_at,
                "ResourceStatus": state.status,
                "DriftInformation": {"StackResourceDriftStatus": "NOT_CHECKED"},
            }
            if state.reason:
                row["ResourceStatusReason"] = state.reason
            rows.append(row)
        return sorted(rows, key=lambda r: r["LogicalResourceId"])

    def describe_stack_resources(self, caller: Caller, request: dict[str, Any]) -> Reply:
        name, physical = request.get("StackName"), request.get("PhysicalResourceId")
        if name:
            record = self._stack(name)
        elif physical:
            found = [
                r for r in self.stacks.live() if any(s.physical_id == physical for s in r.resources.values())
            ]
            if not found:
                raise ValidationError(f"Stack for {physical[:256]} does not exist")
            record = found[0]
        else:
            raise ValidationError("Either StackName or PhysicalResourceId must be specified.")
        rows = self._resource_rows(record)
        logical = request.get("LogicalResourceId")
        if logical:
            rows = [r for r in rows if r["LogicalResourceId"] == logical]
        if physical:
            rows = [r for r in rows if r["PhysicalResourceId"] == physical]
        return Reply(
            {"StackResources": [{k: v for k, v in r.items() if k != "LastUpdatedTimestamp"} for r in rows]}
        )

    def describe_stack_resource(self, caller: Caller, request: dict[str, Any]) -> Reply:
        record = self._stack(request["StackName"])
        for row in self._resource_rows(record):
            if row["LogicalResourceId"] == request["LogicalResourceId"]:
                return Reply({"StackResourceDetail": {k: v for k, v in row.items() if k != "Timestamp"}})
        raise ValidationError(
            f"Resource {request['LogicalResourceId'][:256]} does not exist for stack "
            f"{request['StackName'][:256]}"
        )

    def list_stack_resources(self, caller: Caller, request: dict[str, Any]) -> Reply:
        record = self._stack(request["StackName"])
        keys = (
            "LogicalResourceId",
            "PhysicalResourceId",
            "ResourceType",
            "LastUpdatedTimestamp",
            "ResourceStatus",
            "ResourceStatusReason",
            "DriftInformation",
        )
        rows = [{k: r[k] for k in keys if k in r} for r in self._resource_rows(record)]
        for row in rows:
            row["DriftInformation"] = {"StackResourceDriftStatus": "NOT_CHECKED"}
        return Reply({"StackResourceSummaries": rows})

    # --- templates ------------------------------------------------------------------------------

    def get_template(self, caller: Caller, request: dict[str, Any]) -> Reply:
        if request.get("ChangeSetName"):
            change_set = self._change_set(request["ChangeSetName"], request.get("StackName"))
            body = change_set.template
        else:
            if not request.get("StackName"):
                raise ValidationError("Either StackName or ChangeSetName must be specified.")
            record = self._stack(request["StackName"])
            if record.template is None:
                raise ValidationError(f"Stack with id {request['StackName'][:256]} has no template yet")
            body = record.template
        return Reply({"TemplateBody": body, "StagesAvailable": ["Original", "Processed"]})

    def _summary_template(self, request: dict[str, Any]) -> tuple[Template, dict[str, str]]:
        if request.get("StackName"):
            record = self._live_stack(request["StackName"])
            if record.template is None:
                raise ValidationError(f"Stack with id {request['StackName'][:256]} has no template yet")
            return parse_template(record.template), record.parameters
        return parse_template(self._template(request, None)), {}

    def get_template_summary(self, caller: Caller, request: dict[str, Any]) -> Reply:
        template, _ = self._summary_template(request)
        parameters = []
        for decl in template.parameters.values():
            item: dict[str, Any] = {
                "ParameterKey": decl.name,
                "ParameterType": decl.type,
                "NoEcho": decl.no_echo,
            }
            if decl.default is not None:
                item["DefaultValue"] = decl.default
            if decl.description is not None:
                item["Description"] = decl.description
            if decl.allowed_values is not None:
                item["ParameterConstraints"] = {"AllowedValues": list(decl.allowed_values)}
            parameters.append(item)
        by_type: dict[str, list[str]] = {}
        for logical_id, resource in template.resources.items():
            by_type.setdefault(resource.type, []).append(logical_id)
        body: dict[str, Any] = {
            "Parameters": parameters,
            "Capabilities": [],
            "ResourceTypes": sorted(by_type),
            "Version": "2010-09-09",
            "DeclaredTransforms": [],
            "ResourceIdentifierSummaries": [
                {
                    "ResourceType": kind,
                    "LogicalResourceIds": ids,
                    "ResourceIdentifiers": [TYPES[kind].name_property],
                }
                for kind, ids in sorted(by_type.items())
            ],
        }
        if template.description is not None:
            body["Description"] = template.description
        return Reply(body)

    def validate_template(self, caller: Caller, request: dict[str, Any]) -> Reply:
        template = parse_template(self._template(request, None))
        parameters = []
        for decl in template.parameters.values():
            item: dict[str, Any] = {"ParameterKey": decl.name, "NoEcho": decl.no_echo}
            if decl.default is not None:
                item["DefaultValue"] = decl.default
            if decl.description is not None:
                item["Description"] = decl.description
            parameters.append(item)
        body: dict[str, Any] = {"Parameters": parameters, "Capabilities": [], "DeclaredTransforms": []}
        if template.description is not None:
            body["Description"] = template.description
        return Reply(body)

    # --- change sets ----------------------------------------------------------------------------

    def _change_set(self, name_or_id: str, stack_name: str | None) -> ChangeSetRecord:
        stack_id = None
        if stack_name:
            record = self.stacks.find(stack_name)
            if record is None:
                raise ChangeSetNotFound(f"ChangeSet [{name_or_id[:256]}] does not exist")
            stack_id = record.stack_id
        elif not name_or_id.startswith("arn:"):
            raise ValidationError("StackName must be specified if ChangeSetName is not specified as an ARN.")
        change_set = self.stacks.change_set(name_or_id, stack_id)
        if change_set is None:
            raise ChangeSetNotFound(f"ChangeSet [{name_or_id[:256]}] does not exist")
        return change_set

    def create_change_set(self, caller: Caller, request: dict[str, Any]) -> Reply:
        name, stack_name = request["ChangeSetName"], request["StackName"]
        _check_name(name, "changeSetName")
        kind = request.get("ChangeSetType") or "UPDATE"
        if kind not in ("CREATE", "UPDATE"):
            raise ValidationError(f"coldbrew takes ChangeSetType CREATE or UPDATE, not {kind[:64]}.")
        record = self.stacks.find(stack_name)
        if kind == "CREATE":
            if record is not None and record.status != REVIEW_IN_PROGRESS:
                raise AlreadyExistsException(
                    f"Stack [{stack_name}] already exists and cannot be created again with the changeSet "
                    f"[{name}]."
                )
            if record is None:
                _check_name(stack_name, "stackName")
                record = self._new_stack(caller, stack_name, request, REVIEW_IN_PROGRESS)
                self.stacks.insert(record)
                self.stacks.add_event(
                    record, stack_name, STACK_TYPE, REVIEW_IN_PROGRESS, "User Initiated", record.stack_id
                )
        elif record is None or record.status in (REVIEW_IN_PROGRESS, DELETE_COMPLETE):
            raise ValidationError(f"Stack [{stack_name[:256]}] does not exist")
        else:
            self._require_updatable(record)
        body = self._template(request, record if kind == "UPDATE" else None)
        identity = self._identity(
            caller,
            record.name,
            record.stack_id,
            list(request.get("NotificationARNs") or record.notification_arns),
        )
        previous = record if kind == "UPDATE" else None
        template = parse_template(body)
        resolved = resolve(
            template.parameters, _inputs(request), None if previous is None else previous.parameters
        )
        status, execution, reason = CS_CREATE_COMPLETE, EXEC_AVAILABLE, None
        changes: list[Change] = []
        try:
            changes = plan_changes(
                evaluate_template(template, resolved, identity),
                {} if previous is None else _deployed(previous),
            )
        except StackError as error:
            status, execution, reason = CS_FAILED, EXEC_UNAVAILABLE, error.message
        if previous is not None and status == CS_CREATE_COMPLETE and not changes:
            if body == previous.template and resolved.values == previous.parameters:
                status, execution, reason = CS_FAILED, EXEC_UNAVAILABLE, NO_CHANGES
        change_set = ChangeSetRecord(
            change_set_id=f"arn:aws:cloudformation:{caller.region}:{self.account}:changeSet/{name}/{uuid.uuid4()}",
            name=name,
            stack_id=record.stack_id,
            created_at=time.time(),
            type=kind,
            status=status,
            execution_status=execution,
            template=body,
            parameters=resolved.values,
            tags=_tags(request, record.tags),
            notification_arns=list(request.get("NotificationARNs") or record.notification_arns),
            changes=[_change_json(c) for c in changes],
            description=request.get("Description"),
            status_reason=reason,
        )
        self.stacks.insert_change_set(change_set)
        return Reply({"Id": change_set.change_set_id, "StackId": record.stack_id})

    def describe_change_set(self, caller: Caller, request: dict[str, Any]) -> Reply:
        change_set = self._change_set(request["ChangeSetName"], request.get("StackName"))
        record = self.stacks.find(change_set.stack_id)
        no_echo: set[str] = set()
        try:
            no_echo = {n for n, d in parse_template(change_set.template).parameters.items() if d.no_echo}
        except StackError:
            pass
        body: dict[str, Any] = {
            "ChangeSetName": change_set.name,
            "ChangeSetId": change_set.change_set_id,
            "StackId": change_set.stack_id,
            "StackName": record.name if record is not None else "",
            "Parameters": [
                {"ParameterKey": k, "ParameterValue": NO_ECHO_MASK if k in no_echo else v}
                for k, v in sorted(change_set.parameters.items())
            ],
            "CreationTime": change_set.created_at,
            "ExecutionStatus": change_set.execution_status,
            "Status": change_set.status,
            "NotificationARNs": change_set.notification_arns,
            "RollbackConfiguration": {},
            "Capabilities": [],
            "Tags": change_set.tags,
            "Changes": change_set.changes,
            "IncludeNestedStacks": False,
        }
        if change_set.description is not None:
            body["Description"] = change_set.description
        if change_set.status_reason is not None:
            body["StatusReason"] = change_set.status_reason
        return Reply(body)

    def execute_change_set(self, caller: Caller, request: dict[str, Any]) -> Reply:
        change_set = self._change_set(request["ChangeSetName"], request.get("StackName"))
        if change_set.execution_status != EXEC_AVAILABLE:
            raise InvalidChangeSetStatus(
                f"ChangeSet [{change_set.change_set_id}] cannot be executed in its current execution status "
                "of "
                f"[{change_set.execution_status}]"
            )
        record = self._stack(change_set.stack_id)
        template = parse_template(change_set.template)
        request = {**request, "Tags": change_set.tags, "NotificationARNs": change_set.notification_arns}
        if change_set.type == "CREATE":
            if record.status != REVIEW_IN_PROGRESS:
                raise ValidationError(
                    f"Stack:{record.stack_id} is in {record.status} state and can not be created."
                )
            record.template, record.parameters = change_set.template, change_set.parameters
            record.description, record.tags = template.description, change_set.tags
            record.notification_arns = change_set.notification_arns
            record.disable_rollback = bool(request.get("DisableRollback", False))
            record.operation = Operation("CREATE")
            record.status = CREATE_IN_PROGRESS
            if not self.stacks.save(record, expect_status=frozenset({REVIEW_IN_PROGRESS})):
                raise ValidationError(f"Stack:{record.stack_id} changed while the change set was executed.")
            self.stacks.add_event(
                record, record.name, STACK_TYPE, CREATE_IN_PROGRESS, "User Initiated", record.stack_id
            )
        else:
            self._require_updatable(record)
            self._begin_update(record, change_set.template, change_set.parameters, template, request)
        if not self.stacks.set_execution_status(
            change_set.change_set_id, EXEC_COMPLETE, expect=EXEC_AVAILABLE
        ):
            raise InvalidChangeSetStatus(f"ChangeSet [{change_set.change_set_id}] is being executed already")
        self.stacks.obsolete_others(record.stack_id, change_set.change_set_id)
        return Reply({}, run=record.stack_id)

    def delete_change_set(self, caller: Caller, request: dict[str, Any]) -> Reply:
        change_set = self._change_set(request["ChangeSetName"], request.get("StackName"))
        self.stacks.delete_change_set(change_set.change_set_id)
        return Reply({})

    def list_change_sets(self, caller: Caller, request: dict[str, Any]) -> Reply:
        record = self._stack(request["StackName"])
        summaries = []
        for change_set in self.stacks.change_sets(record.stack_id):
            summary: dict[str, Any] = {
                "StackId": record.stack_id,
                "StackName": record.name,
                "ChangeSetId": change_set.change_set_id,
                "ChangeSetName": change_set.name,
                "ExecutionStatus": change_set.execution_status,
                "Status": change_set.status,
                "CreationTime": change_set.created_at,
                "IncludeNestedStacks": False,
            }
            if change_set.status_reason is not None:
                summary["StatusReason"] = change_set.status_reason
            if change_set.description is not None:
                summary["Description"] = change_set.description
            summaries.append(summary)
        return Reply({"Summaries": summaries})

    def list_exports(self, caller: Caller, request: dict[str, Any]) -> Reply:
        exports = []
        for record in self.stacks.live():
            for output in record.outputs:
                if output.get("ExportName"):
                    exports.append(
                        {
                            "ExportingStackId": record.stack_id,
                            "Name": output["ExportName"],
                            "Value": output["OutputValue"],
                        }
                    )
        return Reply({"Exports": sorted(exports, key=lambda e: e["Name"])})


def _token(token: str | None) -> int | None:
    if token is None:
        return None
    if not (token.isascii() and token.isdigit() and len(token) < 18):
        raise ValidationError(
            "Invalid NextToken: pass the NextToken of a previous DescribeStackEvents response."
        )
    return int(token)
