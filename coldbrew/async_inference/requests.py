"""One accepted InvokeEndpointAsync request, as it is queued, and where its outcome goes."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from coldbrew.serving.targets import AsyncConfig, S3Url

DEFAULT_TTL_S = 6 * 3600
DEFAULT_INVOCATION_TIMEOUT_S = 15 * 60
MAX_INPUT_BYTES = 1024**3
"""SageMaker's async payload limit (1 GB)."""


@dataclass(frozen=True)
class AsyncRequest:
    id: str
    """coldbrew's own id (a UUID): names the result objects, so two requests never share one."""
    inference_id: str
    endpoint: str
    """The endpoint's name as the client wrote it."""
    input_location: str
    output_location: str
    failure_location: str
    received_at: float
    ttl_s: int
    invocation_timeout_s: int
    content_type: str | None = None
    accept: str | None = None
    custom_attributes: str | None = None
    success_topic: str | None = None
    error_topic: str | None = None
    response_in_success: bool = False
    response_in_error: bool = False
    attempts: int = field(default=0, compare=False)
    """How many times it was started before, i.e. handed to a worker (the queue's count, not
    stored in the JSON)."""

    @property
    def expires_at(self) -> float:
        return self.received_at + self.ttl_s

    @property
    def endpoint_key(self) -> str:
        return self.endpoint.lower()

    def to_json(self) -> str:
        data = asdict(self)
        del data["attempts"]
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str, attempts: int = 0) -> AsyncRequest:
        data: dict[str, Any] = json.loads(text)
        return cls(**data, attempts=attempts)


def new_request(
    endpoint: str,
    config: AsyncConfig,
    input_location: str,
    *,
    inference_id: str | None = None,
    content_type: str | None = None,
    accept: str | None = None,
    custom_attributes: str | None = None,
    ttl_s: int | None = None,
    invocation_timeout_s: int | None = None,
    output_extension: str | None = None,
    filename: str | None = None,
    now: float | None = None,
) -> AsyncRequest:
    """A request with its result locations, as SageMaker forms them: ``<S3OutputPath>/<extension>/
    <Filename or id>.out`` and ``<S3FailurePath>/<extension>/<id>-error.out``."""
    request_id = str(uuid.uuid4())
    extension = output_extension or ""
    output = config.output_path.join(extension, filename or f"{request_id}.out")
    failure = config.failure_path.join(extension, f"{request_id}-error.out")
    return AsyncRequest(
        id=request_id,
        # A generated InferenceId is the request's own id, so the default output is <InferenceId>.out.
        inference_id=inference_id or request_id,
        endpoint=endpoint,
        input_location=input_location,
        output_location=str(output),
        failure_location=str(failure),
        received_at=time.time() if now is None else now,
        ttl_s=DEFAULT_TTL_S if ttl_s is None else ttl_s,
        invocation_timeout_s=DEFAULT_INVOCATION_TIMEOUT_S
        if invocation_timeout_s is None
        else invocation_timeout_s,
        content_type=content_type,
        accept=accept,
        custom_attributes=custom_attributes,
        success_topic=config.success_topic,
        error_topic=config.error_topic,
        response_in_success=config.response_in_success,
        response_in_error=config.response_in_error,
    )


def location(url: str) -> S3Url:
    parsed = S3Url.parse(url)
    assert parsed is not None, url
    return parsed
