"""The resource types a stack may hold, as CloudFormation documents them: which SageMaker
operation creates each, its name property, what ``Ref`` and ``Fn::GetAtt`` return, and which
property changes update it in place (the rest replace it).

Pure data: ``resources`` carries these out through the control plane.
"""

from __future__ import annotations

from dataclasses import dataclass

from coldbrew.control import arns


@dataclass(frozen=True)
class ResourceType:
    name: str
    create_operation: str
    delete_operation: str
    name_property: str
    """The property naming the resource; CloudFormation generates a name when it is absent."""
    arn_type: str
    attributes: frozenset[str]
    """``Fn::GetAtt`` attributes (each returns the physical name). ``Ref`` returns the ARN."""
    in_place: frozenset[str]
    """Properties whose change updates the resource in place ("No interruption"); a change to
    any other property replaces it."""
    update_only: frozenset[str] = frozenset()
    """Properties that only the update takes (not sent on create)."""


MODEL = ResourceType(
    name="AWS::SageMaker::Model",
    create_operation="CreateModel",
    delete_operation="DeleteModel",
    name_property="ModelName",
    arn_type=arns.MODEL,
    attributes=frozenset({"ModelName"}),
    in_place=frozenset({"Tags"}),
)
ENDPOINT_CONFIG = ResourceType(
    name="AWS::SageMaker::EndpointConfig",
    create_operation="CreateEndpointConfig",
    delete_operation="DeleteEndpointConfig",
    name_property="EndpointConfigName",
    arn_type=arns.ENDPOINT_CONFIG,
    attributes=frozenset({"EndpointConfigName"}),
    in_place=frozenset({"Tags"}),
)
ENDPOINT = ResourceType(
    name="AWS::SageMaker::Endpoint",
    create_operation="CreateEndpoint",
    delete_operation="DeleteEndpoint",
    name_property="EndpointName",
    arn_type=arns.ENDPOINT,
    attributes=frozenset({"EndpointName"}),
    in_place=frozenset(
        {
            "EndpointConfigName",
            "DeploymentConfig",
            "RetainAllVariantProperties",
            "ExcludeRetainedVariantProperties",
            "RetainDeploymentConfig",
            "Tags",
        }
    ),
    update_only=frozenset(
        {"RetainAllVariantProperties", "ExcludeRetainedVariantProperties", "RetainDeploymentConfig"}
    ),
)

TYPES: dict[str, ResourceType] = {t.name: t for t in (MODEL, ENDPOINT_CONFIG, ENDPOINT)}
