"""Request validation from botocore's SageMaker service model, plus SageMaker's own rules.

Required members, lengths, ranges, enums and name patterns are checked by ``constraint_errors``
from botocore's model and reported in the AWS wire format; botocore's ParamValidator then catches
wrong types. SageMaker's own rules the model cannot express follow.
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


# Patterns coldbrew deliberately widens: an Image may be "exec:COMMAND ARGS" (a user's own server),
# which contains spaces; and model data (the "Url" shape, ModelDataUrl) may also be a local
# absolute path or file:// URL besides the s3:// and https:// URLs SageMaker's pattern allows.
WIDENED_PATTERNS = frozenset({"ContainerImage"})
LOCAL_URL_SHAPES = frozenset({"Url"})
_LOCAL_PATH = re.compile(r"(file://)?/.*")


def _lower_first(name: str) -> str:
    return name[:1].lower() + name[1:]


def _shown(value: Any) -> str:
    """A value as AWS quotes it in a constraint error, bounded: a client's 6 MB string is not echoed."""
    text = str(value)
    return text if len(text) <= 64 else text[:64] + "..."


def constraint_errors(value: Any, shape: Shape, path: str = "") -> list[str]:
    """Every constraint ``value`` breaks, in the AWS wire format: member paths in lower camel case,
    list items as ``.N.member`` counted from 1, and AWS's standard wording for null, length, range,
    enum and pattern constraints (what the service answers, not botocore's client-side report)."""
    errors: list[str] = []
    meta = shape.metadata
    where = path or _lower_first(shape.name)

    def broken(rule: str, shown: Any = None) -> None:
        quoted = "" if shown is None else f" '{_shown(shown)}'"
        errors.append(f"Value{quoted} at '{where}' failed to satisfy constraint: Member must {rule}")

    if isinstance(shape, StructureShape) and isinstance(value, dict):
        for member_name, member_shape in shape.members.items():
            child = f"{path}.{_lower_first(member_name)}" if path else _lower_first(member_name)
            if value.get(member_name) is None:
                if member_name in shape.required_members:
                    errors.append(
                        f"Value null at '{child}' failed to satisfy constraint: Member must not be null"
                    )
                continue
            errors += constraint_errors(value[member_name], member_shape, child)
    elif isinstance(shape, ListShape | MapShape) and isinstance(value, list | dict):
        if "min" in meta and len(value) < meta["min"]:
            broken(f"have length greater than or equal to {meta['min']}")
        if "max" in meta and len(value) > meta["max"]:
            broken(f"have length less than or equal to {meta['max']}")
        if isinstance(shape, ListShape) and isinstance(value, list):
            for index, item in enumerate(value):
                errors += constraint_errors(item, shape.member, f"{where}.{index + 1}.member")
        elif isinstance(shape, MapShape) and isinstance(value, dict):
            for key, item in value.items():
                errors += constraint_errors(key, shape.key, f"{where}.key")
                errors += constraint_errors(item, shape.value, f"{where}.{key}")
    elif shape.type_name == "string" and isinstance(value, str):
        if "min" in meta and len(value) < meta["min"]:
            broken(f"have length greater than or equal to {meta['min']}", value)
        if "max" in meta and len(value) > meta["max"]:
            broken(f"have length less than or equal to {meta['max']}", value)
        if shape.enum and value not in shape.enum:
            broken(f"satisfy enum value set: [{', '.join(shape.enum)}]", value)
        checked = "pattern" in meta and shape.name not in WIDENED_PATTERNS
        if checked and shape.name in LOCAL_URL_SHAPES and _LOCAL_PATH.fullmatch(value):
            checked = False
        pattern = _pattern(meta["pattern"]) if checked else None
        if pattern is not None and not pattern.fullmatch(value):
            broken(f"satisfy regular expression pattern: {meta['pattern']}", value)
    elif (
        shape.type_name in ("integer", "long", "float", "double")
        and isinstance(value, int | float)
        and not isinstance(value, bool)
    ):
        if "min" in meta and value < meta["min"]:
            broken(f"have value greater than or equal to {meta['min']}", value)
        if "max" in meta and value > meta["max"]:
            broken(f"have value less than or equal to {meta['max']}", value)
    return errors


def errors_message(errors: list[str]) -> str:
    count = len(errors)
    noun = "error" if count == 1 else "errors"
    return f"{count} validation {noun} detected: " + "; ".join(errors)


def validate_input(operation: OperationModel, params: dict[str, Any]) -> None:
    """Raise ValidationException unless ``params`` fit the operation's input shape.

    Constraints are reported as SageMaker reports them (``constraint_errors``); what remains for
    botocore's validator are wrong types, which SageMaker's JSON parser would refuse outright.
    """
    shape = operation.input_shape
    if shape is None:
        return
    errors = constraint_errors(params, shape)
    if errors:
        raise ValidationException(errors_message(errors))
    report = ParamValidator().validate(params, shape)
    if report.has_errors():
        raise ValidationException(report.generate_report().replace("\n", " ").strip())


def validate_production_variants(variants: list[dict[str, Any]]) -> None:
    """SageMaker's rules for CreateEndpointConfig that the service model cannot express."""
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
