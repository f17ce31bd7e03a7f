"""Request validation from botocore's SageMaker service model, plus SageMaker's own rules.

botocore's ParamValidator checks required members, types and minimums; SageMaker also enforces
maximums, enums and name patterns server-side, which ``constraint_errors`` adds from the same model.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import botocore.session
from botocore.model import ListShape, MapShape, OperationModel, ServiceModel, Shape, StructureShape
from botocore.validate import ParamValidator

from coldbrew.errors import ValidationException

SERVERLESS_MEMORY_SIZES = (1024, 2048, 3072, 4096, 5120, 6144)


@functools.cache
def service_model() -> ServiceModel:
    return botocore.session.get_session().get_service_model("sagemaker")


def operation_model(name: str) -> OperationModel | None:
    model = service_model()
    if name not in model.operation_names:
        return None
    return model.operation_model(name)


@functools.cache
def _pattern(source: str) -> re.Pattern[str] | None:
    # The model's patterns are Java regexes; the few Python cannot compile (\p{L} classes) are
    # left to the type checks rather than rejecting valid input.
    try:
        return re.compile(source)
    except re.error:
        return None


# Patterns coldbrew deliberately widens: model data may also be a local path or file:// URL, and
# an Image may be "exec:COMMAND ARGS" (a user's own server), which contains spaces.
WIDENED_PATTERNS = frozenset({"Url", "ContainerImage"})


def _lower_first(name: str) -> str:
    return name[:1].lower() + name[1:]


def constraint_errors(value: Any, shape: Shape, path: str = "") -> list[str]:
    """Maximums, enums and patterns in the words SageMaker uses for them."""
    errors: list[str] = []
    meta = shape.metadata
    where = path or shape.name
    if isinstance(shape, StructureShape) and isinstance(value, dict):
        for member_name, member_shape in shape.members.items():
            if member_name in value:
                child = f"{path}.{_lower_first(member_name)}" if path else _lower_first(member_name)
                errors += constraint_errors(value[member_name], member_shape, child)
    elif isinstance(shape, ListShape) and isinstance(value, list):
        if "max" in meta and len(value) > meta["max"]:
            errors.append(
                f"Value at '{where}' failed to satisfy constraint: "
                f"Member must have length less than or equal to {meta['max']}"
            )
        for index, item in enumerate(value):
            errors += constraint_errors(item, shape.member, f"{where}.{index + 1}.member")
    elif isinstance(shape, MapShape) and isinstance(value, dict):
        if "max" in meta and len(value) > meta["max"]:
            errors.append(
                f"Value at '{where}' failed to satisfy constraint: "
                f"Member must have length less than or equal to {meta['max']}"
            )
        for key, item in value.items():
            errors += constraint_errors(key, shape.key, f"{where}.key")
            errors += constraint_errors(item, shape.value, f"{where}.{key}")
    elif shape.type_name == "string" and isinstance(value, str):
        if "max" in meta and len(value) > meta["max"]:
            errors.append(
                f"Value '{value[:64]}' at '{where}' failed to satisfy constraint: "
                f"Member must have length less than or equal to {meta['max']}"
            )
        if shape.enum and value not in shape.enum:
            errors.append(
                f"Value '{value}' at '{where}' failed to satisfy constraint: "
                f"Member must satisfy enum value set: [{', '.join(shape.enum)}]"
            )
        checked = "pattern" in meta and shape.name not in WIDENED_PATTERNS
        pattern = _pattern(meta["pattern"]) if checked else None
        if pattern is not None and not pattern.fullmatch(value):
            errors.append(
                f"Value '{value[:64]}' at '{where}' failed to satisfy constraint: "
                f"Member must satisfy regular expression pattern: {meta['pattern']}"
            )
    elif shape.type_name in ("integer", "long", "float", "double") and isinstance(value, int | float):
        if "max" in meta and value > meta["max"]:
            errors.append(
                f"Value '{value}' at '{where}' failed to satisfy constraint: "
                f"Member must have value less than or equal to {meta['max']}"
            )
    return errors


def _errors_message(errors: list[str]) -> str:
    count = len(errors)
    noun = "error" if count == 1 else "errors"
    return f"{count} validation {noun} detected: " + "; ".join(errors)


def validate_input(operation: OperationModel, params: dict[str, Any]) -> None:
    """Raise ValidationException unless ``params`` fit the operation's input shape."""
    shape = operation.input_shape
    if shape is None:
        return
    report = ParamValidator().validate(params, shape)
    if report.has_errors():
        raise ValidationException(report.generate_report().replace("\n", " ").strip())
    errors = constraint_errors(params, shape)
    if errors:
        raise ValidationException(_errors_message(errors))


def validate_production_variants(variants: list[dict[str, Any]]) -> None:
    """SageMaker's rules for CreateEndpointConfig that the service model cannot express."""
    seen: set[str] = set()
    for variant in variants:
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
            raise ValidationException(
                f"Value '{memory}' at 'serverlessConfig.memorySizeInMB' failed to satisfy constraint: "
                "Member must be one of 1024, 2048, 3072, 4096, 5120, 6144."
            )
        provisioned = serverless.get("ProvisionedConcurrency")
        if provisioned is not None and provisioned > serverless["MaxConcurrency"]:
            raise ValidationException(
                f"ProvisionedConcurrency ({provisioned}) of variant '{name}' must not exceed its "
                f"MaxConcurrency ({serverless['MaxConcurrency']})."
            )
