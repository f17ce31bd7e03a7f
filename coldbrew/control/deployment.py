"""What an endpoint deploys: a snapshot of its endpoint config and the models it names.

The snapshot is taken when CreateEndpoint or UpdateEndpoint is accepted, as SageMaker does: deleting
or recreating the config or a model afterwards does not change a running endpoint, and a restart
brings back exactly what was deployed.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from coldbrew.capture.config import CaptureConfig
from coldbrew.serving.errors import DeployError
from coldbrew.serving.targets import (
    AsyncConfig,
    ContainerTarget,
    EndpointSettings,
    EndpointTarget,
    InstancesTarget,
    ServerlessTarget,
    VariantTarget,
)


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

    def settings_errors(self) -> list[str]:
        """Why the models' ``COLDBREW_*`` settings (in their Environment) are invalid, if they are."""
        errors = []
        for variant in self.variants:
            try:
                EndpointSettings.from_environment(variant.container.get("Environment") or {})
            except ValueError as exc:
                errors.append(f"Model {variant.model_name}: {exc}")
        return errors

    def target(self, endpoint: str, summaries: list[dict[str, Any]] | None = None) -> EndpointTarget:
        """What serving runs for ``endpoint``, with the desired weights and capacities of
        ``summaries`` (UpdateEndpointWeightsAndCapacities) over the config's own."""
        by_name = {s["VariantName"]: s for s in summaries or []}
        variants = []
        for variant in self.variants:
            summary = by_name.get(variant.name, {})
            container = variant.container
            environment = {k: str(v) for k, v in (container.get("Environment") or {}).items()}
            serverless = instances = None
            if variant.serverless is not None:
                config = summary.get("DesiredServerlessConfig", variant.serverless)
                serverless = ServerlessTarget(
                    memory_mb=int(config["MemorySizeInMB"]),
                    max_concurrency=int(config["MaxConcurrency"]),
                    provisioned_concurrency=int(config.get("ProvisionedConcurrency", 0)),
                )
            else:
                count = summary.get("DesiredInstanceCount", variant.instance_count or 1)
                instances = InstancesTarget(instance_type=variant.instance_type or "", count=int(count))
            variants.append(
                VariantTarget(
                    name=variant.name,
                    model_name=variant.model_name,
                    weight=float(summary.get("DesiredWeight", variant.weight)),
                    container=ContainerTarget(
                        image=container.get("Image") or None,
                        environment=environment,
                        model_data=container,
                        network_isolation=bool(variant.model.get("EnableNetworkIsolation")),
                    ),
                    settings=_settings(variant.model_name, environment),
                    serverless=serverless,
                    instances=instances,
                )
            )
        fingerprint = hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()
        async_config = self.config.get("AsyncInferenceConfig")
        asynchronous = AsyncConfig.from_request(async_config) if async_config else None
        capture_config = self.config.get("DataCaptureConfig")
        capture = CaptureConfig.from_request(capture_config) if capture_config else None
        return EndpointTarget(
            endpoint, self.config_name, tuple(variants), fingerprint, asynchronous, capture=capture
        )

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


def _settings(model_name: str, environment: dict[str, str]) -> EndpointSettings:
    try:
        return EndpointSettings.from_environment(environment)
    except ValueError as exc:  # stored before CreateEndpoint validated it
        raise DeployError(f"Model {model_name}: {exc}") from None


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


def mark_current(summary: dict[str, Any], now: float | None = None) -> None:
    """The variant now runs as desired: copy Desired* into Current*, and note when its image was
    resolved (DeployedImage.ResolutionTime), once."""
    summary["CurrentWeight"] = summary["DesiredWeight"]
    for image in summary.get("DeployedImages", []):
        image.setdefault("ResolutionTime", time.time() if now is None else now)
    if "DesiredServerlessConfig" in summary:
        summary["CurrentServerlessConfig"] = dict(summary["DesiredServerlessConfig"])
    if "DesiredInstanceCount" in summary:
        summary["CurrentInstanceCount"] = summary["DesiredInstanceCount"]


def with_variant_status(
    summaries: list[dict[str, Any]], endpoint_status: str, since: float, pending: bool = False
) -> list[dict[str, Any]]:
    """``summaries`` with the VariantStatus SageMaker reports while a variant is in a deployment
    stage, derived from the endpoint's status (StartTime: when that status began).

    As in SageMaker's endpoint deployment state events (docs: "Automating Amazon SageMaker with
    Amazon EventBridge", endpoint deployment state change): a variant being created says
    ``Launching X instance(s).``, one being deleted ``Terminating X instance(s).``, one whose
    instance count changes ``Scaling out desired instance count to X.``; a variant that simply
    serves (InService, or Failed) carries no VariantStatus. ``pending``: the summaries are a
    PendingDeploymentSummary's, whose variants are all being created.
    """
    out = []
    for summary in summaries:
        status = _variant_status(summary, "Creating" if pending else endpoint_status, since)
        out.append({**summary, "VariantStatus": [status]} if status else summary)
    return out


def _variant_status(summary: dict[str, Any], endpoint_status: str, since: float) -> dict[str, Any] | None:
    desired, current = summary.get("DesiredInstanceCount"), summary.get("CurrentInstanceCount")
    message = None
    if endpoint_status == "Creating":
        stage = "Creating"
        if desired is not None:
            message = f"Launching {desired} instance(s)."
    elif endpoint_status == "Deleting":
        stage = "Deleting"
        if current is not None:
            message = f"Terminating {current} instance(s)."
    elif endpoint_status == "Updating":
        changed = (
            summary.get("DesiredWeight") != summary.get("CurrentWeight")
            or desired != current
            or summary.get("DesiredServerlessConfig") != summary.get("CurrentServerlessConfig")
        )
        if not changed:
            return None
        stage = "Updating"
        if desired is not None and current is not None and desired != current:
            direction = "out" if desired > current else "in"
            message = f"Scaling {direction} desired instance count to {desired}."
    else:
        return None
    status: dict[str, Any] = {"Status": stage, "StartTime": since}
    if message is not None:
        status["StatusMessage"] = message
    return status
