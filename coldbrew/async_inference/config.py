"""An endpoint config's ``AsyncInferenceConfig``, validated as SageMaker validates it (what
serving takes from it is ``serving.targets.AsyncConfig``).

botocore's model already checks lengths, ranges, enums and patterns (``control.validation``); the
rules here are the ones it cannot express. coldbrew also accepts the config on serverless variants
(SageMaker takes it on instance variants only): async requests then scale to zero and bill by the
millisecond.
"""

from __future__ import annotations

import logging
from typing import Any

from coldbrew.errors import ValidationException
from coldbrew.serving.targets import ERROR_TOPIC, SUCCESS_TOPIC, S3Url

log = logging.getLogger("coldbrew.async")


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
