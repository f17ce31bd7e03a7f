"""CloudFormation's intrinsic functions: found statically (``references``, ``check_functions``)
and evaluated against a ``Scope`` (``evaluate``, ``evaluate_conditions``). Pure.

Supported: ``Ref``, ``Fn::GetAtt``, ``Fn::Sub`` (both forms), ``Fn::Join``, ``Fn::Select``,
``Fn::Split``, ``Fn::FindInMap``, ``Fn::Base64``, ``Fn::If`` and, in Conditions, ``Fn::Equals``,
``Fn::Not``, ``Fn::And``, ``Fn::Or`` and ``Condition``. Any other function is a TemplateError
naming it. ``AWS::NoValue`` removes the property (or list item) it is the value of.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from coldbrew.stacks.errors import TemplateError

NO_VALUE_NAME = "AWS::NoValue"
PSEUDO_PARAMETERS = frozenset(
    {
        "AWS::AccountId",
        "AWS::NotificationARNs",
        NO_VALUE_NAME,
        "AWS::Partition",
        "AWS::Region",
        "AWS::StackId",
        "AWS::StackName",
        "AWS::URLSuffix",
    }
)
VALUE_FUNCTIONS = frozenset(
    {
        "Ref",
        "Fn::GetAtt",
        "Fn::Sub",
        "Fn::Join",
        "Fn::Select",
        "Fn::Split",
        "Fn::FindInMap",
        "Fn::Base64",
        "Fn::If",
    }
)
CONDITION_FUNCTIONS = frozenset({"Fn::Equals", "Fn::Not", "Fn::And", "Fn::Or", "Condition"})
_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")


class _NoValue:
    """``AWS::NoValue``: the value that removes what it is assigned to."""

    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE: Any = _NoValue()


@dataclass(frozen=True)
class Reference:
    """A name a template refers to: a parameter, a pseudo parameter or a resource (with
    ``attribute`` for ``Fn::GetAtt`` and ``${Name.Attribute}``)."""

    name: str
    attribute: str | None = None


@dataclass(frozen=True)
class Scope:
    """What an evaluation may read. ``resource_ref`` / ``resource_attribute`` answer for
    resources (a plan passes placeholders for values not known yet)."""

    parameters: Mapping[str, Any]
    pseudo: Mapping[str, Any]
    mappings: Mapping[str, Any] = field(default_factory=dict)
    conditions: Mapping[str, bool] = field(default_factory=dict)
    resource_ref: Callable[[str], Any] = lambda name: _unknown_resource(name)
    resource_attribute: Callable[[str, str], Any] = lambda name, attribute: _unknown_resource(name)


def _unknown_resource(name: str) -> Any:
    raise TemplateError(f"Template format error: Unresolved resource dependencies [{name}] in the template")


def function_of(node: Any, condition_context: bool = False) -> str | None:
    """The intrinsic function ``node`` calls, if it is a one-key map naming one."""
    if not isinstance(node, dict) or len(node) != 1:
        return None
    key = next(iter(node))
    if key == "Ref" or (isinstance(key, str) and key.startswith("Fn::")):
        return key
    if key == "Condition" and condition_context:
        return key
    return None


# --- static analysis --------------------------------------------------------------------------


def _walk(node: Any, path: str, condition_context: bool) -> Iterator[tuple[str, str, Any]]:
    """Every (function, path, argument) under ``node``."""
    name = function_of(node, condition_context)
    if name is not None:
        argument = node[name]
        yield name, path, argument
        yield from _walk(argument, f"{path}/{name}", condition_context)
        return
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, f"{path}/{key}", condition_context)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, f"{path}/{index}", condition_context)


def check_functions(node: Any, path: str, *, conditions: bool = False) -> None:
    """A TemplateError naming the first function coldbrew does not evaluate here."""
    allowed = CONDITION_FUNCTIONS | {"Ref", "Fn::FindInMap"} if conditions else VALUE_FUNCTIONS
    for name, where, _ in _walk(node, path, conditions):
        if name not in VALUE_FUNCTIONS | CONDITION_FUNCTIONS:
            raise TemplateError(
                f"Template format error: Encountered unsupported function: {name} at {where}. "
                f"coldbrew supports {', '.join(sorted(VALUE_FUNCTIONS | CONDITION_FUNCTIONS))}."
            )
        if name not in allowed:
            section = "the Conditions section" if conditions else "resource properties and outputs"
            hint = " (use it in Conditions, then Fn::If)" if name in CONDITION_FUNCTIONS else ""
            raise TemplateError(f"Template error: {name} cannot be used in {section}{hint}, at {where}.")


def references(node: Any) -> list[Reference]:
    """The names ``node`` refers to through Ref, Fn::GetAtt and Fn::Sub (pseudo parameters and a
    Sub's own variables left out)."""
    found: list[Reference] = []
    for name, _, argument in _walk(node, "", False):
        if name == "Ref" and isinstance(argument, str):
            found.append(Reference(argument))
        elif name == "Fn::GetAtt":
            parts = _getatt_parts(argument)
            if parts is not None:
                found.append(Reference(parts[0], parts[1]))
        elif name == "Fn::Sub":
            text, variables = (argument, {}) if isinstance(argument, str) else _sub_parts(argument)
            if isinstance(text, str):
                for variable in _sub_variables(text):
                    head, _, attribute = variable.partition(".")
                    if variable not in variables and head not in variables:
                        found.append(Reference(head, attribute or None))
    return [r for r in found if r.name not in PSEUDO_PARAMETERS]


def _getatt_parts(argument: Any) -> tuple[str, str] | None:
    if isinstance(argument, str) and "." in argument:
        name, _, attribute = argument.partition(".")
        return name, attribute
    if isinstance(argument, list) and len(argument) == 2 and all(isinstance(part, str) for part in argument):
        return argument[0], argument[1]
    return None


def _sub_parts(argument: Any) -> tuple[Any, dict[str, Any]]:
    if isinstance(argument, list) and len(argument) == 2 and isinstance(argument[1], dict):
        return argument[0], argument[1]
    return None, {}


def _sub_variables(text: str) -> list[str]:
    return [m.group(1).strip() for m in _SUB_VARIABLE.finditer(text) if not m.group(1).startswith("!")]


# --- evaluation -------------------------------------------------------------------------------


def evaluate(node: Any, scope: Scope, path: str) -> Any:
    """``node`` with every intrinsic function replaced by its value; ``AWS::NoValue`` removes
    map members and list items (the top level may be NO_VALUE)."""
    name = function_of(node)
    if name is not None:
        return _call(name, node[name], scope, path)
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            result = evaluate(value, scope, f"{path}/{key}")
            if result is not NO_VALUE:
                out[key] = result
        return out
    if isinstance(node, list):
        items = [evaluate(value, scope, f"{path}/{index}") for index, value in enumerate(node)]
        return [item for item in items if item is not NO_VALUE]
    return node


def _call(name: str, argument: Any, scope: Scope, path: str) -> Any:
    where = f"{path}/{name}"
    if name == "Ref":
        return _ref(argument, scope, where)
    if name == "Fn::GetAtt":
        parts = _getatt_parts(evaluate(argument, scope, where))
        if parts is None:
            raise TemplateError(
                f"Template error: every Fn::GetAtt object requires two non-empty parameters, at {where}"
            )
        return scope.resource_attribute(*parts)
    if name == "Fn::Sub":
        return _sub(argument, scope, where)
    if name == "Fn::Join":
        if not (isinstance(argument, list) and len(argument) == 2 and isinstance(argument[0], str)):
            raise TemplateError(f"Template error: Fn::Join requires [delimiter, [values]], at {where}")
        values = evaluate(argument[1], scope, where)
        if not isinstance(values, list):
            raise TemplateError(f"Template error: the second argument of Fn::Join must be a list, at {where}")
        return argument[0].join(_text(value, where) for value in values)
    if name == "Fn::Select":
        return _select(argument, scope, where)
    if name == "Fn::Split":
        if not (isinstance(argument, list) and len(argument) == 2 and isinstance(argument[0], str)):
            raise TemplateError(f"Template error: Fn::Split requires [delimiter, string], at {where}")
        if not argument[0]:
            raise TemplateError(f"Template error: the delimiter of Fn::Split must not be empty, at {where}")
        return _text(evaluate(argument[1], scope, where), where).split(argument[0])
    if name == "Fn::FindInMap":
        return _find_in_map(argument, scope, where)
    if name == "Fn::Base64":
        return base64.b64encode(_text(evaluate(argument, scope, where), where).encode()).decode()
    if name == "Fn::If":
        if not (isinstance(argument, list) and len(argument) == 3 and isinstance(argument[0], str)):
            raise TemplateError(
                f"Template error: Fn::If requires [condition name, value if true, value if false], at {where}"
            )
        if argument[0] not in scope.conditions:
            raise TemplateError(
                f"Template error: unresolved condition dependency {argument[0]} in Fn::If, at {where}"
            )
        chosen = argument[1] if scope.conditions[argument[0]] else argument[2]
        return evaluate(chosen, scope, where)
    raise TemplateError(f"Template format error: Encountered unsupported function: {name} at {where}")


def _ref(argument: Any, scope: Scope, where: str) -> Any:
    if not isinstance(argument, str):
        raise TemplateError(
            f"Template format error: Every Ref object must have a single String value, at {where}"
        )
    if argument == NO_VALUE_NAME:
        return NO_VALUE
    if argument in scope.pseudo:
        return scope.pseudo[argument]
    if argument in scope.parameters:
        return scope.parameters[argument]
    return scope.resource_ref(argument)


def _sub(argument: Any, scope: Scope, where: str) -> str:
    if isinstance(argument, str):
        text, variables = argument, {}
    else:
        text, raw = _sub_parts(argument)
        if not isinstance(text, str):
            raise TemplateError(
                f"Template error: Fn::Sub requires a string or [string, {{variables}}], at {where}"
            )
        variables = {key: evaluate(value, scope, f"{where}/{key}") for key, value in raw.items()}

    def replace(match: re.Match[str]) -> str:
        inner = match.group(1)
        if inner.startswith("!"):
            return "${" + inner[1:] + "}"  # ${!Literal} is the literal ${Literal}
        variable = inner.strip()
        if variable in variables:
            return _text(variables[variable], where)
        if "." in variable and variable not in scope.pseudo:
            head, _, attribute = variable.partition(".")
            return _text(scope.resource_attribute(head, attribute), where)
        return _text(_ref(variable, scope, where), where)

    return _SUB_VARIABLE.sub(replace, text)


def _select(argument: Any, scope: Scope, where: str) -> Any:
    if not (isinstance(argument, list) and len(argument) == 2):
        raise TemplateError(f"Template error: Fn::Select requires [index, [values]], at {where}")
    index_value = evaluate(argument[0], scope, where)
    values = evaluate(argument[1], scope, where)
    try:
        index = int(str(index_value))
    except ValueError:
        raise TemplateError(f"Template error: Fn::Select index must be a number, at {where}") from None
    if not isinstance(values, list):
        raise TemplateError(f"Template error: the second argument of Fn::Select must be a list, at {where}")
    if not 0 <= index < len(values):
        raise TemplateError(
            f"Template error: Fn::Select cannot select nonexistent value at index {index}, at {where}"
        )
    return values[index]


def _find_in_map(argument: Any, scope: Scope, where: str) -> Any:
    if not (isinstance(argument, list) and len(argument) == 3):
        raise TemplateError(
            f"Template error: Fn::FindInMap requires [map, top-level key, second-level key], at {where}"
        )
    keys = [_text(evaluate(part, scope, where), where) for part in argument]
    found: Any = scope.mappings
    for key in keys:
        if not isinstance(found, dict) or key not in found:
            raise TemplateError(f"Template error: Unable to get mapping for {'::'.join(keys)}, at {where}")
        found = found[key]
    return found


def _text(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise TemplateError(f"Template error: expected a string, found {type(value).__name__}, at {where}")


def scalar_text(value: Any) -> str:
    """A scalar as CloudFormation compares and substitutes it (YAML's true is "true")."""
    return _text(value, "")


# --- conditions ---------------------------------------------------------------------------------


def evaluate_conditions(declared: Mapping[str, Any], scope: Scope) -> dict[str, bool]:
    """Each condition of the Conditions section, true or false (a cycle is a TemplateError)."""
    results: dict[str, bool] = {}
    visiting: set[str] = set()

    def condition(name: str, where: str) -> bool:
        if name in results:
            return results[name]
        if name not in declared:
            raise TemplateError(f"Template format error: Unresolved condition dependency {name}, at {where}")
        if name in visiting:
            raise TemplateError(f"Template format error: Circular dependency between conditions: {name}")
        visiting.add(name)
        results[name] = truth(declared[name], f"Conditions/{name}")
        visiting.discard(name)
        return results[name]

    def truth(node: Any, where: str) -> bool:
        fn = function_of(node, condition_context=True)
        if fn == "Condition":
            return condition(_text(node[fn], where), where)
        if fn == "Fn::Equals":
            args = node[fn]
            if not (isinstance(args, list) and len(args) == 2):
                raise TemplateError(f"Template error: Fn::Equals requires two values, at {where}")
            left, right = (_comparable(value(arg, f"{where}/Fn::Equals"), where) for arg in args)
            return left == right
        if fn == "Fn::Not":
            args = node[fn]
            if not (isinstance(args, list) and len(args) == 1):
                raise TemplateError(f"Template error: Fn::Not requires a list of one condition, at {where}")
            return not truth(args[0], f"{where}/Fn::Not")
        if fn in ("Fn::And", "Fn::Or"):
            args = node[fn]
            if not (isinstance(args, list) and 2 <= len(args) <= 10):
                raise TemplateError(f"Template error: {fn} requires a list of 2 to 10 conditions, at {where}")
            values = [truth(arg, f"{where}/{fn}/{i}") for i, arg in enumerate(args)]
            return all(values) if fn == "Fn::And" else any(values)
        if isinstance(node, bool):
            return node
        if isinstance(node, str) and node.lower() in ("true", "false"):
            return node.lower() == "true"
        raise TemplateError(
            "Template error: a condition must be Fn::Equals, Fn::Not, Fn::And, Fn::Or or Condition, at "
            f"{where}"
        )

    def value(node: Any, where: str) -> Any:
        fn = function_of(node, condition_context=True)
        if fn in ("Ref", "Fn::FindInMap"):
            return _call(fn, node[fn], scope, where)
        if fn is not None:
            raise TemplateError(f"Template error: {fn} cannot be compared by Fn::Equals, at {where}")
        return node

    for name in declared:
        condition(name, f"Conditions/{name}")
    return results


def _comparable(value: Any, where: str) -> Any:
    if isinstance(value, list):
        return [scalar_text(item) for item in value]
    return _text(value, where)
