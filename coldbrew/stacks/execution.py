"""One stack operation carried out: create, update, delete, and the rollbacks and cleanups that
follow them, phase by phase as CloudFormation's statuses name them.

Each phase saves the stack (its resources and the operation's journal) before every call it makes
to SageMaker, and records events as CloudFormation does, so a run that is interrupted can be
taken up by the next start: a create or update is rolled back (the restart is the failure's
reason), a rollback, cleanup or delete goes on where it stopped.

Resources are created one at a time in dependency order and deleted in the reverse order. An
endpoint is waited for until SageMaker reports it InService (or Failed); an EndpointConfig or a
Model whose properties change is replaced (a new one created, the endpoint updated to it, the
old one deleted once the update is complete), so invocations keep being served throughout.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from coldbrew.stacks import resources
from coldbrew.stacks.catalog import ENDPOINT, TYPES
from coldbrew.stacks.errors import StackError
from coldbrew.stacks.evaluation import Evaluation, StackIdentity, evaluate_template
from coldbrew.stacks.parameters import Resolved
from coldbrew.stacks.plan import SUFFIX_ALPHABET, SUFFIX_LENGTH, Deployed, decide, lookup, physical_name
from coldbrew.stacks.resources import Progress, ResourceFailure, SageMakerApi
from coldbrew.stacks.statuses import (
    CREATE_COMPLETE,
    CREATE_FAILED,
    CREATE_IN_PROGRESS,
    DELETE_COMPLETE,
    DELETE_FAILED,
    DELETE_IN_PROGRESS,
    DELETE_SKIPPED,
    ROLLBACK_COMPLETE,
    ROLLBACK_FAILED,
    ROLLBACK_IN_PROGRESS,
    SETTLED,
    STACK_TYPE,
    UPDATE_COMPLETE,
    UPDATE_COMPLETE_CLEANUP_IN_PROGRESS,
    UPDATE_FAILED,
    UPDATE_IN_PROGRESS,
    UPDATE_ROLLBACK_COMPLETE,
    UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS,
    UPDATE_ROLLBACK_FAILED,
    UPDATE_ROLLBACK_IN_PROGRESS,
)
from coldbrew.stacks.store import Operation, ResourceState, StackRecord, StackStore, Step
from coldbrew.stacks.template import Template, order, parse_template

log = logging.getLogger("coldbrew.stacks")

T = TypeVar("T")
Io = Callable[..., Awaitable[Any]]

RESTARTED = "coldbrew stopped while this stack operation ran (the server restarted)"
CUSTOM_NAME_REPLACEMENT = (
    "CloudFormation cannot update a stack when a custom-named resource requires replacing. "
    "Rename {name} and update the stack again."
)


class _Failed(Exception):
    """A resource's step failed; the stack's operation fails with it."""

    def __init__(self, logical_id: str) -> None:
        super().__init__(logical_id)
        self.logical_id = logical_id


def new_suffix() -> str:
    return "".join(secrets.choice(SUFFIX_ALPHABET) for _ in range(SUFFIX_LENGTH))


def identity_of(record: StackRecord, account: str) -> StackIdentity:
    return StackIdentity(
        record.name, record.stack_id, record.region, account, tuple(record.notification_arns)
    )


def evaluation_of(record: StackRecord, account: str) -> Evaluation:
    assert record.template is not None
    return evaluate_template(
        parse_template(record.template), Resolved(dict(record.parameters)), identity_of(record, account)
    )


class StackRun:
    def __init__(
        self,
        stack_id: str,
        stacks: StackStore,
        api: SageMakerApi,
        account: str,
        io: Io,
        poll_interval_s: float = 0.2,
    ) -> None:
        self.stack_id = stack_id
        self.stacks = stacks
        self.api = api
        self.account = account
        self.io = io
        self.poll_interval_s = poll_interval_s

    async def run(self, recovering: bool, reason: str = RESTARTED) -> None:
        """Carry the stack's operation on to its end; ``recovering`` a create or update that was
        interrupted fails it with ``reason`` (and so rolls it back)."""
        record = await self.io(self.stacks.find, self.stack_id)
        if record is None:
            return
        if recovering and record.status in (CREATE_IN_PROGRESS, UPDATE_IN_PROGRESS):
            await self._interrupted(record, reason)
        phases: dict[str, Callable[[StackRecord], Awaitable[None]]] = {
            CREATE_IN_PROGRESS: self._create,
            ROLLBACK_IN_PROGRESS: self._rollback_create,
            UPDATE_IN_PROGRESS: self._update,
            UPDATE_COMPLETE_CLEANUP_IN_PROGRESS: self._cleanup_update,
            UPDATE_ROLLBACK_IN_PROGRESS: self._rollback_update,
            UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS: self._cleanup_rollback,
            DELETE_IN_PROGRESS: self._delete,
        }
        while record.status in phases:
            await phases[record.status](record)

    # --- bookkeeping ----------------------------------------------------------------------------

    async def _save(self, record: StackRecord) -> None:
        await self.io(self.stacks.save, record)

    async def _event(
        self,
        record: StackRecord,
        logical_id: str,
        status: str,
        reason: str | None = None,
        physical_id: str | None = None,
    ) -> None:
        state = record.resources.get(logical_id)
        resource_type = state.type if state is not None else STACK_TYPE
        properties = state.properties if state is not None and status.endswith("IN_PROGRESS") else None
        await self.io(
            self.stacks.add_event, record, logical_id, resource_type, status, reason, physical_id, properties
        )

    async def _stack_status(self, record: StackRecord, status: str, reason: str | None = None) -> None:
        # A rollback's later statuses keep its reason on the stack (the events have it once), so
        # DescribeStacks of a rolled-back stack says why.
        keep = reason is None and status in _KEEPS_REASON
        record.status, record.status_reason = status, (record.status_reason if keep else reason)
        if record.operation is not None and record.operation.kind != "CREATE":
            record.updated_at = time.time()
        if status in SETTLED:
            record.operation = None  # the operation is over, whichever way it ended
        await self._save(record)
        await self.io(
            self.stacks.add_event, record, record.name, STACK_TYPE, status, reason, record.stack_id, None
        )
        log.info("stack %s: %s%s", record.name, status, f" ({reason})" if reason else "")

    async def _resource(
        self,
        record: StackRecord,
        logical_id: str,
        status: str,
        reason: str | None = None,
        event_physical: bool = True,
    ) -> None:
        state = record.resources[logical_id]
        state.status, state.reason, state.updated_at = status, reason, time.time()
        await self._save(record)
        await self._event(record, logical_id, status, reason, state.physical_id if event_physical else None)

    async def _wait(self, check: Callable[[], Progress]) -> Progress:
        while True:
            try:
                progress: Progress = await self.io(check)
            except ResourceFailure as failure:
                return Progress(True, failure.message)
            if progress.done:
                return progress
            await asyncio.sleep(self.poll_interval_s)

    def _tags(self, record: StackRecord, logical_id: str) -> list[dict[str, str]]:
        own = [
            {"Key": "aws:cloudformation:stack-name", "Value": record.name},
            {"Key": "aws:cloudformation:stack-id", "Value": record.stack_id},
            {"Key": "aws:cloudformation:logical-id", "Value": logical_id},
        ]
        return own + [t for t in record.tags if not t["Key"].startswith("aws:")]

    def _deployed(self, states: dict[str, Any]) -> dict[str, Deployed]:
        return {
            lid: Deployed(s["type"], s["physical_id"], s["properties"])
            for lid, s in states.items()
            if s.get("physical_id") and s["status"] not in (DELETE_COMPLETE, CREATE_FAILED)
        }

    async def _interrupted(self, record: StackRecord, reason: str) -> None:
        """A create or update the server was killed in: what it was doing fails, with the restart
        as the reason, and the stack then rolls back (or stops there, with rollback disabled)."""
        failed = [
            lid for lid, s in record.resources.items() if s.status in (CREATE_IN_PROGRESS, UPDATE_IN_PROGRESS)
        ]
        for logical_id in failed:
            state = record.resources[logical_id]
            status = CREATE_FAILED if state.status == CREATE_IN_PROGRESS else UPDATE_FAILED
            await self._resource(record, logical_id, status, reason)
        await self._fail(record, failed or [record.name], reason)

    async def _fail(self, record: StackRecord, logical_ids: list[str], reason: str | None = None) -> None:
        assert record.operation is not None
        creating = record.operation.kind == "CREATE"
        verb = "create" if creating else "update"
        names = ", ".join(logical_ids)
        why = reason or f"The following resource(s) failed to {verb}: [{names}]."
        if record.disable_rollback:
            await self._stack_status(record, CREATE_FAILED if creating else UPDATE_FAILED, why)
            return
        record.operation.failed = logical_ids
        suffix = " Rollback requested by user." if creating else ""
        await self._stack_status(
            record, ROLLBACK_IN_PROGRESS if creating else UPDATE_ROLLBACK_IN_PROGRESS, why + suffix
        )

    # --- create ---------------------------------------------------------------------------------

    async def _create(self, record: StackRecord) -> None:
        try:
            evaluation = evaluation_of(record, self.account)
            for logical_id in evaluation.active():
                await self._create_resource(record, evaluation, logical_id)
            await self._outputs(record, evaluation)
        except _Failed as failed:
            await self._fail(record, [failed.logical_id])
            return
        except StackError as error:
            await self._fail(record, [record.name], error.message)
            return
        await self._stack_status(record, CREATE_COMPLETE)

    def _physical_lookup(self, record: StackRecord) -> Any:
        types = {lid: s.type for lid, s in record.resources.items()}
        live = {
            lid: s.physical_id
            for lid, s in record.resources.items()
            if s.physical_id and s.status not in (DELETE_COMPLETE, CREATE_FAILED, CREATE_IN_PROGRESS)
        }
        return lookup(identity_of(record, self.account), types, live.get)

    async def _properties(
        self, record: StackRecord, evaluation: Evaluation, logical_id: str
    ) -> dict[str, Any]:
        try:
            return evaluation.properties(logical_id, self._physical_lookup(record))
        except StackError as error:
            resource_type = evaluation.template.resources[logical_id].type
            status = UPDATE_FAILED if logical_id in record.resources else CREATE_FAILED
            record.resources.setdefault(logical_id, ResourceState(resource_type, None, {}, status))
            await self._resource(record, logical_id, status, error.message)
            raise _Failed(logical_id) from None

    async def _create_resource(
        self, record: StackRecord, evaluation: Evaluation, logical_id: str, replacing: str | None = None
    ) -> str:
        """Create ``logical_id`` (a new physical resource for it, if ``replacing`` names the old);
        its physical name."""
        assert record.operation is not None
        resource_type = TYPES[evaluation.template.resources[logical_id].type]
        properties = await self._properties(record, evaluation, logical_id)
        physical = physical_name(resource_type, properties, logical_id, new_suffix())
        in_progress = CREATE_IN_PROGRESS if replacing is None else UPDATE_IN_PROGRESS
        failed_status = CREATE_FAILED if replacing is None else UPDATE_FAILED
        previous = record.resources.get(logical_id)
        if replacing is not None and physical == replacing:
            await self._resource(
                record, logical_id, UPDATE_FAILED, CUSTOM_NAME_REPLACEMENT.format(name=logical_id)
            )
            raise _Failed(logical_id)
        if replacing is None:
            record.resources[logical_id] = ResourceState(
                resource_type.name, physical, properties, in_progress
            )
            record.operation.steps.append(Step("create", logical_id, physical))
            await self._save(record)
            await self._event(record, logical_id, in_progress)
        else:
            assert previous is not None
            record.operation.steps.append(
                Step("replace", logical_id, physical, replacing, previous.properties, properties)
            )
            previous.status, previous.updated_at = in_progress, time.time()
            await self._save(record)
            await self._event(
                record,
                logical_id,
                in_progress,
                "Requested update requires the creation of a new physical resource; hence creating one.",
                replacing,
            )
        tags = self._tags(record, logical_id)
        try:
            await self.io(resources.create, self.api, resource_type, physical, properties, tags)
        except ResourceFailure as failure:
            record.operation.steps.pop()  # nothing was created: nothing to undo
            if replacing is None:
                record.resources[logical_id].physical_id = None
            await self._resource(record, logical_id, failed_status, _handler(failure.message), False)
            raise _Failed(logical_id) from None
        state = record.resources[logical_id]
        if replacing is not None:
            state.physical_id, state.properties = physical, properties
        await self._save(record)
        await self._event(record, logical_id, in_progress, "Resource creation Initiated", physical)
        progress = await self._wait(lambda: resources.creation_progress(self.api, resource_type, physical))
        if progress.failure is not None:
            await self._resource(record, logical_id, failed_status, _handler(progress.failure))
            raise _Failed(logical_id)
        await self._resource(record, logical_id, CREATE_COMPLETE if replacing is None else UPDATE_COMPLETE)
        return physical

    async def _outputs(self, record: StackRecord, evaluation: Evaluation) -> None:
        outputs = evaluation.outputs(self._physical_lookup(record))
        record.outputs = [
            {
                "OutputKey": o.key,
                "OutputValue": o.value,
                "Description": o.description,
                "ExportName": o.export_name,
            }
            for o in outputs
        ]

    async def _delete_physical(
        self, record: StackRecord, logical_id: str, resource_type_name: str, physical: str
    ) -> str | None:
        """Delete one physical resource, with its events; the failure's reason, if it fails."""
        resource_type = TYPES[resource_type_name]
        await self.io(
            self.stacks.add_event,
            record,
            logical_id,
            resource_type_name,
            DELETE_IN_PROGRESS,
            None,
            physical,
            None,
        )
        reason: str | None
        try:
            await self.io(resources.delete, self.api, resource_type, physical)
        except ResourceFailure as failure:
            reason = _handler(failure.message)
        else:
            progress = await self._wait(
                lambda: resources.deletion_progress(self.api, resource_type, physical)
            )
            reason = None if progress.failure is None else _handler(progress.failure)
        status = DELETE_FAILED if reason else DELETE_COMPLETE
        await self.io(
            self.stacks.add_event, record, logical_id, resource_type_name, status, reason, physical, None
        )
        return reason

    async def _delete_resource(self, record: StackRecord, logical_id: str, retain: bool = False) -> bool:
        """Delete ``logical_id``'s resource (or skip it, retained); False if deletion failed."""
        state = record.resources[logical_id]
        if state.status == DELETE_COMPLETE or not state.physical_id:
            state.status = DELETE_COMPLETE
            return True
        if retain:
            await self._resource(record, logical_id, DELETE_SKIPPED)
            state.status = DELETE_COMPLETE
            await self._save(record)
            return True
        state.status = DELETE_IN_PROGRESS
        await self._save(record)
        reason = await self._delete_physical(record, logical_id, state.type, state.physical_id)
        state.status, state.reason, state.updated_at = (
            (DELETE_FAILED if reason else DELETE_COMPLETE),
            reason,
            time.time(),
        )
        await self._save(record)
        return reason is None

    async def _rollback_create(self, record: StackRecord) -> None:
        assert record.operation is not None
        failed = []
        for step in reversed(record.operation.steps):
            if step.logical_id in record.resources and not await self._delete_resource(
                record, step.logical_id
            ):
                failed.append(step.logical_id)
        if failed:
            await self._stack_status(
                record, ROLLBACK_FAILED, f"The following resource(s) failed to delete: [{', '.join(failed)}]."
            )
            return
        record.outputs = []
        delete = record.operation.delete_on_failure
        await self._stack_status(record, ROLLBACK_COMPLETE)
        if delete:  # OnFailure DELETE
            record.operation = Operation("DELETE")
            await self._stack_status(record, DELETE_IN_PROGRESS, "OnFailure is DELETE")

    # --- update ---------------------------------------------------------------------------------

    async def _update(self, record: StackRecord) -> None:
        assert record.operation is not None and record.operation.previous is not None
        deployed = self._deployed(record.operation.previous["resources"])
        try:
            evaluation = evaluation_of(record, self.account)
            active = evaluation.active()
            for logical_id in active:
                await self._update_resource(record, evaluation, logical_id, deployed.get(logical_id))
            await self._outputs(record, evaluation)
        except _Failed as failed:
            await self._fail(record, [failed.logical_id])
            return
        except StackError as error:
            await self._fail(record, [record.name], error.message)
            return
        record.operation.removed = [lid for lid in deployed if lid not in active]
        await self._stack_status(record, UPDATE_COMPLETE_CLEANUP_IN_PROGRESS)

    async def _update_resource(
        self, record: StackRecord, evaluation: Evaluation, logical_id: str, old: Deployed | None
    ) -> None:
        assert record.operation is not None
        resource_type = TYPES[evaluation.template.resources[logical_id].type]
        properties = await self._properties(record, evaluation, logical_id)
        try:
            decision = decide(resource_type, old, properties)
        except StackError as error:
            await self._resource(record, logical_id, UPDATE_FAILED, error.message)
            raise _Failed(logical_id) from None
        if decision.verdict == "keep":
            return
        if decision.verdict == "create":
            await self._create_resource(record, evaluation, logical_id)
            return
        assert old is not None
        if decision.verdict == "replace":
            await self._create_resource(record, evaluation, logical_id, replacing=old.physical_id)
            return
        state = record.resources[logical_id]
        record.operation.steps.append(
            Step("update", logical_id, old.physical_id, None, old.properties, properties)
        )
        state.properties = properties
        await self._resource(record, logical_id, UPDATE_IN_PROGRESS)
        if not await self._apply(record, logical_id, old.physical_id, old.properties, properties):
            raise _Failed(logical_id)
        await self._resource(record, logical_id, UPDATE_COMPLETE)

    async def _apply(
        self, record: StackRecord, logical_id: str, physical: str, old: dict[str, Any], new: dict[str, Any]
    ) -> bool:
        resource_type = TYPES[record.resources[logical_id].type]
        identity = identity_of(record, self.account)
        try:
            wait = await self.io(resources.update, self.api, identity, resource_type, physical, old, new)
        except ResourceFailure as failure:
            await self._resource(record, logical_id, _failed_status(record), _handler(failure.message))
            return False
        if wait:
            progress = await self._wait(
                lambda: resources.update_progress(self.api, resource_type, physical, new)
            )
            if progress.failure is not None:
                await self._resource(record, logical_id, _failed_status(record), _handler(progress.failure))
                return False
        return True

    async def _cleanup_update(self, record: StackRecord) -> None:
        """After a successful update: the resources it replaced, and those the template dropped."""
        assert record.operation is not None
        template = parse_template(record.template) if record.template else None
        for step in reversed(record.operation.steps):
            if step.kind == "replace" and step.old_physical_id:
                retain = _policy(template, step.logical_id, "update_replace_policy") == "Retain"
                state = record.resources[step.logical_id]
                if not retain:
                    await self._delete_physical(record, step.logical_id, state.type, step.old_physical_id)
                step.old_physical_id = None
                await self._save(record)
        previous = _template_of(record.operation.previous)
        for logical_id in reversed(_ordered(previous, record.operation.removed)):
            if logical_id in record.resources:
                retain = _policy(previous, logical_id, "deletion_policy") == "Retain"
                await self._delete_resource(record, logical_id, retain=retain)
                record.resources.pop(logical_id, None)
                await self._save(record)
        await self.io(self.stacks.obsolete_others, record.stack_id, None)
        record.operation = None
        await self._stack_status(record, UPDATE_COMPLETE)

    async def _rollback_update(self, record: StackRecord) -> None:
        """Put back what the failed update changed in place; what it created goes in the cleanup."""
        assert record.operation is not None and record.operation.previous is not None
        failed = []
        previous = record.operation.previous
        for step in reversed(record.operation.steps):
            state = record.resources.get(step.logical_id)
            if state is None:
                continue
            if step.kind == "update" and step.old_properties is not None:
                await self._resource(record, step.logical_id, UPDATE_IN_PROGRESS)
                if not await self._revert(record, step):
                    failed.append(step.logical_id)
                    continue
                state.properties = step.old_properties
                await self._resource(record, step.logical_id, UPDATE_COMPLETE)
            elif step.kind == "replace" and step.old_physical_id:
                state.physical_id, state.properties = step.old_physical_id, step.old_properties or {}
                await self._resource(record, step.logical_id, UPDATE_COMPLETE)
        if failed:
            await self._stack_status(
                record,
                UPDATE_ROLLBACK_FAILED,
                f"The following resource(s) failed to update: [{', '.join(failed)}].",
            )
            return
        # The stack is what it was, but for what the update created (deleted next).
        record.template = previous["template"]
        record.parameters = previous["parameters"]
        record.outputs = previous["outputs"]
        record.description = previous.get("description")
        await self._stack_status(record, UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS)

    async def _revert(self, record: StackRecord, step: Step) -> bool:
        state = record.resources[step.logical_id]
        resource_type = TYPES[state.type]
        old, new = step.old_properties or {}, step.new_properties or {}
        if resource_type is ENDPOINT:
            # Wait for the endpoint to finish what it was doing; if it still serves its old
            # configuration (the update failed, or never started), only its tags need putting back.
            await self._wait(lambda: _endpoint_settled(self.api, step.physical_id))
            try:
                current = await self.io(resources.current_config, self.api, step.physical_id)
            except ResourceFailure as failure:
                await self._resource(record, step.logical_id, UPDATE_FAILED, _handler(failure.message))
                return False
            if current == old.get("EndpointConfigName"):
                start = {k: v for k, v in old.items() if k != "Tags"}
                if "Tags" in new:
                    start["Tags"] = new["Tags"]
                new = start
        return await self._apply(record, step.logical_id, step.physical_id, new, old)

    async def _cleanup_rollback(self, record: StackRecord) -> None:
        assert record.operation is not None
        for step in reversed(record.operation.steps):
            if step.kind == "create" and step.logical_id in record.resources:
                state = record.resources[step.logical_id]
                if state.physical_id == step.physical_id:
                    await self._delete_resource(record, step.logical_id)
                    record.resources.pop(step.logical_id, None)
            elif step.kind == "replace":
                state = record.resources[step.logical_id]
                await self._delete_physical(record, step.logical_id, state.type, step.physical_id)
            step.kind = "done"
            await self._save(record)
        # The stack holds again what it held before the update; what the rollback put back says so.
        previous = record.operation.previous or {}
        restored = {lid: ResourceState(**state) for lid, state in previous.get("resources", {}).items()}
        for logical_id, state in restored.items():
            now = record.resources.get(logical_id)
            if now is not None and now.status == UPDATE_COMPLETE:
                state.status, state.reason, state.updated_at = UPDATE_COMPLETE, None, now.updated_at
        record.resources = restored or record.resources
        await self.io(self.stacks.obsolete_others, record.stack_id, None)
        record.operation = None
        await self._stack_status(record, UPDATE_ROLLBACK_COMPLETE)

    # --- delete ---------------------------------------------------------------------------------

    async def _delete(self, record: StackRecord) -> None:
        retained = set(record.operation.retain) if record.operation is not None else set()
        template = parse_template(record.template) if record.template else None
        failed = []
        for logical_id in reversed(_ordered(template, list(record.resources))):
            retain = logical_id in retained or _policy(template, logical_id, "deletion_policy") == "Retain"
            if not await self._delete_resource(record, logical_id, retain=retain):
                failed.append(logical_id)
                break
        if failed:
            await self._stack_status(
                record, DELETE_FAILED, f"The following resource(s) failed to delete: [{', '.join(failed)}]."
            )
            return
        record.operation = None
        record.deleted_at = time.time()
        await self._stack_status(record, DELETE_COMPLETE)
        await self.io(self.stacks.delete_change_sets, record.stack_id)


# --- helpers ----------------------------------------------------------------------------------------


_KEEPS_REASON = frozenset(
    {ROLLBACK_COMPLETE, UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS, UPDATE_ROLLBACK_COMPLETE}
)


def _failed_status(record: StackRecord) -> str:
    assert record.operation is not None
    return CREATE_FAILED if record.operation.kind == "CREATE" else UPDATE_FAILED


def _handler(message: str) -> str:
    return f'Resource handler returned message: "{message}"'


def _endpoint_settled(api: SageMakerApi, name: str) -> Progress:
    try:
        described = api.call("DescribeEndpoint", {"EndpointName": name})
    except ResourceFailure:
        return resources.DONE
    return resources.PENDING if described["EndpointStatus"] in ("Creating", "Updating") else resources.DONE


def _template_of(previous: dict[str, Any] | None) -> Template | None:
    if previous is None or not previous.get("template"):
        return None
    try:
        return parse_template(previous["template"])
    except StackError:
        return None


def _ordered(template: Template | None, logical_ids: list[str]) -> list[str]:
    """``logical_ids`` in dependency order as ``template`` has them (those it lacks last)."""
    if template is None:
        return list(logical_ids)
    known = [lid for lid in logical_ids if lid in template.resources]
    return order(template, known) + [lid for lid in logical_ids if lid not in template.resources]


def _policy(template: Template | None, logical_id: str, which: str) -> str:
    if template is None or logical_id not in template.resources:
        return "Delete"
    return str(getattr(template.resources[logical_id], which))
