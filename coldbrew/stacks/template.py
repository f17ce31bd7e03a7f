"""A CloudFormation template: parsed from JSON or YAML (short forms such as ``!Ref`` and ``!If``
through cfn-flip), checked, and held as dataclasses. Pure.

What a template may hold: AWSTemplateFormatVersion, Description, Metadata, Parameters, Mappings,
Conditions, Resources (of the types in ``catalog``) and Outputs (Export accepted). Transform and
Rules are refused by name, as is any other resource type.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from coldbrew.stacks.catalog import TYPES
from coldbrew.stacks.errors import TemplateError, ValidationError
from coldbrew.stacks.intrinsics import PSEUDO_PARAMETERS, check_functions, function_of, references
from coldbrew.stacks.parameters import ParameterDecl, parse_declarations

MAX_BODY_BYTES = 51_200
"""CloudFormation's limit on a TemplateBody."""
MAX_NODES = 200_000
"""More values than a 51,200-byte template can hold without YAML aliases (which can make a small
document expand exponentially)."""
MAX_DEPTH = 100
MAX_RESOURCES = 500
MAX_OUTPUTS = 200
VERSION = "2010-09-09"
_SECTIONS = frozenset(
    {
        "AWSTemplateFormatVersion",
        "Description",
        "Metadata",
        "Parameters",
        "Mappings",
        "Conditions",
        "Resources",
        "Outputs",
        "Transform",
        "Rules",
    }
)
_RESOURCE_KEYS = frozenset(
    {
        "Type",
        "Properties",
        "DependsOn",
        "Condition",
        "DeletionPolicy",
        "UpdateReplacePolicy",
        "Metadata",
        "CreationPolicy",
        "UpdatePolicy",
    }
)
_POLICIES = ("Delete", "Retain")


@dataclass(frozen=True)
class ResourceDecl:
    logical_id: str
    type: str
    properties: dict[str, Any]
    depends_on: tuple[str, ...] = ()
    condition: str | None = None
    deletion_policy: str = "Delete"
    update_replace_policy: str = "Delete"


@dataclass(frozen=True)
class OutputDecl:
    name: str
    value: Any
    description: str | None = None
    condition: str | None = None
    export_name: Any = None


@dataclass(frozen=True)
class Template:
    body: str
    description: str | None
    parameters: dict[str, ParameterDecl]
    mappings: dict[str, Any]
    conditions: dict[str, Any]
    resources: dict[str, ResourceDecl]
    outputs: dict[str, OutputDecl]

    def dependencies(self, logical_id: str) -> set[str]:
        """The resources ``logical_id`` needs first: its DependsOn, and what its properties refer to."""
        resource = self.resources[logical_id]
        found = {r.name for r in references(resource.properties) if r.name in self.resources}
        return found | set(resource.depends_on)


def load_document(body: str) -> Any:
    """The template's document: JSON, or YAML with CloudFormation's short forms turned into their
    long forms (``!GetAtt A.B`` is ``{"Fn::GetAtt": ["A", "B"]}``)."""
    import cfn_flip
    from cfn_tools import load_json, load_yaml

    if len(body.encode()) > MAX_BODY_BYTES:
        raise ValidationError(
            f"1 validation error detected: Value at 'templateBody' failed to satisfy constraint: Member "
            f"must have length less than or equal to {MAX_BODY_BYTES}"
        )
    try:
        document, _ = cfn_flip.load(body)
    except Exception:
        # cfn_flip reports the JSON error whatever the format: say what is wrong in the one used.
        try:
            (load_json if body.lstrip().startswith("{") else load_yaml)(body)
            raise TemplateError("Template format error: the template is neither JSON nor YAML") from None
        except TemplateError:
            raise
        except Exception as exc:
            kind = "JSON" if body.lstrip().startswith("{") else "YAML"
            detail = " ".join(str(exc).split())[:300]
            raise TemplateError(f"Template format error: {kind} not well-formed. ({detail})") from None
    return _plain(document, [0], 0)


def _plain(node: Any, count: list[int], depth: int) -> Any:
    """Plain dicts and lists (cfn-flip gives ordered dicts), dates as text, size and depth bounded."""
    count[0] += 1
    if count[0] > MAX_NODES:
        raise TemplateError(f"Template format error: the template has more than {MAX_NODES:,} values.")
    if depth > MAX_DEPTH:
        raise TemplateError(f"Template format error: the template nests values more than {MAX_DEPTH} deep.")
    if isinstance(node, dict):
        return {
            str(key) if not isinstance(key, str) else key: _plain(value, count, depth + 1)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_plain(value, count, depth + 1) for value in node]
    if isinstance(node, datetime.date):
        return node.isoformat()
    return node


def parse_template(body: str) -> Template:
    """The template in ``body``, or a TemplateError / ValidationError saying what to change."""
    document = load_document(body)
    if not isinstance(document, dict):
        raise TemplateError("Template format error: a template must be a JSON or YAML map of sections.")
    unknown = sorted(set(document) - _SECTIONS)
    if unknown:
        raise TemplateError(
            f"Template format error: Invalid template property or properties [{', '.join(unknown)}]"
        )
    if "Transform" in document:
        raise TemplateError(
            f"Template format error: coldbrew does not process Transform ({_brief(document['Transform'])}); "
            "expand the template first (for AWS::Serverless, sam build / sam package)."
        )
    if "Rules" in document:
        raise TemplateError(
            "Template format error: coldbrew does not evaluate Rules; remove the Rules section."
        )
    version = document.get("AWSTemplateFormatVersion")
    if version is not None and str(version) != VERSION:
        raise TemplateError(
            f"Template format error: Unsupported template version {version}; the version is {VERSION}."
        )
    description = document.get("Description")
    if description is not None and not isinstance(description, str):
        raise TemplateError("Template format error: Description must be a string.")
    parameters = parse_declarations(document.get("Parameters"))
    mappings = _mappings(document.get("Mappings"))
    conditions = _section(document, "Conditions")
    resources = _resources(document.get("Resources"))
    outputs = _outputs(document.get("Outputs"))
    template = Template(body, description, parameters, mappings, conditions, resources, outputs)
    _check(template)
    return template


def _brief(value: Any) -> str:
    text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
    return text[:100]


def _section(document: dict[str, Any], name: str) -> dict[str, Any]:
    section = document.get(name)
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise TemplateError(f"Template format error: {name} must be a map.")
    return section


def _mappings(section: Any) -> dict[str, Any]:
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise TemplateError("Template format error: Mappings must be a map.")
    for name, mapping in section.items():
        if not isinstance(mapping, dict) or not all(isinstance(level, dict) for level in mapping.values()):
            raise TemplateError(f"Template format error: Mapping {name} must be a map of maps of values.")
    return section


def _resources(section: Any) -> dict[str, ResourceDecl]:
    if not isinstance(section, dict) or not section:
        raise TemplateError("Template format error: At least one Resources member must be defined.")
    if len(section) > MAX_RESOURCES:
        raise TemplateError(f"Template format error: a template has at most {MAX_RESOURCES} resources.")
    unsupported = sorted(
        {
            str(body.get("Type"))
            for body in section.values()
            if isinstance(body, dict)
            and "Type" in body
            and not (isinstance(body["Type"], str) and body["Type"] in TYPES)
        }
    )
    if unsupported:
        raise TemplateError(
            f"Template format error: Unrecognized resource types: [{', '.join(unsupported)}]. coldbrew's "
            f"stacks hold {', '.join(sorted(TYPES))}."
        )
    return {logical_id: _resource(logical_id, body) for logical_id, body in section.items()}


def _resource(logical_id: Any, body: Any) -> ResourceDecl:
    if not isinstance(logical_id, str) or not logical_id.isalnum() or not logical_id.isascii():
        raise TemplateError(f"Template format error: Resource name {logical_id} is non alphanumeric.")
    if not isinstance(body, dict) or "Type" not in body:
        raise TemplateError(
            f"Template format error: [/Resources/{logical_id}] Every Resources object must contain a Type "
            "member."
        )
    unknown = sorted(set(body) - _RESOURCE_KEYS)
    if unknown:
        raise TemplateError(
            f"Template format error: Invalid template resource property '{unknown[0]}' in {logical_id}"
        )
    properties = body.get("Properties", {})
    if not isinstance(properties, dict):
        raise TemplateError(f"Template format error: Properties of {logical_id} must be a map.")
    depends = body.get("DependsOn", [])
    depends_on = [depends] if isinstance(depends, str) else depends
    if not isinstance(depends_on, list) or not all(isinstance(d, str) for d in depends_on):
        raise TemplateError(
            f"Template format error: DependsOn of {logical_id} must be a name or a list of names."
        )
    condition = body.get("Condition")
    if condition is not None and not isinstance(condition, str):
        raise TemplateError(f"Template format error: Condition of {logical_id} must be a condition's name.")
    policies = {}
    for key in ("DeletionPolicy", "UpdateReplacePolicy"):
        policy = body.get(key, "Delete")
        if policy not in _POLICIES:
            raise TemplateError(
                f"Template format error: {key} of {logical_id} is {_brief(policy)}; "
                "coldbrew takes Delete or Retain."
            )
        policies[key] = policy
    return ResourceDecl(
        logical_id,
        body["Type"],
        properties,
        tuple(depends_on),
        condition,
        policies["DeletionPolicy"],
        policies["UpdateReplacePolicy"],
    )


def _outputs(section: Any) -> dict[str, OutputDecl]:
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise TemplateError("Template format error: Outputs must be a map.")
    if len(section) > MAX_OUTPUTS:
        raise TemplateError(f"Template format error: a template has at most {MAX_OUTPUTS} outputs.")
    outputs = {}
    for name, body in section.items():
        if not isinstance(name, str) or not name.isalnum():
            raise TemplateError(f"Template format error: Output name {name} is non alphanumeric.")
        if not isinstance(body, dict) or "Value" not in body:
            raise TemplateError(
                f"Template format error: Every Outputs member must contain a Value object ({name})."
            )
        export = body.get("Export")
        if export is not None and not (isinstance(export, dict) and "Name" in export):
            raise TemplateError(f"Template format error: Export of output {name} must be a map with a Name.")
        condition = body.get("Condition")
        if condition is not None and not isinstance(condition, str):
            raise TemplateError(
                f"Template format error: Condition of output {name} must be a condition's name."
            )
        description = body.get("Description")
        outputs[name] = OutputDecl(
            name,
            body["Value"],
            None if description is None else str(description),
            condition,
            None if export is None else export["Name"],
        )
    return outputs


# --- references -----------------------------------------------------------------------------------


def _check(template: Template) -> None:
    """Every function supported, every name referred to declared, no dependency cycle."""
    names = set(template.parameters) | PSEUDO_PARAMETERS
    for name, body in template.conditions.items():
        check_functions(body, f"Conditions/{name}", conditions=True)
        for ref in references(body):
            if ref.name in template.resources:
                raise TemplateError(
                    f"Template format error: Unresolved dependencies [{ref.name}]. Cannot reference "
                    "resources "
                    "in the Conditions block of the template"
                )
            if ref.name not in names:
                raise TemplateError(
                    f"Template format error: Unresolved dependencies [{ref.name}] in Conditions/{name}"
                )
    for logical_id, resource in template.resources.items():
        where = f"Resources/{logical_id}/Properties"
        check_functions(resource.properties, where)
        _check_refs(template, resource.properties, where, names)
        _check_if_conditions(template, resource.properties, where)
        missing = [d for d in resource.depends_on if d not in template.resources]
        if missing:
            raise TemplateError(
                f"Template format error: Unresolved resource dependencies [{', '.join(missing)}] in the "
                "Resources block of the template"
            )
        if resource.condition is not None and resource.condition not in template.conditions:
            raise TemplateError(
                f"Template format error: Unresolved condition dependency {resource.condition} in "
                f"Resources/{logical_id}"
            )
    for name, output in template.outputs.items():
        where = f"Outputs/{name}"
        check_functions(output.value, f"{where}/Value")
        _check_refs(template, output.value, f"{where}/Value", names)
        _check_if_conditions(template, output.value, f"{where}/Value")
        if output.export_name is not None:
            check_functions(output.export_name, f"{where}/Export/Name")
            _check_refs(template, output.export_name, f"{where}/Export/Name", names)
        if output.condition is not None and output.condition not in template.conditions:
            raise TemplateError(
                f"Template format error: Unresolved condition dependency {output.condition} in {where}"
            )
    _check_cycles(template)


def _check_refs(template: Template, node: Any, where: str, names: set[str]) -> None:
    for ref in references(node):
        if ref.attribute is None:
            if ref.name not in names and ref.name not in template.resources:
                raise TemplateError(
                    f"Template format error: Unresolved resource dependencies [{ref.name}] in the Resources "
                    "block "
                    f"of the template ({where})"
                )
            continue
        resource = template.resources.get(ref.name)
        if resource is None:
            raise TemplateError(
                f"Template error: instance of Fn::GetAtt references undefined resource {ref.name} ({where})"
            )
        if ref.attribute not in TYPES[resource.type].attributes:
            attributes = ", ".join(sorted(TYPES[resource.type].attributes))
            raise TemplateError(
                f"Template error: resource {ref.name} does not support attribute type {ref.attribute} in "
                f"Fn::GetAtt ({where}); {resource.type} has {attributes}"
            )


def _check_if_conditions(template: Template, node: Any, where: str) -> None:
    stack = [node]
    while stack:
        item = stack.pop()
        fn = function_of(item)
        if fn == "Fn::If":
            argument = item[fn]
            if isinstance(argument, list) and argument and isinstance(argument[0], str):
                if argument[0] not in template.conditions:
                    raise TemplateError(
                        f"Template format error: Unresolved condition dependency {argument[0]} in Fn::If "
                        f"({where})"
                    )
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _check_cycles(template: Template) -> None:
    order(template, list(template.resources))


def order(template: Template, logical_ids: list[str]) -> list[str]:
    """``logical_ids`` so that each comes after what it depends on (template order otherwise);
    a cycle is a TemplateError naming its resources."""
    chosen = set(logical_ids)
    result: list[str] = []
    state: dict[str, int] = {}

    def visit(logical_id: str, path: list[str]) -> None:
        if state.get(logical_id) == 2:
            return
        if state.get(logical_id) == 1:
            cycle = path[path.index(logical_id) :]
            raise TemplateError(f"Circular dependency between resources: [{', '.join(cycle)}]")
        state[logical_id] = 1
        for dependency in sorted(template.dependencies(logical_id), key=list(template.resources).index):
            if dependency in chosen:
                visit(dependency, [*path, dependency])
        state[logical_id] = 2
        result.append(logical_id)

    for logical_id in logical_ids:
        visit(logical_id, [logical_id])
    return result
