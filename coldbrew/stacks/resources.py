"""Creating, updating and deleting a stack's resources through the control plane's operations.

Each step is a short synchronous call (the engine runs it off the event loop) and a status check
the engine polls: an endpoint is created, updated or deleted when SageMaker's DescribeEndpoint
says so (InService, or gone), as CloudFormation waits for it. Template properties become the
operation's request as the SageMaker API types them (a parameter's "1" is the integer 1), and the
request is validated as the gateway validates a client's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from botocore.model import Shape

from coldbrew.control.validation import operation_model
from coldbrew.stacks.catalog import ENDPOINT, ResourceType
from coldbrew.stacks.evaluation import StackIdentity
from coldbrew.stacks.plan import arn_of


class SageMakerApi(Protocol):
    """SageMaker's control operations (``coldbrew.control.service.ControlPlane`` behind them)."""

    def call(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        """The operation's response; raises ``ResourceFailure`` with SageMaker's error."""
        ...


class ResourceFailure(Exception):
    """A SageMaker operation refused or failed: the message becomes the resource's status reason."""

    def __init__(self, message: str, not_found: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.not_found = not_found


@dataclass(frozen=True)
class Progress:
    done: bool
    failure: str | None = None


DONE = Progress(True)
PENDING = Progress(False)


# --- requests -------------------------------------------------------------------------------------


def typed(value: Any, shape: Shape) -> Any:
    """``value`` converted to what ``shape`` holds where CloudFormation would convert it (template
    values are often strings: ``!Ref`` of a Number parameter is "1"); anything else is left for
    the operation's validation to name."""
    kind = shape.type_name
    if kind == "structure" and isinstance(value, dict):
        return {k: typed(v, shape.members[k]) if k in shape.members else v for k, v in value.items()}
    if kind == "list" and isinstance(value, list):
        return [typed(item, shape.member) for item in value]
    if kind == "map" and isinstance(value, dict):
        return {k: typed(v, shape.value) for k, v in value.items()}
    if kind in ("integer", "long"):
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                try:
                    number = float(value)
                except ValueError:
                    return value
                return int(number) if number.is_integer() else value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    if kind in ("float", "double"):
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                return value
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
    if kind == "boolean" and isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if kind == "string" and not isinstance(value, str):
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float):
            return str(value)
    return value


def request_for(operation: str, properties: Mapping[str, Any]) -> dict[str, Any]:
    model = operation_model(operation)
    assert model is not None and model.input_shape is not None
    shape = model.input_shape
    request = {k: v for k, v in properties.items() if k in shape.members or k not in _CFN_ONLY}
    result: dict[str, Any] = typed(request, shape)
    return result


_CFN_ONLY = frozenset(
    {"RetainAllVariantProperties", "ExcludeRetainedVariantProperties", "RetainDeploymentConfig"}
)


def _tags(properties: Mapping[str, Any]) -> list[dict[str, str]]:
    tags = properties.get("Tags")
    return list(tags) if isinstance(tags, list) else []


# --- create -------------------------------------------------------------------------------------


def create(
    api: SageMakerApi,
    resource_type: ResourceType,
    physical_id: str,
    properties: Mapping[str, Any],
    stack_tags: list[dict[str, str]],
) -> None:
    body = {k: v for k, v in properties.items() if k not in resource_type.update_only}
    body[resource_type.name_property] = physical_id
    own = _tags(properties)
    keys = {t.get("Key") for t in own if isinstance(t, dict)}
    body["Tags"] = own + [t for t in stack_tags if t["Key"] not in keys]
    api.call(resource_type.create_operation, request_for(resource_type.create_operation, body))


def creation_progress(api: SageMakerApi, resource_type: ResourceType, physical_id: str) -> Progress:
    if resource_type is not ENDPOINT:
        return DONE
    described = api.call("DescribeEndpoint", {"EndpointName": physical_id})
    status = described["EndpointStatus"]
    if status == "InService":
        return DONE
    if status == "Failed":
        reason = described.get("FailureReason") or "no reason given"
        return Progress(True, f"Endpoint {physical_id} is Failed: {reason}")
    return PENDING


# --- update in place ------------------------------------------------------------------------------


def update(
    api: SageMakerApi,
    identity: StackIdentity,
    resource_type: ResourceType,
    physical_id: str,
    old: Mapping[str, Any],
    new: Mapping[str, Any],
) -> bool:
    """Apply the in-place changes from ``old`` to ``new``; True if the resource must then be
    waited for (an endpoint deploying its new configuration)."""
    changed = {k for k in set(old) | set(new) if old.get(k) != new.get(k)}
    if "Tags" in changed:
        _retag(api, arn_of(identity, resource_type, physical_id), _tags(old), _tags(new))
    if resource_type is ENDPOINT and changed - {"Tags"}:
        body = {k: v for k, v in new.items() if k != "Tags"}
        body["EndpointName"] = physical_id
        api.call("UpdateEndpoint", request_for("UpdateEndpoint", body))
        return True
    return False


def _retag(api: SageMakerApi, arn: str, old: list[dict[str, str]], new: list[dict[str, str]]) -> None:
    removed = sorted({t["Key"] for t in old} - {t["Key"] for t in new})
    if removed:
        api.call("DeleteTags", {"ResourceArn": arn, "TagKeys": removed})
    if new:
        api.call("AddTags", request_for("AddTags", {"ResourceArn": arn, "Tags": new}))


def update_progress(
    api: SageMakerApi, resource_type: ResourceType, physical_id: str, properties: Mapping[str, Any]
) -> Progress:
    if resource_type is not ENDPOINT:
        return DONE
    described = api.call("DescribeEndpoint", {"EndpointName": physical_id})
    status = described["EndpointStatus"]
    if status == "Failed":
        return Progress(True, f"Endpoint {physical_id} is Failed: {described.get('FailureReason')}")
    if status != "InService":
        return PENDING
    wanted = properties.get("EndpointConfigName")
    if wanted is not None and described["EndpointConfigName"] != wanted:
        reason = described.get("FailureReason") or "the endpoint did not take the new configuration"
        return Progress(True, f"Update of endpoint {physical_id} failed: {reason}")
    return DONE


def current_config(api: SageMakerApi, physical_id: str) -> str | None:
    """The endpoint configuration endpoint ``physical_id`` serves (None if it is gone)."""
    try:
        described = api.call("DescribeEndpoint", {"EndpointName": physical_id})
    except ResourceFailure as failure:
        if failure.not_found:
            return None
        raise
    return str(described["EndpointConfigName"])


# --- delete -------------------------------------------------------------------------------------


def delete(api: SageMakerApi, resource_type: ResourceType, physical_id: str) -> None:
    """Delete the resource; one that is already gone is deleted."""
    try:
        api.call(resource_type.delete_operation, {resource_type.name_property: physical_id})
    except ResourceFailure as failure:
        if not failure.not_found:
            raise


def deletion_progress(api: SageMakerApi, resource_type: ResourceType, physical_id: str) -> Progress:
    if resource_type is not ENDPOINT:
        return DONE
    try:
        api.call("DescribeEndpoint", {"EndpointName": physical_id})
    except ResourceFailure as failure:
        if failure.not_found:
            return DONE
        raise
    return PENDING
