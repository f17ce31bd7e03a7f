"""An endpoint config's ``DataCaptureConfig``: validated as SageMaker validates it, and what the
invoke path and DescribeEndpoint take from it.

botocore's model already checks the members' presence, ranges (InitialSamplingPercentage 0-100),
lengths and the CaptureMode enum (``control.validation``); the rules here are the ones it cannot
express. SageMaker refuses data capture on serverless variants; coldbrew captures on both kinds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from coldbrew.errors import ValidationException

log = logging.getLogger("coldbrew.capture")

INPUT, OUTPUT, INPUT_AND_OUTPUT = "Input", "Output", "InputAndOutput"


@dataclass(frozen=True)
class CaptureConfig:
    """What capture needs per endpoint, built once per deployment (never on the invoke path)."""

    enabled: bool
    sampling_percentage: int
    destination: str
    """DestinationS3Uri as given (DescribeEndpoint reports it back unchanged)."""
    bucket: str
    prefix: str
    """The key prefix inside ``bucket``, without a trailing slash ("" for the bucket's root)."""
    capture_input: bool
    capture_output: bool
    csv_types: frozenset[str]
    json_types: frozenset[str]
    kms_key_id: str | None = None

    @classmethod
    def from_request(cls, config: dict[str, Any]) -> CaptureConfig:
        """From a validated DataCaptureConfig."""
        destination = str(config["DestinationS3Uri"])
        bucket, prefix = _split(destination)
        modes = {option["CaptureMode"] for option in config.get("CaptureOptions") or []}
        header = config.get("CaptureContentTypeHeader") or {}
        return cls(
            enabled=bool(config.get("EnableCapture", True)),
            sampling_percentage=int(config["InitialSamplingPercentage"]),
            destination=destination,
            bucket=bucket,
            prefix=prefix,
            capture_input=bool(modes & {INPUT, INPUT_AND_OUTPUT}),
            capture_output=bool(modes & {OUTPUT, INPUT_AND_OUTPUT}),
            csv_types=frozenset(t.lower() for t in header.get("CsvContentTypes") or []),
            json_types=frozenset(t.lower() for t in header.get("JsonContentTypes") or []),
            kms_key_id=config.get("KmsKeyId") or None,
        )

    @property
    def capturing(self) -> bool:
        """Whether any invocation can be captured (enabled, sampled above 0%, something to keep)."""
        return self.enabled and self.sampling_percentage > 0 and (self.capture_input or self.capture_output)

    def describe(self) -> dict[str, Any]:
        """DescribeEndpoint's DataCaptureConfig (the DataCaptureConfigSummary shape)."""
        summary: dict[str, Any] = {
            "EnableCapture": self.enabled,
            "CaptureStatus": "Started" if self.enabled else "Stopped",
            "CurrentSamplingPercentage": self.sampling_percentage,
            "DestinationS3Uri": self.destination,
        }
        if self.kms_key_id:
            summary["KmsKeyId"] = self.kms_key_id
        return summary


def _split(destination: str) -> tuple[str, str]:
    bucket, _, prefix = destination[len("s3://") :].partition("/")
    return bucket, prefix.strip("/")


def validate(config: dict[str, Any], config_name: str) -> None:
    """Raise ValidationException for a DataCaptureConfig SageMaker (or coldbrew) refuses."""
    destination = str(config.get("DestinationS3Uri", ""))
    if destination.startswith("https://"):
        # SageMaker's pattern also takes https:// URLs of a bucket; coldbrew writes through S3's
        # API and needs the bucket's name, which an https URL spells in several ways.
        raise ValidationException(
            f"DataCaptureConfig.DestinationS3Uri {destination[:200]!r}: coldbrew takes s3://bucket/prefix "
            "URIs only; give the same location as s3://bucket/prefix."
        )
    if not destination.startswith("s3://") or not _split(destination)[0]:
        raise ValidationException(
            "1 validation error detected: Value "
            f"'{destination[:200]}' at 'dataCaptureConfig.destinationS3Uri' failed to satisfy constraint: "
            "Member must satisfy regular expression pattern: ^(https|s3)://([^/])/?(.*)$"
        )
    if config.get("KmsKeyId"):
        log.warning(
            "endpoint config %s: DataCaptureConfig.KmsKeyId is accepted but not applied; coldbrew "
            "writes captured data without KMS encryption",
            config_name,
        )
