"""One template evaluated for one stack: its parameters' values, the pseudo parameters, the
conditions, which resources exist (their Condition holds), their properties and the outputs.
Pure: what resources' Ref and Fn::GetAtt return comes from a ``Lookup`` the caller passes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from coldbrew.stacks.errors import TemplateError
from coldbrew.stacks.intrinsics import NO_VALUE, Scope, evaluate, evaluate_conditions, scalar_text
from coldbrew.stacks.parameters import Resolved
from coldbrew.stacks.template import Template, order


@dataclass(frozen=True)
class StackIdentity:
    """What the pseudo parameters say about the stack."""

    name: str
    stack_id: str
    region: str
    account: str
    notification_arns: tuple[str, ...] = ()

    @property
    def partition(self) -> str:
        if self.region.startswith("cn-"):
            return "aws-cn"
        if self.region.startswith("us-gov-"):
            return "aws-us-gov"
        return "aws"

    def pseudo(self) -> dict[str, Any]:
        return {
            "AWS::AccountId": self.account,
            "AWS::NotificationARNs": list(self.notification_arns),
            "AWS::Partition": self.partition,
            "AWS::Region": self.region,
            "AWS::StackId": self.stack_id,
            "AWS::StackName": self.name,
            "AWS::URLSuffix": "amazonaws.com.cn" if self.partition == "aws-cn" else "amazonaws.com",
        }


@dataclass(frozen=True)
class Lookup:
    """What a resource's ``Ref`` (``ref``) and ``Fn::GetAtt`` (``attribute``) return."""

    ref: Callable[[str], Any]
    attribute: Callable[[str, str], Any]


@dataclass(frozen=True)
class Output:
    key: str
    value: str
    description: str | None
    export_name: str | None


@dataclass(frozen=True)
class Evaluation:
    template: Template
    parameters: dict[str, Any]
    identity: StackIdentity
    conditions: dict[str, bool]

    def _scope(self, lookup: Lookup | None) -> Scope:
        def ref(name: str) -> Any:
            self._require_active(name)
            if lookup is None:
                raise TemplateError(f"Template error: {name} is a resource, which cannot be referred to here")
            return lookup.ref(name)

        def attribute(name: str, attr: str) -> Any:
            self._require_active(name)
            if lookup is None:
                raise TemplateError(f"Template error: {name} is a resource, which cannot be referred to here")
            return lookup.attribute(name, attr)

        return Scope(
            self.parameters, self.identity.pseudo(), self.template.mappings, self.conditions, ref, attribute
        )

    def _require_active(self, name: str) -> None:
        resource = self.template.resources.get(name)
        if resource is None:
            raise TemplateError(
                f"Template format error: Unresolved resource dependencies [{name}] in the template"
            )
        if resource.condition is not None and not self.conditions[resource.condition]:
            raise TemplateError(
                f"Template error: {name} is not created (its condition {resource.condition} is false) but is "
                "referred to by a resource or output that is"
            )

    def active(self) -> list[str]:
        """The resources this evaluation creates, each after those it depends on."""
        chosen = [
            logical_id
            for logical_id, resource in self.template.resources.items()
            if resource.condition is None or self.conditions[resource.condition]
        ]
        return order(self.template, chosen)

    def properties(self, logical_id: str, lookup: Lookup) -> dict[str, Any]:
        resource = self.template.resources[logical_id]
        value = evaluate(resource.properties, self._scope(lookup), f"Resources/{logical_id}/Properties")
        return value if isinstance(value, dict) else {}

    def outputs(self, lookup: Lookup) -> list[Output]:
        results = []
        for name, output in self.template.outputs.items():
            if output.condition is not None and not self.conditions[output.condition]:
                continue
            scope = self._scope(lookup)
            value = evaluate(output.value, scope, f"Outputs/{name}/Value")
            if value is NO_VALUE:
                continue
            export = None
            if output.export_name is not None:
                export = _output_text(evaluate(output.export_name, scope, f"Outputs/{name}/Export/Name"))
            results.append(Output(name, _output_text(value), output.description, export))
        return results


def _output_text(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(scalar_text(item) for item in value)
    if isinstance(value, dict):
        raise TemplateError("Template error: an output's value must be a string or a list of strings")
    return scalar_text(value)


def evaluate_template(template: Template, resolved: Resolved, identity: StackIdentity) -> Evaluation:
    parameters = resolved.for_template(template.parameters)
    scope = Scope(parameters, identity.pseudo(), template.mappings)
    conditions = evaluate_conditions(template.conditions, scope)
    return Evaluation(template, parameters, identity, conditions)
