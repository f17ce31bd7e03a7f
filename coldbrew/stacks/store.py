"""Stacks, their events and change sets, durable in the control plane's SQLite store
(migration 7 of ``coldbrew.control.store``).

A stack's resources are kept as JSON by logical ID, with what each was deployed with; while an
operation runs, its journal (``Operation``) is saved before each step it takes, so a restart can
roll back or finish what a killed server left, and never leaves a stack IN_PROGRESS.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from coldbrew.control.store import Store, dumps, loads
from coldbrew.stacks.errors import AlreadyExistsException
from coldbrew.stacks.statuses import RUNNING

MAX_REASON = 4000


@dataclass
class ResourceState:
    """One resource of a stack, as DescribeStackResources shows it."""

    type: str
    physical_id: str | None
    properties: dict[str, Any]
    status: str
    reason: str | None = None
    updated_at: float = field(default_factory=time.time)


@dataclass
class Step:
    """One journal entry: what an operation did to a resource, so it can be undone."""

    kind: str  # "create" | "update" | "replace"
    logical_id: str
    physical_id: str
    old_physical_id: str | None = None
    old_properties: dict[str, Any] | None = None
    new_properties: dict[str, Any] | None = None


@dataclass
class Operation:
    kind: str  # "CREATE" | "UPDATE" | "DELETE"
    previous: dict[str, Any] | None = None
    """For an update: the stack's template, parameters, resources and outputs before it."""
    steps: list[Step] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    """Logical IDs whose step failed (named in the rollback's reason)."""
    retain: list[str] = field(default_factory=list)
    """DeleteStack's RetainResources."""
    removed: list[str] = field(default_factory=list)
    """An update's resources that the new template no longer has (deleted in its cleanup)."""
    delete_on_failure: bool = False
    """CreateStack's OnFailure DELETE: a rolled-back stack is then deleted."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Operation:
        steps = [Step(**s) for s in data.get("steps", [])]
        return cls(
            data["kind"],
            data.get("previous"),
            steps,
            data.get("failed", []),
            data.get("retain", []),
            data.get("removed", []),
            data.get("delete_on_failure", False),
        )


@dataclass
class StackRecord:
    stack_id: str
    name: str
    region: str
    status: str
    created_at: float
    parameters: dict[str, str]
    tags: list[dict[str, str]]
    notification_arns: list[str]
    resources: dict[str, ResourceState]
    outputs: list[dict[str, Any]]
    template: str | None = None
    description: str | None = None
    status_reason: str | None = None
    updated_at: float | None = None
    deleted_at: float | None = None
    disable_rollback: bool = False
    operation: Operation | None = None

    def resources_json(self) -> dict[str, Any]:
        return {lid: asdict(state) for lid, state in self.resources.items()}


@dataclass(frozen=True)
class Event:
    seq: int
    stack_id: str
    stack_name: str
    event_id: str
    timestamp: float
    logical_id: str
    physical_id: str | None
    resource_type: str
    status: str
    reason: str | None
    properties: str | None


@dataclass
class ChangeSetRecord:
    change_set_id: str
    name: str
    stack_id: str
    created_at: float
    type: str
    status: str
    execution_status: str
    template: str
    parameters: dict[str, str]
    tags: list[dict[str, str]]
    notification_arns: list[str]
    changes: list[dict[str, Any]]
    description: str | None = None
    status_reason: str | None = None


def _stack(row: Any) -> StackRecord:
    resources = {lid: ResourceState(**state) for lid, state in loads(row["resources"]).items()}
    operation = loads(row["operation"])
    return StackRecord(
        stack_id=row["stack_id"],
        name=row["name"],
        region=row["region"],
        status=row["status"],
        created_at=row["created_at"],
        parameters=loads(row["parameters"]),
        tags=loads(row["tags"]),
        notification_arns=loads(row["notification_arns"]),
        resources=resources,
        outputs=loads(row["outputs"]),
        template=row["template"],
        description=row["description"],
        status_reason=row["status_reason"],
        updated_at=row["updated_at"],
        deleted_at=row["deleted_at"],
        disable_rollback=bool(row["disable_rollback"]),
        operation=None if operation is None else Operation.from_json(operation),
    )


def _change_set(row: Any) -> ChangeSetRecord:
    return ChangeSetRecord(
        change_set_id=row["change_set_id"],
        name=row["name"],
        stack_id=row["stack_id"],
        created_at=row["created_at"],
        type=row["type"],
        status=row["status"],
        execution_status=row["execution_status"],
        template=row["template"],
        parameters=loads(row["parameters"]),
        tags=loads(row["tags"]),
        notification_arns=loads(row["notification_arns"]),
        changes=loads(row["changes"]),
        description=row["description"],
        status_reason=row["status_reason"],
    )


class StackStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    # --- stacks -----------------------------------------------------------------------------------

    def find(self, name_or_id: str) -> StackRecord | None:
        """A stack by ID (deleted ones too, as CloudFormation keeps them), or the live stack of
        that name."""
        if name_or_id.startswith("arn:"):
            row = self.store.query_one("SELECT * FROM stacks WHERE stack_id = ?", [name_or_id])
        else:
            row = self.store.query_one(
                "SELECT * FROM stacks WHERE name = ? AND deleted_at IS NULL", [name_or_id]
            )
        return None if row is None else _stack(row)

    def live(self) -> list[StackRecord]:
        rows = self.store.query("SELECT * FROM stacks WHERE deleted_at IS NULL ORDER BY created_at DESC")
        return [_stack(r) for r in rows]

    def everything(self) -> list[StackRecord]:
        """Every stack, deleted ones included (ListStacks), newest first."""
        rows = self.store.query("SELECT * FROM stacks ORDER BY created_at DESC")
        return [_stack(r) for r in rows]

    def running(self) -> list[StackRecord]:
        marks = ", ".join("?" for _ in RUNNING)
        rows = self.store.query(
            f"SELECT * FROM stacks WHERE status IN ({marks}) ORDER BY created_at", list(RUNNING)
        )
        return [_stack(r) for r in rows]

    def insert(self, record: StackRecord) -> None:
        with self.store.transaction() as conn:
            taken = conn.execute(
                "SELECT 1 FROM stacks WHERE name = ? AND deleted_at IS NULL", [record.name]
            ).fetchone()
            if taken:
                raise AlreadyExistsException(f"Stack [{record.name}] already exists")
            conn.execute(
                "INSERT INTO stacks (stack_id, name, region, status, status_reason, created_at, updated_at, "
                "deleted_at, description, template, parameters, tags, notification_arns, disable_rollback, "
                "resources, outputs, operation) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                self._values(record)[:1] + [record.name, record.region] + self._values(record)[1:],
            )

    @staticmethod
    def _values(record: StackRecord) -> list[Any]:
        return [
            record.stack_id,
            record.status,
            (record.status_reason or "")[:MAX_REASON] or None,
            record.created_at,
            record.updated_at,
            record.deleted_at,
            record.description,
            record.template,
            dumps(record.parameters),
            dumps(record.tags),
            dumps(record.notification_arns),
            int(record.disable_rollback),
            dumps(record.resources_json()),
            dumps(record.outputs),
            None if record.operation is None else dumps(record.operation.to_json()),
        ]

    def save(self, record: StackRecord, expect_status: frozenset[str] | None = None) -> bool:
        """Write ``record``; with ``expect_status``, only if the stored stack is in one of those
        states (False otherwise: another request changed it first)."""
        values = self._values(record)
        with self.store.transaction() as conn:
            if expect_status is not None:
                row = conn.execute(
                    "SELECT status FROM stacks WHERE stack_id = ?", [record.stack_id]
                ).fetchone()
                if row is None or row["status"] not in expect_status:
                    return False
            conn.execute(
                "UPDATE stacks SET status = ?, status_reason = ?, created_at = ?, updated_at = ?, "
                "deleted_at = ?, "
                "description = ?, template = ?, parameters = ?, tags = ?, notification_arns = ?, "
                "disable_rollback = ?, resources = ?, outputs = ?, operation = ? WHERE stack_id = ?",
                values[1:] + [values[0]],
            )
        return True

    # --- events ---------------------------------------------------------------------------------

    def add_event(
        self,
        record: StackRecord,
        logical_id: str,
        resource_type: str,
        status: str,
        reason: str | None = None,
        physical_id: str | None = None,
        properties: dict[str, Any] | None = None,
    ) -> None:
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT INTO stack_events (stack_id, event_id, timestamp, logical_id, physical_id, "
                "resource_type, "
                "status, reason, properties) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    record.stack_id,
                    f"{logical_id}-{status}-{uuid.uuid4()}",
                    time.time(),
                    logical_id,
                    physical_id,
                    resource_type,
                    status,
                    (reason or "")[:MAX_REASON] or None,
                    None if properties is None else dumps(properties),
                ],
            )

    def events(self, record: StackRecord, before: int | None, limit: int) -> list[Event]:
        """Newest first, those with ``seq < before`` when given."""
        rows = self.store.query(
            "SELECT * FROM stack_events WHERE stack_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
            [record.stack_id, before if before is not None else 2**62, limit],
        )
        return [
            Event(
                r["seq"],
                r["stack_id"],
                record.name,
                r["event_id"],
                r["timestamp"],
                r["logical_id"],
                r["physical_id"],
                r["resource_type"],
                r["status"],
                r["reason"],
                r["properties"],
            )
            for r in rows
        ]

    # --- change sets ----------------------------------------------------------------------------

    def insert_change_set(self, change_set: ChangeSetRecord) -> None:
        with self.store.transaction() as conn:
            # An executed change set (and the others it made obsolete) no longer holds its name:
            # CloudFormation removes a stack's change sets once one is executed. The AWS CLI names
            # its change sets by the second, so two deploys within one second reuse a name.
            taken = conn.execute(
                "SELECT 1 FROM change_sets WHERE stack_id = ? AND name = ? "
                "AND execution_status NOT IN ('EXECUTE_COMPLETE', 'OBSOLETE')",
                [change_set.stack_id, change_set.name],
            ).fetchone()
            if taken:
                raise AlreadyExistsException(f"ChangeSet {change_set.name} already exists")
            conn.execute(
                "INSERT INTO change_sets (change_set_id, name, stack_id, created_at, type, status, "
                "status_reason, "
                "execution_status, description, template, parameters, tags, notification_arns, changes) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    change_set.change_set_id,
                    change_set.name,
                    change_set.stack_id,
                    change_set.created_at,
                    change_set.type,
                    change_set.status,
                    change_set.status_reason,
                    change_set.execution_status,
                    change_set.description,
                    change_set.template,
                    dumps(change_set.parameters),
                    dumps(change_set.tags),
                    dumps(change_set.notification_arns),
                    dumps(change_set.changes),
                ],
            )

    def change_set(self, name_or_id: str, stack_id: str | None) -> ChangeSetRecord | None:
        if name_or_id.startswith("arn:"):
            row = self.store.query_one("SELECT * FROM change_sets WHERE change_set_id = ?", [name_or_id])
        elif stack_id is not None:
            row = self.store.query_one(
                "SELECT * FROM change_sets WHERE stack_id = ? AND name = ? ORDER BY created_at DESC LIMIT 1",
                [stack_id, name_or_id],
            )
        else:
            row = None
        return None if row is None else _change_set(row)

    def change_sets(self, stack_id: str) -> list[ChangeSetRecord]:
        rows = self.store.query(
            "SELECT * FROM change_sets WHERE stack_id = ? ORDER BY created_at", [stack_id]
        )
        return [_change_set(r) for r in rows]

    def set_execution_status(self, change_set_id: str, status: str, expect: str | None = None) -> bool:
        with self.store.transaction() as conn:
            if expect is None:
                cursor = conn.execute(
                    "UPDATE change_sets SET execution_status = ? WHERE change_set_id = ?",
                    [status, change_set_id],
                )
            else:
                cursor = conn.execute(
                    "UPDATE change_sets SET execution_status = ? WHERE change_set_id = ? AND "
                    "execution_status = ?",
                    [status, change_set_id, expect],
                )
            return cursor.rowcount > 0

    def obsolete_others(self, stack_id: str, executed: str | None) -> None:
        """The stack changed: its other change sets can no longer be executed."""
        with self.store.transaction() as conn:
            conn.execute(
                "UPDATE change_sets SET execution_status = 'OBSOLETE' WHERE stack_id = ? AND change_set_id "
                "!= ? "
                "AND execution_status IN ('AVAILABLE', 'UNAVAILABLE')",
                [stack_id, executed or ""],
            )

    def delete_change_set(self, change_set_id: str) -> None:
        with self.store.transaction() as conn:
            conn.execute("DELETE FROM change_sets WHERE change_set_id = ?", [change_set_id])

    def delete_change_sets(self, stack_id: str) -> None:
        with self.store.transaction() as conn:
            conn.execute("DELETE FROM change_sets WHERE stack_id = ?", [stack_id])
