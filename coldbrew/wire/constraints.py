"""A request's values checked against the constraints of botocore's service model (lengths,
ranges, enums, patterns, required members), reported in the AWS wire format. Shared by every API
whose shapes come from botocore (SageMaker's control plane, CloudWatch Logs)."""

from __future__ import annotations

import functools
import re
from typing import Any

from botocore.model import ListShape, MapShape, Shape, StructureShape


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
