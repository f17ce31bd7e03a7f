"""What a stack operation does to each resource, decided by pure functions.

``decide`` compares a resource's properties as deployed with its properties as the new template
evaluates them: nothing, an update in place (only properties CloudFormation updates without
interruption changed) or a replacement (any other). ``plan_changes`` makes a change set's list of
changes from the stack's deployed resources and a new evaluation, with what is not known until
the operation runs (the name of a resource being replaced) as placeholders, so a change that
depends on one is "Dynamic", as CloudFormation reports it.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from coldbrew.control import arns
from coldbrew.stacks.catalog import TYPES, ResourceType
from coldbrew.stacks.errors import ValidationError
from coldbrew.stacks.evaluation import Evaluation, Lookup, StackIdentity

NAME_LENGTH = 63
"""SageMaker's longest model, endpoint config and endpoint name."""
SUFFIX_ALPHABET = string.ascii_letters + string.digits
SUFFIX_LENGTH = 12
_PLACEHOLDER = "{{coldbrew:unknown:%s}}"


@dataclass(frozen=True)
class Deployed:
    """A resource as the stack holds it: its type, physical name and the properties it was
    created or last updated with (evaluated)."""

    type: str
    physical_id: str
    properties: dict[str, Any]


Verdict = Literal["create", "update", "replace", "keep"]


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    changed: tuple[str, ...] = ()
    """Top-level properties whose values differ."""


def decide(resource_type: ResourceType, deployed: Deployed | None, properties: Mapping[str, Any]) -> Decision:
    if deployed is None:
        return Decision("create")
    if deployed.type != resource_type.name:
        raise ValidationError(
            f"Update of resource type is not permitted. The new template changes the type of a resource "
            f"from {deployed.type} to {resource_type.name}; give the new resource another logical ID."
        )
    names = set(deployed.properties) | set(properties)
    changed = tuple(sorted(n for n in names if deployed.properties.get(n) != properties.get(n)))
    if not changed:
        return Decision("keep")
    if all(name in resource_type.in_place for name in changed):
        return Decision("update", changed)
    return Decision("replace", changed)


def generated_name(logical_id: str, suffix: str) -> str:
    """The physical name CloudFormation gives a SageMaker resource whose template names none:
    ``<LogicalId>-<12 random letters and digits>`` (as ``EndpointConfig-u9H3Iqw70Kp2``), the
    logical ID shortened to fit SageMaker's 63 characters."""
    room = NAME_LENGTH - len(suffix) - 1
    return f"{logical_id[:room]}-{suffix}"


def physical_name(
    resource_type: ResourceType, properties: Mapping[str, Any], logical_id: str, suffix: str
) -> str:
    given = properties.get(resource_type.name_property)
    return given if isinstance(given, str) and given else generated_name(logical_id, suffix)


def arn_of(identity: StackIdentity, resource_type: ResourceType, physical_id: str) -> str:
    return arns.make_arn(identity.region, identity.account, resource_type.arn_type, physical_id)


def lookup(
    identity: StackIdentity,
    types: Mapping[str, str],
    physical: Callable[[str], str | None],
) -> Lookup:
    """Ref and Fn::GetAtt of resources whose physical names ``physical`` gives (None: not known
    yet, answered with a placeholder that compares unequal to any real value)."""

    def ref(logical_id: str) -> str:
        name = physical(logical_id)
        if name is None:
            return _PLACEHOLDER % logical_id
        return arn_of(identity, TYPES[types[logical_id]], name)

    def attribute(logical_id: str, attr: str) -> str:
        name = physical(logical_id)
        return _PLACEHOLDER % f"{logical_id}.{attr}" if name is None else name

    return Lookup(ref, attribute)


def is_unknown(value: Any) -> bool:
    """Whether ``value`` holds a placeholder for something not known until the operation runs."""
    if isinstance(value, str):
        return "{{coldbrew:unknown:" in value
    if isinstance(value, dict):
        return any(is_unknown(v) for v in value.values())
    if isinstance(value, list):
        return any(is_unknown(v) for v in value)
    return False


# --- change sets ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChangeDetail:
    name: str
    requires_recreation: Literal["Always", "Never"]
    evaluation: Literal["Static", "Dynamic"]


@dataclass(frozen=True)
class Change:
    action: Literal["Add", "Modify", "Remove"]
    logical_id: str
    resource_type: str
    physical_id: str | None = None
    replacement: Literal["True", "False", "Conditional"] | None = None
    details: tuple[ChangeDetail, ...] = ()


def plan_changes(evaluation: Evaluation, deployed: Mapping[str, Deployed]) -> list[Change]:
    """The changes executing ``evaluation`` would make to a stack holding ``deployed``."""
    resources = evaluation.template.resources
    types = {lid: r.type for lid, r in resources.items()} | {lid: d.type for lid, d in deployed.items()}
    known: dict[str, str] = {}
    look = lookup(evaluation.identity, types, known.get)
    changes: list[Change] = []
    active = evaluation.active()
    for logical_id in active:
        resource_type = TYPES[resources[logical_id].type]
        properties = evaluation.properties(logical_id, look)
        old = deployed.get(logical_id)
        decision = decide(resource_type, old, properties)
        if decision.verdict == "create":
            changes.append(Change("Add", logical_id, resource_type.name))
            continue
        assert old is not None
        if decision.verdict == "keep":
            known[logical_id] = old.physical_id
            continue
        details = tuple(
            ChangeDetail(
                name,
                "Never" if name in resource_type.in_place else "Always",
                "Dynamic" if is_unknown(properties.get(name)) else "Static",
            )
            for name in decision.changed
        )
        static_replace = any(d.requires_recreation == "Always" and d.evaluation == "Static" for d in details)
        if decision.verdict == "update":
            replacement: Literal["True", "False", "Conditional"] = "False"
            known[logical_id] = old.physical_id
        else:
            replacement = "True" if static_replace else "Conditional"
        changes.append(
            Change("Modify", logical_id, resource_type.name, old.physical_id, replacement, details)
        )
    for logical_id, old in deployed.items():
        if logical_id not in active:
            changes.append(Change("Remove", logical_id, old.type, old.physical_id))
    return changes
