"""What an endpoint deploys: a snapshot of its endpoint config and the models it names.

The snapshot is taken when CreateEndpoint or UpdateEndpoint is accepted, as SageMaker does: deleting
or recreating the config or a model afterwards does not change a running endpoint, and a restart
brings back exactly what was deployed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class VariantSpec:
    """One production variant with the model it serves."""

    name: str
    model_name: str
    model: dict[str, Any]
    weight: float
    serverless: dict[str, Any] | None
    instance_type: str | None
    instance_count: int | None

    @property
    def is_serverless(self) -> bool:
        return self.serverless is not None

    @property
    def container(self) -> dict[str, Any]:
        """The model's single container definition (PrimaryContainer or the only one of Containers)."""
        primary = self.model.get("PrimaryContainer")
        if primary is not None:
            return dict(primary)
        containers = self.model.get("Containers") or [{}]
        return dict(containers[0])


@dataclass(frozen=True)
class Deployment:
    config_name: str
    config: dict[str, Any]
    models: dict[str, dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {"ConfigName": self.config_name, "Config": self.config, "Models": self.models}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Deployment:
        return cls(config_name=data["ConfigName"], config=data["Config"], models=data["Models"])

    @property
    def variants(self) -> list[VariantSpec]:
        result = []
        for variant in self.config["ProductionVariants"]:
            result.append(
                VariantSpec(
                    name=variant["VariantName"],
                    model_name=variant["ModelName"],
                    model=self.models[variant["ModelName"].lower()],
                    weight=float(variant.get("InitialVariantWeight", 1.0)),
                    serverless=variant.get("ServerlessConfig"),
                    instance_type=variant.get("InstanceType"),
                    instance_count=variant.get("InitialInstanceCount"),
                )
            )
        return result


def variant_summaries(deployment: Deployment, current: bool) -> list[dict[str, Any]]:
    """ProductionVariantSummary shapes for DescribeEndpoint; ``current`` once the variants run."""
    summaries = []
    for variant in deployment.variants:
        summary: dict[str, Any] = {"VariantName": variant.name, "DesiredWeight": variant.weight}
        image = variant.container.get("Image")
        if image:
            summary["DeployedImages"] = [{"SpecifiedImage": image, "ResolvedImage": image}]
        if variant.serverless is not None:
            summary["DesiredServerlessConfig"] = dict(variant.serverless)
        else:
            summary["DesiredInstanceCount"] = variant.instance_count
        if current:
            mark_current(summary)
        summaries.append(summary)
    return summaries


def mark_current(summary: dict[str, Any]) -> None:
    """The variant now runs as desired: copy Desired* into Current*."""
    summary["CurrentWeight"] = summary["DesiredWeight"]
    if "DesiredServerlessConfig" in summary:
        summary["CurrentServerlessConfig"] = dict(summary["DesiredServerlessConfig"])
    if "DesiredInstanceCount" in summary:
        summary["CurrentInstanceCount"] = summary["DesiredInstanceCount"]
