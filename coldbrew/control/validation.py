"""Request validation from botocore's SageMaker service model, plus SageMaker's own rules.

Required members, lengths, ranges, enums and name patterns are checked by ``constraint_errors``
from botocore's model and reported in the AWS wire format; botocore's ParamValidator then catches
wrong types. SageMaker's own rules the model cannot express follow.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import botocore.session
from botocore.model import OperationModel, ServiceModel

from coldbrew.errors import ValidationException
from coldbrew.wire.constraints import errors_message, params_error, shown

SERVERLESS_MEMORY_SIZES = (1024, 2048, 3072, 4096, 5120, 6144)


@functools.cache
def service_model() -> ServiceModel:
    return botocore.session.get_session().get_service_model("sagemaker")


def operation_model(name: str) -> OperationModel | None:
    model = service_model()
    if name not in model.operation_names:
        return None
    return model.operation_model(name)


def validate_input(operation: OperationModel, params: dict[str, Any]) -> None:
    """Raise ValidationException unless ``params`` fit the operation's input shape.

    Constraints are reported as SageMaker reports them (``constraint_errors``); what remains for
    botocore's validator are wrong types, which SageMaker's JSON parser would refuse outright.
    """
    shape = operation.input_shape
    if shape is None:
        return
    problem = params_error(params, shape)
    if problem is not None:
        raise ValidationException(problem)


def check_weights(weights: dict[str, float], member: str) -> None:
    """Traffic goes to each variant in proportion to its weight, so at least one must be above 0
    (an endpoint whose weights are all 0 could route no invocation) and their sum finite.
    Non-finite weights are refused before this, by the constraint checks."""
    if not any(weight > 0 for weight in weights.values()):
        names = ", ".join(f"'{shown(name)}'" for name in weights)
        raise ValidationException(
            f"The {member} of every variant ({names}) is 0: at least one variant's {member} must "
            "be greater than 0, or no invocation could be routed."
        )
    if not math.isfinite(sum(weights.values())):
        raise ValidationException(
            f"The variants' {member}s add up to more than a floating-point number holds; traffic is "
            "split by the ratio of the weights, so smaller numbers in the same ratio route the same."
        )


def validate_production_variants(variants: list[dict[str, Any]]) -> None:
    """SageMaker's rules for CreateEndpointConfig that the service model cannot express."""
    weights = {v["VariantName"]: float(v.get("InitialVariantWeight", 1.0)) for v in variants}
    check_weights(weights, "InitialVariantWeight")
    seen: set[str] = set()
    for index, variant in enumerate(variants, start=1):
        name = variant["VariantName"]
        if name.lower() in seen:
            raise ValidationException(f"Variant name '{name}' is used more than once; names must be unique.")
        seen.add(name.lower())
        serverless = variant.get("ServerlessConfig")
        has_instances = "InstanceType" in variant or "InitialInstanceCount" in variant
        if serverless is not None and has_instances:
            raise ValidationException(
                f"Variant '{name}' has both ServerlessConfig and InstanceType/InitialInstanceCount; "
                "give either a ServerlessConfig or an InstanceType with InitialInstanceCount."
            )
        if serverless is None:
            if "InstanceType" not in variant or "InitialInstanceCount" not in variant:
                raise ValidationException(
                    f"Variant '{name}' needs either a ServerlessConfig or both InstanceType and "
                    "InitialInstanceCount."
                )
            continue
        memory = serverless["MemorySizeInMB"]
        if memory not in SERVERLESS_MEMORY_SIZES:
            where = f"productionVariants.{index}.member.serverlessConfig.memorySizeInMB"
            sizes = ", ".join(map(str, SERVERLESS_MEMORY_SIZES))
            rule = f"failed to satisfy constraint: Member must be one of {sizes}"
            raise ValidationException(errors_message([f"Value '{memory}' at '{where}' {rule}"]))
        provisioned = serverless.get("ProvisionedConcurrency")
        if provisioned is not None and provisioned > serverless["MaxConcurrency"]:
            raise ValidationException(
                f"ProvisionedConcurrency ({provisioned}) of variant '{name}' must not exceed its "
                f"MaxConcurrency ({serverless['MaxConcurrency']})."
            )
