"""An endpoint config's ``AsyncInferenceConfig``, validated as SageMaker validates it.

botocore's model already checks lengths, ranges, enums and patterns (``control.validation``); the
rules here are the ones it cannot express. coldbrew also accepts the config on serverless variants
(SageMaker takes it on instance variants only): async requests then scale to zero and bill by the
millisecond.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from coldbrew.errors import ValidationException

log = logging.getLogger("coldbrew.async")

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
    """What serving and the dispatcher take from an ``AsyncInferenceConfig``."""

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


def validate(config: dict[str, Any], config_name: str) -> None:
    """Raise ValidationException for an AsyncInferenceConfig SageMaker (or coldbrew) refuses."""
    output = config.get("OutputConfig")
    if output is None:
        raise ValidationException(
            "1 validation error detected: Value null at 'asyncInferenceConfig.outputConfig' failed to "
            "satisfy constraint: Member must not be null"
        )
    if not output.get("S3OutputPath"):
        raise ValidationException(
            "AsyncInferenceConfig.OutputConfig.S3OutputPath is required: it is where coldbrew writes "
            "each request's result."
        )
    for member in ("S3OutputPath", "S3FailurePath"):
        url = output.get(member)
        if url and S3Url.parse(url) is None:
            raise ValidationException(
                f"AsyncInferenceConfig.OutputConfig.{member} {url[:200]!r} is not an S3 URI of the form "
                "s3://bucket/prefix."
            )
    notification = output.get("NotificationConfig") or {}
    include = notification.get("IncludeInferenceResponseIn") or []
    if len(set(include)) != len(include):
        raise ValidationException(
            "AsyncInferenceConfig.OutputConfig.NotificationConfig.IncludeInferenceResponseIn lists a "
            "topic more than once."
        )
    for value, topic in ((SUCCESS_TOPIC, "SuccessTopic"), (ERROR_TOPIC, "ErrorTopic")):
        if value in include and not notification.get(topic):
            raise ValidationException(
                f"IncludeInferenceResponseIn names {value} but NotificationConfig has no {topic}."
            )
    if output.get("KmsKeyId"):
        log.warning(
            "endpoint config %s: AsyncInferenceConfig.OutputConfig.KmsKeyId is accepted but not applied; "
            "coldbrew writes async results without KMS encryption",
            config_name,
        )
