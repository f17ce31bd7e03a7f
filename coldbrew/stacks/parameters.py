"""Template parameters: their declarations, and the values a stack operation resolves them to.

CloudFormation's rules: a value given, else the previous value when ``UsePreviousValue`` asks,
else the ``Default``; checked against the declaration's type and constraints with CloudFormation's
messages. ``Ref`` of any parameter is a string, except list types, which give lists of strings.
Pure.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from coldbrew.stacks.errors import TemplateError, ValidationError
from coldbrew.stacks.intrinsics import PSEUDO_PARAMETERS, scalar_text

TYPES = frozenset({"String", "Number", "List<Number>", "CommaDelimitedList"})
_KEYS = frozenset(
    {
        "Type",
        "Default",
        "AllowedValues",
        "AllowedPattern",
        "ConstraintDescription",
        "Description",
        "MaxLength",
        "MaxValue",
        "MinLength",
        "MinValue",
        "NoEcho",
    }
)
MAX_PARAMETERS = 200
NO_ECHO_MASK = "****"


@dataclass(frozen=True)
class ParameterDecl:
    name: str
    type: str
    default: str | None = None
    allowed_values: tuple[str, ...] | None = None
    allowed_pattern: str | None = None
    min_value: float | None = None
    max_value: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    description: str | None = None
    no_echo: bool = False
    constraint_description: str | None = None

    @property
    def is_list(self) -> bool:
        return self.type in ("List<Number>", "CommaDelimitedList")


@dataclass(frozen=True)
class ParameterInput:
    """One parameter as a request gives it: a value, or ``use_previous``."""

    key: str
    value: str | None = None
    use_previous: bool = False


def parse_declarations(section: Any) -> dict[str, ParameterDecl]:
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise TemplateError("Template format error: Parameters must be a map of parameter declarations.")
    if len(section) > MAX_PARAMETERS:
        raise TemplateError(
            f"Template format error: a template has at most {MAX_PARAMETERS} parameters; this one has "
            f"{len(section)}."
        )
    return {name: _declaration(name, body) for name, body in section.items()}


def _declaration(name: Any, body: Any) -> ParameterDecl:
    if not isinstance(name, str) or not name.isalnum():
        raise TemplateError(f"Template format error: Parameter name {name} is non alphanumeric.")
    if name in PSEUDO_PARAMETERS:
        raise TemplateError(f"Template format error: Parameter name {name} is reserved.")
    if not isinstance(body, dict):
        raise TemplateError(f"Template format error: Parameter {name} must be a map with a Type.")
    unknown = sorted(set(body) - _KEYS)
    if unknown:
        raise TemplateError(
            f"Template format error: Invalid template parameter property '{unknown[0]}' in {name}"
        )
    kind = body.get("Type")
    if not isinstance(kind, str):
        raise TemplateError(
            f"Template format error: Every Parameters object must contain a Type member ({name})."
        )
    if kind not in TYPES:
        raise TemplateError(
            f"Template format error: Unrecognized parameter type: {kind} (parameter {name}); coldbrew takes "
            f"{', '.join(sorted(TYPES))}."
        )
    allowed = body.get("AllowedValues")
    if allowed is not None and not (
        isinstance(allowed, list) and all(isinstance(v, str | int | float | bool) for v in allowed)
    ):
        raise TemplateError(
            f"Template format error: AllowedValues of parameter {name} must be a list of values."
        )
    default = body.get("Default")
    if isinstance(default, dict) or (
        isinstance(default, list) and not all(isinstance(v, str | int | float) for v in default)
    ):
        raise TemplateError(f"Template format error: Default of parameter {name} must be a value.")
    return ParameterDecl(
        name=name,
        type=kind,
        default=None if default is None else _as_text(default),
        allowed_values=None if allowed is None else tuple(scalar_text(v) for v in allowed),
        allowed_pattern=_optional_text(body, "AllowedPattern", name),
        min_value=_number(body, "MinValue", name),
        max_value=_number(body, "MaxValue", name),
        min_length=_integer(body, "MinLength", name),
        max_length=_integer(body, "MaxLength", name),
        description=_optional_text(body, "Description", name),
        no_echo=scalar_text(body.get("NoEcho", False)).lower() == "true",
        constraint_description=_optional_text(body, "ConstraintDescription", name),
    )


def _as_text(value: Any) -> str:
    if isinstance(value, list):  # a list type's default may be written as a YAML list
        return ",".join(scalar_text(v) for v in value)
    return scalar_text(value)


def _optional_text(body: dict[str, Any], key: str, name: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, dict | list):
        raise TemplateError(f"Template format error: {key} of parameter {name} must be a string.")
    return scalar_text(value)


def _number(body: dict[str, Any], key: str, name: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    parsed = _parse_number(scalar_text(value))
    if parsed is None:
        raise TemplateError(f"Template format error: {key} of parameter {name} must be a number.")
    return parsed


def _integer(body: dict[str, Any], key: str, name: str) -> int | None:
    value = _number(body, key, name)
    if value is None:
        return None
    if value != int(value) or value < 0:
        raise TemplateError(f"Template format error: {key} of parameter {name} must be a whole number.")
    return int(value)


def _parse_number(text: str) -> float | None:
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


# --- resolving ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resolved:
    values: dict[str, str]
    """Each parameter's value as given (a list type's as its comma-separated text)."""

    def for_template(self, decls: Mapping[str, ParameterDecl]) -> dict[str, Any]:
        """What ``Ref`` of each parameter returns."""
        return {
            name: ([] if text == "" else [item.strip() for item in text.split(",")])
            if decls[name].is_list
            else text
            for name, text in self.values.items()
        }


def resolve(
    decls: Mapping[str, ParameterDecl],
    given: list[ParameterInput],
    previous: Mapping[str, str] | None = None,
) -> Resolved:
    """The value of each declared parameter, or a ValidationError in CloudFormation's words."""
    by_key: dict[str, ParameterInput] = {}
    for given_item in given:
        by_key[given_item.key] = given_item
    unknown = [key for key in by_key if key not in decls]
    if unknown:
        raise ValidationError(f"Parameters: [{', '.join(unknown)}] do not exist in the template")
    values: dict[str, str] = {}
    missing: list[str] = []
    for name, decl in decls.items():
        item = by_key.get(name)
        if item is not None and item.use_previous:
            if previous is None or name not in previous:
                raise ValidationError(
                    f"Invalid input for parameter key {name}. Cannot specify usePreviousValue as true "
                    "for a parameter key not in the previous template"
                )
            values[name] = previous[name]
        elif item is not None and item.value is not None:
            values[name] = item.value
        elif decl.default is not None:
            values[name] = decl.default
        else:
            missing.append(name)
    if missing:
        raise ValidationError(f"Parameters: [{', '.join(missing)}] must have values")
    for name, decl in decls.items():
        check(decl, values[name])
    return Resolved(values)


def check(decl: ParameterDecl, value: str) -> None:
    """A ValidationError unless ``value`` satisfies ``decl``'s type and constraints."""
    items = [item.strip() for item in value.split(",")] if decl.is_list and value else [value]
    if decl.is_list and not value:
        items = []
    for item in items:
        problem = _problem(decl, item)
        if problem is not None:
            if decl.constraint_description:
                raise ValidationError(
                    f"Parameter '{decl.name}' failed to satisfy constraint: {decl.constraint_description}"
                )
            raise ValidationError(problem)


def _problem(decl: ParameterDecl, value: str) -> str | None:
    name = decl.name
    numeric = decl.type in ("Number", "List<Number>")
    if numeric:
        number = _parse_number(value)
        if number is None:
            return f"Parameter '{name}' must be a number."
        if decl.min_value is not None and number < decl.min_value:
            return f"Parameter '{name}' must be a number not less than {_shown_number(decl.min_value)}"
        if decl.max_value is not None and number > decl.max_value:
            return f"Parameter '{name}' must be a number not greater than {_shown_number(decl.max_value)}"
    if decl.allowed_values is not None and not _allowed(value, decl.allowed_values, numeric):
        return f"Parameter '{name}' must be one of AllowedValues"
    if decl.type == "String":
        if decl.min_length is not None and len(value) < decl.min_length:
            return f"Parameter '{name}' must contain at least {decl.min_length} characters"
        if decl.max_length is not None and len(value) > decl.max_length:
            return f"Parameter '{name}' must contain at most {decl.max_length} characters"
    if decl.allowed_pattern is not None:
        try:
            matched = re.fullmatch(decl.allowed_pattern, value) is not None
        except re.error:
            raise TemplateError(
                f"Template format error: AllowedPattern of parameter {name} is not a valid regular expression"
            ) from None
        if not matched:
            return f"Parameter '{name}' must match pattern {decl.allowed_pattern}"
    return None


def _allowed(value: str, allowed: tuple[str, ...], numeric: bool) -> bool:
    if value in allowed:
        return True
    if numeric:  # 2048 matches an AllowedValues entry written 2048.0
        number = _parse_number(value)
        return number is not None and any(_parse_number(a) == number for a in allowed)
    return False


def _shown_number(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


def shown_value(decl: ParameterDecl, value: str) -> str:
    """A value as DescribeStacks shows it: NoEcho parameters masked."""
    return NO_ECHO_MASK if decl.no_echo else value
