"""An endpoint's configuration as the pages show it: variants in one line, secrets masked.

A model's ``Environment`` often carries credentials and tokens (that is how SageMaker users hand
them to a container), so its values are never sent to a browser: names are shown, values are
replaced whatever they are. Nothing else in a deployment snapshot holds a secret.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

MASK = "********"


@dataclass(frozen=True, slots=True)
class VariantLine:
    name: str
    model_name: str
    serverless: bool
    weight: float
    memory_mb: int | None = None
    max_concurrency: int | None = None
    provisioned_concurrency: int | None = None
    instance_type: str | None = None
    instance_count: int | None = None

    @property
    def label(self) -> str:
        if self.serverless:
            text = f"{self.name}: {self.memory_mb} MB x{self.max_concurrency}"
            return text + (
                f" ({self.provisioned_concurrency} provisioned)" if self.provisioned_concurrency else ""
            )
        return f"{self.name}: {self.instance_count} x {self.instance_type}"


def variant_lines(deployment: dict[str, Any], summaries: list[dict[str, Any]] | None) -> list[VariantLine]:
    """Each variant as configured, with the capacities UpdateEndpointWeightsAndCapacities set
    (``summaries``' Desired*) over the config's."""
    by_name = {s.get("VariantName"): s for s in summaries or []}
    lines = []
    for variant in deployment.get("Config", {}).get("ProductionVariants", []):
        summary = by_name.get(variant["VariantName"], {})
        weight = float(summary.get("DesiredWeight", variant.get("InitialVariantWeight", 1.0)))
        serverless = summary.get("DesiredServerlessConfig") or variant.get("ServerlessConfig")
        if serverless:
            lines.append(
                VariantLine(
                    variant["VariantName"],
                    variant.get("ModelName", ""),
                    True,
                    weight,
                    memory_mb=int(serverless["MemorySizeInMB"]),
                    max_concurrency=int(serverless["MaxConcurrency"]),
                    provisioned_concurrency=int(serverless.get("ProvisionedConcurrency", 0)),
                )
            )
        else:
            lines.append(
                VariantLine(
                    variant["VariantName"],
                    variant.get("ModelName", ""),
                    False,
                    weight,
                    instance_type=variant.get("InstanceType"),
                    instance_count=int(
                        summary.get("DesiredInstanceCount", variant.get("InitialInstanceCount", 1))
                    ),
                )
            )
    return lines


def masked_deployment(deployment: dict[str, Any]) -> dict[str, Any]:
    """The deployment snapshot with every container Environment value replaced by a mask."""
    out = copy.deepcopy(deployment)
    for model in (out.get("Models") or {}).values():
        containers = [model.get("PrimaryContainer")] + list(model.get("Containers") or [])
        for container in containers:
            if isinstance(container, dict) and isinstance(container.get("Environment"), dict):
                container["Environment"] = {name: MASK for name in container["Environment"]}
    return out


def is_async(deployment: dict[str, Any]) -> bool:
    return bool(deployment.get("Config", {}).get("AsyncInferenceConfig"))


def model_names(deployment: dict[str, Any]) -> list[str]:
    return [v.get("ModelName", "") for v in deployment.get("Config", {}).get("ProductionVariants", [])]
