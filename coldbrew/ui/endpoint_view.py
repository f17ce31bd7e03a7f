"""The endpoint page: its summary row, configuration, live environments, logs, queue and jobs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from coldbrew.logs.names import group_name
from coldbrew.ui.config_view import VariantLine, masked_deployment
from coldbrew.ui.endpoints_view import EndpointRow
from coldbrew.ui.live import LiveVariant
from coldbrew.ui.reads import AsyncQueueState, LogLine, StoredEndpoint, TransformJobRow


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
    )
