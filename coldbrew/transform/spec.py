"""A CreateTransformJob request, validated as SageMaker validates it, as the typed values a job runs on.

botocore's model already checks lengths, ranges, enums and patterns (``control.validation``); the
rules here are the ones it cannot express, and the values coldbrew does not support are refused
with a message naming them rather than ignored.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from coldbrew.errors import ValidationException
from coldbrew.serving.targets import S3Url

log = logging.getLogger("coldbrew.transform")

MiB = 1024 * 1024
DEFAULT_MAX_PAYLOAD_MB = 6
MAX_PAYLOAD_MB = 100
DEFAULT_INVOCATION_TIMEOUT_S = 600
DEFAULT_MAX_RETRIES = 3
SPLIT_TYPES = ("None", "Line", "RecordIO")
DATA_TYPES = ("S3Prefix", "ManifestFile")


@dataclass(frozen=True)
class TransformJobSpec:
    name: str
    model_name: str
    data_type: str
    input_url: S3Url
    content_type: str | None
    compression: str
    split_type: str
    output_url: S3Url
    accept: str | None
    assemble_with: str
    instance_type: str
    instance_count: int
    max_concurrent: int | None
    """MaxConcurrentTransforms; None (or 0 in the request) lets the model's server say, through
    GET /execution-parameters, or else 1."""
    batch_strategy: str | None
    """None: the model's server says, else SingleRecord... as SageMaker defaults."""
    max_payload_mb: int | None
    invocation_timeout_s: int
    max_retries: int
    environment: dict[str, str]
    data_processing: dict[str, Any] | None

    @classmethod
    def from_request(cls, request: dict[str, Any]) -> TransformJobSpec:
        """Raise ValidationException for a request SageMaker (or coldbrew) refuses."""
        source = request["TransformInput"]["DataSource"]["S3DataSource"]
        data_type = source["S3DataType"]
        if data_type not in DATA_TYPES:
            raise ValidationException(
                f"S3DataType {data_type} is not supported by coldbrew: use S3Prefix or ManifestFile."
            )
        transform_input = request["TransformInput"]
        split = transform_input.get("SplitType", "None")
        if split not in SPLIT_TYPES:
            raise ValidationException(
                f"SplitType {split} is not supported by coldbrew: use None, Line or RecordIO."
            )
        input_url = _s3("TransformInput.DataSource.S3DataSource.S3Uri", source["S3Uri"])
        output = request["TransformOutput"]
        output_url = _s3("TransformOutput.S3OutputPath", output["S3OutputPath"])
        payload = request.get("MaxPayloadInMB")
        if payload is not None and payload > MAX_PAYLOAD_MB:
            raise ValidationException(
                f"MaxPayloadInMB {payload} is more than the maximum of {MAX_PAYLOAD_MB} MB."
            )
        strategy = request.get("BatchStrategy")
        concurrent = request.get("MaxConcurrentTransforms") or None
        if concurrent is not None and concurrent > 64:
            raise ValidationException(
                f"MaxConcurrentTransforms {concurrent} is more than coldbrew runs per instance (64)."
            )
        client = request.get("ModelClientConfig") or {}
        resources = request["TransformResources"]
        if output.get("KmsKeyId"):
            log.warning("transform job %s: TransformOutput.KmsKeyId is accepted but not applied",
                        request["TransformJobName"])  # fmt: skip
        if request.get("DataCaptureConfig"):
            log.warning("transform job %s: DataCaptureConfig is accepted but not applied",
                        request["TransformJobName"])  # fmt: skip
        return cls(
            name=request["TransformJobName"],
            model_name=request["ModelName"],
            data_type=data_type,
            input_url=input_url,
            content_type=transform_input.get("ContentType") or None,
            compression=transform_input.get("CompressionType", "None"),
            split_type=split,
            output_url=output_url,
            accept=output.get("Accept") or None,
            assemble_with=output.get("AssembleWith", "None"),
            instance_type=resources["InstanceType"],
            instance_count=int(resources["InstanceCount"]),
            max_concurrent=concurrent,
            batch_strategy=strategy,
            max_payload_mb=payload,
            invocation_timeout_s=int(client.get("InvocationsTimeoutInSeconds", DEFAULT_INVOCATION_TIMEOUT_S)),
            max_retries=int(client.get("InvocationsMaxRetries", DEFAULT_MAX_RETRIES)),
            environment={k: str(v) for k, v in (request.get("Environment") or {}).items()},
            data_processing=request.get("DataProcessing") or None,
        )


def _s3(member: str, url: str) -> S3Url:
    parsed = S3Url.parse(url)
    if parsed is None:
        raise ValidationException(
            f"{member} {url[:200]!r} is not an S3 URI of the form s3://bucket/prefix "
            "(coldbrew reads and writes S3 only)."
        )
    return parsed


@dataclass(frozen=True)
class ExecutionParameters:
    """What a job runs with once the request's unset values are filled in, from the model server's
    GET /execution-parameters where it answers, else SageMaker's defaults."""

    max_concurrent: int
    batch_strategy: str
    max_payload_bytes: int

    @classmethod
    def resolve(cls, spec: TransformJobSpec, server: dict[str, Any] | None) -> ExecutionParameters:
        server = server or {}
        concurrent = spec.max_concurrent or _positive(server.get("MaxConcurrentTransforms")) or 1
        strategy = spec.batch_strategy or server.get("BatchStrategy")
        if strategy not in ("SingleRecord", "MultiRecord"):
            strategy = "MultiRecord" if spec.split_type != "None" else "SingleRecord"
        payload = spec.max_payload_mb
        if payload is None:
            payload = _positive(server.get("MaxPayloadInMB")) or DEFAULT_MAX_PAYLOAD_MB
        # 0 asks SageMaker to stream the payload chunked, without a limit: coldbrew keeps the cap.
        payload = min(payload, MAX_PAYLOAD_MB) or MAX_PAYLOAD_MB
        return cls(min(concurrent, 64), strategy, payload * MiB)


def _positive(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
