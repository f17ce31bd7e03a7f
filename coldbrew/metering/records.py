"""What one invocation leaves behind: a :class:`MeterRecord`, and how its status is classified."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum


class Outcome(Enum):
    """How CloudWatch counts an invocation's result."""

    OK = "ok"
    CLIENT_ERROR = "4xx"
    """Invocation4XXErrors: the request was refused (validation, throttling, not ready)."""
    SERVER_ERROR = "5xx"
    """Invocation5XXErrors: coldbrew failed."""
    MODEL_ERROR = "model"
    """InvocationModelErrors: the model's container answered with an error, crashed or timed out."""


@dataclass(frozen=True, slots=True)
class MeterRecord:
    endpoint: str
    variant: str
    started_at: float
    """Unix time the gateway received the request."""
    model_latency_us: int
    """Time the worker took (CloudWatch ModelLatency)."""
    overhead_latency_us: int
    """Everything else the gateway spent, a cold start included (CloudWatch OverheadLatency)."""
    cold_start: bool
    setup_us: int
    """Time to start the environment the invocation waited for (ModelSetupTime); 0 when warm."""
    memory_mb: int
    serverless: bool
    bytes_in: int
    bytes_out: int
    status: int
    """HTTP status returned to the client."""
    error_code: str | None = None
    """SageMaker's error code (ModelError, ThrottlingException, ...); None on success."""

    @property
    def outcome(self) -> Outcome:
        if self.error_code is None and self.status < 400:
            return Outcome.OK
        if self.error_code == "ModelError":
            return Outcome.MODEL_ERROR
        return Outcome.CLIENT_ERROR if self.status < 500 else Outcome.SERVER_ERROR

    @property
    def billed_mb_ms(self) -> int:
        """Memory times duration as serverless bills it: model latency rounded up to the millisecond."""
        if not self.serverless:
            return 0
        return self.memory_mb * math.ceil(self.model_latency_us / 1000)


RECORD_COLUMNS = (
    "endpoint",
    "variant",
    "started_at",
    "model_latency_us",
    "overhead_latency_us",
    "cold_start",
    "setup_us",
    "memory_mb",
    "serverless",
    "bytes_in",
    "bytes_out",
    "status",
    "error_code",
)


def record_row(record: MeterRecord) -> tuple[object, ...]:
    return (
        record.endpoint,
        record.variant,
        record.started_at,
        record.model_latency_us,
        record.overhead_latency_us,
        int(record.cold_start),
        record.setup_us,
        record.memory_mb,
        int(record.serverless),
        record.bytes_in,
        record.bytes_out,
        record.status,
        record.error_code,
    )
