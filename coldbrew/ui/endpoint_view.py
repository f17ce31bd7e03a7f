"""The endpoint page: its summary row, configuration, live environments, logs, queue and jobs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from coldbrew.capture.config import CaptureConfig
from coldbrew.logs.names import group_name
from coldbrew.ui.config_view import VariantLine, masked_deployment
from coldbrew.ui.endpoints_view import EndpointRow
from coldbrew.ui.live import LiveVariant
from coldbrew.ui.reads import AsyncQueueState, LogLine, StoredEndpoint, TransformJobRow


@dataclass(frozen=True, slots=True)
class CaptureCounts:
    """The capture writer's counters: the server's, over every endpoint (it keeps no others)."""

    written: int
    dropped_buffer_full: int
    dropped_write_failed: int
    buffered_bytes: int


@dataclass(frozen=True, slots=True)
class CaptureView:
    capturing: bool
    """Enabled, sampling above 0% and something (input or output) to keep."""
    enabled: bool
    destination: str
    sampling_percentage: int
    modes: list[str]
    """Input, Output."""
    kms_key_id: str | None
    server: CaptureCounts | None


def capture_view(deployment: dict[str, Any], counts: CaptureCounts | None) -> CaptureView | None:
    raw = deployment.get("Config", {}).get("DataCaptureConfig")
    if not raw:
        return None
    config = CaptureConfig.from_request(raw)
    modes = [name for name, on in (("Input", config.capture_input), ("Output", config.capture_output)) if on]
    return CaptureView(
        config.capturing, config.enabled, config.destination, config.sampling_percentage, modes,
        config.kms_key_id, counts,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class EndpointPage:
    row: EndpointRow
    arn: str
    config_name: str
    created_at: float
    modified_at: float
    pending_config_name: str | None
    config: dict[str, Any]
    """The deployment snapshot (endpoint config and models), Environment values masked."""
    live: list[LiveVariant]
    log_group: str
    logs: list[LogLine] | None
    """None: log collection is off, or the viewer may not read the group."""
    async_queue: AsyncQueueState | None
    transform_jobs: list[TransformJobRow]
    capture: CaptureView | None = None
    """Its DataCaptureConfig, if it has one."""

    @property
    def serverless_variants(self) -> list[VariantLine]:
        return [v for v in self.row.variants if v.serverless]


def endpoint_page(
    stored: StoredEndpoint,
    row: EndpointRow,
    live: list[LiveVariant],
    logs: list[LogLine] | None,
    async_queue: AsyncQueueState | None,
    transform_jobs: list[TransformJobRow],
    capture: CaptureCounts | None = None,
) -> EndpointPage:
    return EndpointPage(
        row=row,
        arn=stored.arn,
        config_name=stored.config_name,
        created_at=stored.created_at,
        modified_at=stored.modified_at,
        pending_config_name=(stored.pending or {}).get("ConfigName"),
        config=masked_deployment(stored.deployment),
        live=live,
        log_group=group_name(stored.name),
        logs=logs,
        async_queue=async_queue,
        transform_jobs=transform_jobs,
        capture=capture_view(stored.deployment, capture),
    )
