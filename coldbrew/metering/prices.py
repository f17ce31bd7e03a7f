"""The price table: shipped as ``prices.json`` in this package, overridable by the user's own file.

A user's file (``--prices`` or ``COLDBREW_PRICES``) is merged over the shipped one key by key, so
it may hold only the figures that differ (another region, a negotiated rate).
"""

from __future__ import annotations

import functools
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, NonNegativeFloat, PositiveFloat

from coldbrew.serving.instances import instance_type


@functools.lru_cache(maxsize=1024)
def _memory_mb(instance: str) -> int:
    # Asked for every endpoint of a cost report, for every priced type: the dashboard's endpoints
    # page prices a thousand endpoints per load.
    return instance_type(instance).memory_mb


DATA_GB = 10**9
"""Data processed is priced per decimal GB: with it, the article "Serverless Machine Learning
Inference" gets its $0.04032 a day for 10,000 requests of 1 KB in and out. Memory sizes, in
contrast, are binary: a "1 GB" endpoint has 1024 MB."""


class _Prices(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerlessPrices(_Prices):
    per_gb_second: NonNegativeFloat
    per_gb_data_in: NonNegativeFloat
    per_gb_data_out: NonNegativeFloat
    provisioned_concurrency_per_gb_second: NonNegativeFloat
    """Paid for every second ProvisionedConcurrency environments exist, used or not."""
    provisioned_inference_per_gb_second: NonNegativeFloat
    """Inference duration on a provisioned environment (cheaper than on-demand)."""


class LambdaPrices(_Prices):
    per_request: NonNegativeFloat
    per_gb_second: NonNegativeFloat
    provisioned_concurrency_per_gb_second: NonNegativeFloat
    provisioned_per_gb_second: NonNegativeFloat


class FargateRates(_Prices):
    per_vcpu_hour: NonNegativeFloat
    per_gb_hour: NonNegativeFloat


class FargatePrices(_Prices):
    minimum_billed_seconds: NonNegativeFloat = 60
    """A task is billed per second from its image pull to its end, but never less than this."""
    linux: dict[str, FargateRates]
    """Rates by CPU architecture ("x86", "arm")."""


class PriceTable(_Prices):
    currency: str
    region: str
    date: str
    notes: list[str] = []
    hours_per_month: PositiveFloat = 720
    sagemaker_serverless: ServerlessPrices
    # "lambda" is a keyword, hence the alias.
    lambda_: dict[str, LambdaPrices]
    sagemaker_instances: dict[str, NonNegativeFloat]
    """Hourly on-demand price of each instance type."""
    batch_transform_instances: dict[str, NonNegativeFloat] = {}
    """Hourly on-demand price of each instance type in a Batch Transform job (billed per second)."""
    fargate: FargatePrices | None = None

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        populate_by_name=True,
        alias_generator=lambda name: "lambda" if name == "lambda_" else name,
    )

    def region_note(self, region: str) -> str | None:
        """A warning when the prices are not ``region``'s: the shipped table is us-east-2's (the
        prices the seed articles quote), while coldbrew's default region is us-east-1."""
        if region == self.region:
            return None
        return f"{self.region} prices, not {region}'s: COLDBREW_PRICES=FILE for your own"

    def instance_hourly(self, name: str) -> float:
        try:
            return self.sagemaker_instances[name]
        except KeyError:
            raise KeyError(f"no price for instance type {name}; add it to your prices file") from None

    def smallest_instance(self, memory_mb: int) -> str:
        """The cheapest priced instance type with at least ``memory_mb`` of memory."""
        fits = [
            (price, name) for name, price in self.sagemaker_instances.items() if _memory_mb(name) >= memory_mb
        ]
        if not fits:
            raise ValueError(f"no priced instance type has {memory_mb} MB of memory")
        return min(fits)[1]

    def batch_transform_hourly(self, name: str) -> float:
        try:
            return self.batch_transform_instances[name]
        except KeyError:
            known = ", ".join(sorted(self.batch_transform_instances)) or "none"
            raise KeyError(
                f"no Batch Transform price for instance type {name} (priced: {known}); "
                "add it to your prices file under batch_transform_instances"
            ) from None

    def fargate_arch(self, arch: str = "x86") -> FargateRates:
        if self.fargate is None:
            raise KeyError("no Fargate prices; add a fargate section to your prices file")
        try:
            return self.fargate.linux[arch]
        except KeyError:
            raise KeyError(
                f"no Fargate prices for architecture {arch!r}; known: {', '.join(self.fargate.linux)}"
            ) from None

    def lambda_arch(self, arch: str) -> LambdaPrices:
        try:
            return self.lambda_[arch]
        except KeyError:
            raise KeyError(
                f"no Lambda prices for architecture {arch!r}; known: {', '.join(self.lambda_)}"
            ) from None


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def default_prices_data() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        resources.files("coldbrew.metering").joinpath("prices.json").read_text()
    )
    return data


def load_prices(path: Path | str | None = None, override: dict[str, Any] | None = None) -> PriceTable:
    """The shipped table, with the user's file (``path`` or ``$COLDBREW_PRICES``) and ``override`` over it."""
    data = default_prices_data()
    path = path or os.environ.get("COLDBREW_PRICES") or None
    if path is not None:
        text = Path(path).read_text()
        if str(path).endswith(".toml"):
            import tomllib

            user = tomllib.loads(text)
        else:
            user = json.loads(text)
        data = _merge(data, user)
    if override:
        data = _merge(data, override)
    return PriceTable.model_validate(data)
