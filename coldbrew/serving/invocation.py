"""An invocation as serving sees it, and what it returns."""

from __future__ import annotations

from dataclasses import dataclass

SERVERLESS_MAX_PAYLOAD = 4 * 1024 * 1024
PROVISIONED_MAX_PAYLOAD = 6 * 1024 * 1024
INVOCATION_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Invocation:
    endpoint: str
    body: bytes
    content_type: str | None
    accept: str | None
    custom_attributes: str | None
    target_variant: str | None
    """The TargetVariant the client asked for, if any (the variant chosen is passed beside it)."""


@dataclass(frozen=True)
class InvocationResult:
    body: bytes
    content_type: str
    variant: str
    custom_attributes: str | None
    cold_start: bool
    setup_ms: float
    model_latency_us: int
    """Time the worker took, measured from the gateway's side of the local connection."""
    node: str | None = None
    """The Ray node of the environment that answered (``--backend ray``); None on one machine."""
