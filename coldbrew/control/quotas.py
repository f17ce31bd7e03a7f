"""Service quotas: how many resources of each kind the control plane holds, and how many instances
a provisioned variant may ask for.

SageMaker refuses past its account's Service Quotas with ResourceLimitExceeded; coldbrew does the
same with limits of its own (``COLDBREW_MAX_*``), so one client cannot fill the store, the
reconciler and the serving pools with thousands of resources in a minute.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

import psutil

from coldbrew.control import arns
from coldbrew.errors import ResourceLimitExceeded
from coldbrew.serving.instances import instance_type


@dataclass(frozen=True)
class Quota:
    name: str
    """As SageMaker's Service Quotas console names it."""
    unit: str
    setting: str
    count_sql: str


_QUOTAS = {
    arns.MODEL: Quota("Number of models", "Models", "COLDBREW_MAX_MODELS", "SELECT count(*) FROM models"),
    arns.ENDPOINT_CONFIG: Quota(
        "Number of endpoint configurations",
        "Endpoint configurations",
        "COLDBREW_MAX_ENDPOINT_CONFIGS",
        "SELECT count(*) FROM endpoint_configs",
    ),
    arns.ENDPOINT: Quota(
        "Number of endpoints", "Endpoints", "COLDBREW_MAX_ENDPOINTS", "SELECT count(*) FROM endpoints"
    ),
    # Transform jobs cannot be deleted (SageMaker keeps them as history), so what is limited is how
    # many run at once, as SageMaker's quota on concurrent transform jobs does.
    arns.TRANSFORM_JOB: Quota(
        "Number of concurrent transform jobs",
        "Transform jobs",
        "COLDBREW_MAX_TRANSFORM_JOBS",
        "SELECT count(*) FROM transform_jobs WHERE status IN ('InProgress', 'Stopping')",
    ),
}


@dataclass(frozen=True)
class Quotas:
    models: int = 2000
    endpoint_configs: int = 2000
    endpoints: int = 500
    transform_jobs: int = 100
    instances_per_variant: int | None = None
    """Most InitialInstanceCount (or DesiredInstanceCount) of one variant; None: as many instances
    of the variant's type as this machine's memory holds."""

    def limit(self, resource_type: str) -> int | None:
        return {
            arns.MODEL: self.models,
            arns.ENDPOINT_CONFIG: self.endpoint_configs,
            arns.ENDPOINT: self.endpoints,
            arns.TRANSFORM_JOB: self.transform_jobs,
        }.get(resource_type)

    def check_create(self, conn: sqlite3.Connection, resource_type: str) -> None:
        """Refuse one more resource of ``resource_type`` past its quota; ``conn`` is the inserting
        transaction's, so concurrent creates cannot both take the last place."""
        limit, quota = self.limit(resource_type), _QUOTAS.get(resource_type)
        if limit is None or quota is None:
            return
        used = int(conn.execute(quota.count_sql).fetchone()[0])
        if used + 1 > limit:
            raise ResourceLimitExceeded(
                f"The account-level service limit '{quota.name}' is {limit:,} {quota.unit}, with "
                f"current utilization of {used:,} {quota.unit} and a request delta of 1 {quota.unit}. "
                f"Delete ones you no longer use, or raise the limit with {quota.setting}."
            )

    def check_instances(self, variant: str, instance: str, count: int, subject: str | None = None) -> None:
        """Refuse a provisioned variant (or ``subject``: a transform job) of more instances than this
        machine could ever hold (the serving side decides what fits in the memory budget at deploy
        time)."""
        limit, why = self.instances_per_variant, "COLDBREW_MAX_INSTANCES_PER_VARIANT"
        if limit is None:
            memory_mb = instance_type(instance).memory_mb
            total_mb = psutil.virtual_memory().total // (1024 * 1024)
            limit = max(1, total_mb // memory_mb)
            why = (
                f"this machine's {total_mb:,} MB of memory holds {limit:,} {instance} instance(s) of "
                f"{memory_mb:,} MB; set COLDBREW_MAX_INSTANCES_PER_VARIANT to allow more"
            )
        if count > limit:
            who = subject or f"Variant '{variant}'"
            raise ResourceLimitExceeded(
                f"{who} asks for {count:,} instances of {instance}; at most {limit:,} are allowed ({why})."
            )
