"""What the control plane asks serving to run: one typed target per endpoint and variant.

The control plane keeps SageMaker's shapes (CreateEndpointConfig's ProductionVariants, the models'
ContainerDefinitions); it turns them into these values once, when an endpoint is deployed, so
serving never reads SageMaker's dicts. Per-endpoint settings that coldbrew takes from the model's
``Environment`` (``COLDBREW_*`` keys) are validated here, so a bad value fails CreateEndpoint with a
message naming the key instead of being ignored later.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, ValidationError

from coldbrew.capture.config import CaptureConfig
from coldbrew.scaling.keepalive import POLICY_NAMES


class EndpointSettings(BaseModel):
    """coldbrew's own keys in a model's ``Environment``; each overrides the server-wide setting."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    idle_timeout_s: PositiveFloat | None = Field(default=None, alias="COLDBREW_IDLE_TIMEOUT_S")
    """Seconds an idle serverless environment is kept (the server's COLDBREW_IDLE_TIMEOUT_S otherwise)."""
    keepalive_policy: Literal["fixed", "adaptive"] | None = Field(
        default=None, alias="COLDBREW_KEEPALIVE_POLICY"
    )
    """Keep-alive policy for this endpoint (the server's COLDBREW_KEEPALIVE_POLICY otherwise)."""
    serve_command: str | None = Field(default=None, alias="COLDBREW_SERVE_COMMAND", min_length=1)
    """A user's own server command, like an ``exec:`` image."""
    templates: bool | None = Field(default=None, alias="COLDBREW_TEMPLATES")
    """False: every cold start of this model loads it (runs model_fn) rather than forking from a
    process that loaded it once (:mod:`coldbrew.backends.templates`); the backend reads the key
    from the worker's environment, this only validates it."""
    exec_network: Literal["private", "host"] | None = Field(default=None, alias="COLDBREW_EXEC_NETWORK")
    """An ``exec:`` server's network: a namespace of its own, reached only through the gateway
    (``private``, the default), or the host's (``host``; :mod:`coldbrew.backends.user_server`)."""

    @classmethod
    def from_environment(cls, environment: Mapping[str, Any]) -> EndpointSettings:
        """Raises ValueError naming the key and what it accepts."""
        try:
            return cls.model_validate(dict(environment))
        except ValidationError as exc:
            error = exc.errors()[0]
            key = str(error["loc"][0]) if error["loc"] else "Environment"
            value = str(environment.get(key, ""))[:64]
            raise ValueError(
                f"Environment variable {key}={value!r} is not valid: {_accepts(key, error['msg'])}"
            ) from None


def _accepts(key: str, message: str) -> str:
    if key == "COLDBREW_KEEPALIVE_POLICY":
        return f"use one of {', '.join(POLICY_NAMES)}."
    if key == "COLDBREW_IDLE_TIMEOUT_S":
        return "use a number of seconds greater than 0."
    if key == "COLDBREW_EXEC_NETWORK":
        return "use private or host."
    if key == "COLDBREW_TEMPLATES":
        return "use true or false."
    return message + "."


SUCCESS_TOPIC, ERROR_TOPIC = "SUCCESS_NOTIFICATION_TOPIC", "ERROR_NOTIFICATION_TOPIC"


@dataclass(frozen=True)
class S3Url:
    bucket: str
    key: str

    @classmethod
    def parse(cls, url: str) -> S3Url | None:
        """``s3://bucket/key``; None for anything else."""
        if not url.startswith("s3://"):
            return None
        bucket, _, key = url[len("s3://") :].partition("/")
        if not bucket:
            return None
        return cls(bucket, key)

    def join(self, *names: str) -> S3Url:
        """This URL as a prefix, with ``names`` appended as path segments."""
        parts = [self.key.rstrip("/")] if self.key.strip("/") else []
        parts += [n.strip("/") for n in names if n.strip("/")]
        return S3Url(self.bucket, "/".join(parts))

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True)
class AsyncConfig:
    """What serving and the async dispatcher take from an ``AsyncInferenceConfig`` (validated by
    ``coldbrew.async_inference.config``)."""

    output_path: S3Url
    failure_path: S3Url
    """S3FailurePath, or S3OutputPath when it is not given."""
    max_concurrent_per_instance: int | None = None
    success_topic: str | None = None
    error_topic: str | None = None
    response_in_success: bool = False
    response_in_error: bool = False

    @classmethod
    def from_request(cls, config: dict[str, Any]) -> AsyncConfig:
        """From a config ``validate`` accepted."""
        output = config.get("OutputConfig") or {}
        notification = output.get("NotificationConfig") or {}
        include = set(notification.get("IncludeInferenceResponseIn") or ())
        output_path = S3Url.parse(output["S3OutputPath"])
        assert output_path is not None
        failure = S3Url.parse(output.get("S3FailurePath") or "") or output_path
        return cls(
            output_path=output_path,
            failure_path=failure,
            max_concurrent_per_instance=(config.get("ClientConfig") or {}).get(
                "MaxConcurrentInvocationsPerInstance"
            ),
            success_topic=notification.get("SuccessTopic") or None,
            error_topic=notification.get("ErrorTopic") or None,
            response_in_success=SUCCESS_TOPIC in include,
            response_in_error=ERROR_TOPIC in include,
        )


@dataclass(frozen=True)
class ContainerTarget:
    image: str | None
    environment: dict[str, str]
    model_data: Mapping[str, Any]
    """The ContainerDefinition, for the artifact store alone to read ModelDataUrl/ModelDataSource from."""
    network_isolation: bool = False
    """The model's EnableNetworkIsolation: its workers get no network."""


@dataclass(frozen=True)
class ServerlessTarget:
    memory_mb: int
    max_concurrency: int
    provisioned_concurrency: int = 0


@dataclass(frozen=True)
class InstancesTarget:
    instance_type: str
    count: int


@dataclass(frozen=True)
class VariantTarget:
    name: str
    model_name: str
    weight: float
    container: ContainerTarget
    settings: EndpointSettings
    serverless: ServerlessTarget | None = None
    instances: InstancesTarget | None = None


@dataclass(frozen=True)
class JobSizing:
    """What a batch transform job's pool takes from CreateTransformJob (its instances are the
    variant's ``InstancesTarget``)."""

    concurrent_per_instance: int
    """MaxConcurrentTransforms: invocations each instance serves at once."""


@dataclass(frozen=True)
class EndpointTarget:
    endpoint: str
    """The endpoint's name as created (invocations match it case-insensitively today)."""
    config_name: str
    variants: tuple[VariantTarget, ...]
    fingerprint: str
    """Identifies what the variants run (config and models, not weights or capacities): a deploy
    with an unchanged fingerprint only reconfigures the running pools."""
    asynchronous: AsyncConfig | None = None
    """The endpoint config's AsyncInferenceConfig, if it has one."""
    job: JobSizing | None = None
    """Set for a batch transform job's pool (never an endpoint's)."""
    capture: CaptureConfig | None = None
    """The endpoint config's DataCaptureConfig, if it has one."""
