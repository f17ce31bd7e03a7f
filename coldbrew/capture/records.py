"""Capture records as SageMaker writes them, and the keys of the files that hold them.

One JSON object per line (JSON Lines), one line per captured invocation::

    {"captureData": {"endpointInput": {"observedContentType": "text/csv", "mode": "INPUT",
                                       "data": "1,2,3", "encoding": "CSV"},
                     "endpointOutput": {... "mode": "OUTPUT" ...}},
     "eventMetadata": {"eventId": "<uuid>", "inferenceId": "<if given>",
                       "inferenceTime": "2026-12-02T14:31:13Z"},
     "eventVersion": "0"}

Files are at ``<DestinationS3Uri>/<EndpointName>/<VariantName>/yyyy/mm/dd/hh/mm-ss-SSS-<uuid>.jsonl``
(UTC), the name from the time of the file's first record, as SageMaker names them.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass

from coldbrew.capture.config import CaptureConfig

CSV, JSON, BASE64 = "CSV", "JSON", "BASE64"


@dataclass(frozen=True, slots=True)
class CaptureEvent:
    """One sampled invocation as the invoke path hands it over: references only (the bodies are
    not copied), so making one costs the hot path next to nothing; encoding waits for the writer."""

    config: CaptureConfig
    endpoint: str
    variant: str
    at: float
    """When the invocation was received, epoch seconds."""
    input_type: str
    input_body: bytes
    output_type: str
    output_body: bytes
    inference_id: str | None = None

    @property
    def size(self) -> int:
        """Roughly what it holds in memory: what bounds the writer's buffer."""
        return len(self.input_body) + len(self.output_body) + 256


def encoding(content_type: str, config: CaptureConfig) -> str:
    """CSV or JSON when the content type is one CaptureContentTypeHeader lists, else BASE64 (as on
    SageMaker, everything is base64 when the header lists none). A listed type matches with or
    without parameters: ``text/csv; charset=utf-8`` is CSV when ``text/csv`` is listed."""
    full = content_type.strip().lower()
    media = full.partition(";")[0].strip()
    if full in config.csv_types or media in config.csv_types:
        return CSV
    if full in config.json_types or media in config.json_types:
        return JSON
    return BASE64


def _data(body: bytes, content_type: str, config: CaptureConfig, mode: str) -> dict[str, str]:
    kind = encoding(content_type, config)
    if kind != BASE64:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            # Declared as text but is not: kept exactly, as base64, rather than mangled.
            kind, text = BASE64, ""
    if kind == BASE64:
        text = base64.b64encode(body).decode("ascii")
    return {"observedContentType": content_type, "mode": mode, "data": text, "encoding": kind}


def inference_time(at: float) -> str:
    """ISO 8601 in UTC to the second, as SageMaker's eventMetadata.inferenceTime."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def record_line(event: CaptureEvent) -> bytes:
    """The event's JSON Lines line (with its newline)."""
    config = event.config
    data: dict[str, dict[str, str]] = {}
    if config.capture_input:
        data["endpointInput"] = _data(event.input_body, event.input_type, config, "INPUT")
    if config.capture_output:
        data["endpointOutput"] = _data(event.output_body, event.output_type, config, "OUTPUT")
    metadata = {"eventId": str(uuid.uuid4()), "inferenceTime": inference_time(event.at)}
    if event.inference_id is not None:
        metadata["inferenceId"] = event.inference_id
    record = {"captureData": data, "eventMetadata": metadata, "eventVersion": "0"}
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"


@dataclass(frozen=True)
class FileKey:
    """Which file a record goes to: records of one endpoint variant, destination and hour share one
    per flush."""

    bucket: str
    prefix: str
    endpoint: str
    variant: str
    hour: str
    """``yyyy/mm/dd/hh``, UTC."""

    @classmethod
    def of(cls, event: CaptureEvent) -> FileKey:
        hour = time.strftime("%Y/%m/%d/%H", time.gmtime(event.at))
        config = event.config
        return cls(config.bucket, config.prefix, event.endpoint, event.variant, hour)

    def object_key(self, first_at: float) -> str:
        """The key of a new file whose first record is from ``first_at``."""
        stamp = time.strftime("%M-%S", time.gmtime(first_at)) + f"-{int(first_at * 1000) % 1000:03d}"
        name = f"{stamp}-{uuid.uuid4()}.jsonl"
        parts = [self.prefix] if self.prefix else []
        return "/".join([*parts, self.endpoint, self.variant, self.hour, name])
