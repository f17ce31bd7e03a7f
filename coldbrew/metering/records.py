"""What one invocation leaves behind: a :class:`MeterRecord`, and how its status is classified."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from coldbrew.errors import ModelError


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
    node: str | None = None
    """The Ray node whose environment answered (``--backend ray``); None on the local backend."""

    @classmethod
    def answered(
        cls,
        *,
        endpoint: str,
        variant: str,
        started_at: float,
        total_us: int,
        model_latency_us: int,
        cold_start: bool,
        setup_ms: float,
        memory_mb: int,
        serverless: bool,
        bytes_in: int,
        bytes_out: int,
        node: str | None = None,
    ) -> MeterRecord:
        """An invocation the model answered, ``total_us`` after the gateway received it."""
        return cls(
            endpoint=endpoint,
            variant=variant,
            started_at=started_at,
            model_latency_us=model_latency_us,
            # As on SageMaker Serverless, a cold start's setup counts as overhead.
            overhead_latency_us=max(0, total_us - model_latency_us),
            cold_start=cold_start,
            setup_us=int(setup_ms * 1000),
            memory_mb=memory_mb,
            serverless=serverless,
            bytes_in=bytes_in,
            bytes_out=bytes_out,
            status=200,
            node=node,
        )

    @classmethod
    def failed(
        cls,
        *,
        endpoint: str,
        variant: str,
        started_at: float,
        total_us: int,
        memory_mb: int,
        serverless: bool,
        bytes_in: int,
        bytes_out: int,
        status: int,
        error_code: str,
        node: str | None = None,
    ) -> MeterRecord:
        """An invocation answered with an error: refused, failed by coldbrew, or by the model."""
        # A ModelError ran the model (or crashed or timed out in it): serving does not say how long
        # the worker took, so the whole time is counted as model time, as the worker was held.
        model_us = total_us if error_code == ModelError.code else 0
        return cls(
            endpoint=endpoint,
            variant=variant,
            started_at=started_at,
            model_latency_us=model_us,
            overhead_latency_us=total_us - model_us,
            cold_start=False,
            setup_us=0,
            memory_mb=memory_mb,
            serverless=serverless,
            bytes_in=bytes_in,
            bytes_out=bytes_out,
            status=status,
            error_code=error_code,
            node=node,
        )

    @property
    def outcome(self) -> Outcome:
        if self.error_code is None and self.status < 400:
            return Outcome.OK
        if self.error_code == ModelError.code:
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
    "node",
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
        record.node,
    )
