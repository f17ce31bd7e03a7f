"""A simulation spec (TOML or JSON): traffic, model, variant configuration and what to compare."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    model_validator,
)

from coldbrew.metering.batch_cost import check_fargate_size

DAY_S = 86400.0


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _clock(text: str) -> float:
    """``"HH:MM"`` or ``"HH:MM:SS"`` (``"24:00"`` allowed) to seconds after midnight."""
    parts = [float(p) for p in text.split(":")]
    if not 2 <= len(parts) <= 3:
        raise ValueError(f"{text!r} is not a time of day; write HH:MM or HH:MM:SS")
    seconds = parts[0] * 3600 + parts[1] * 60 + (parts[2] if len(parts) == 3 else 0)
    if not 0 <= seconds <= DAY_S:
        raise ValueError(f"{text!r} is not within a day")
    return seconds


class Window(_Spec):
    """A rate of invocations between two times of day, repeated every day."""

    start: str = "00:00"
    end: str = "24:00"
    per_second: NonNegativeFloat | None = None
    per_minute: NonNegativeFloat | None = None
    per_hour: NonNegativeFloat | None = None
    per_day: NonNegativeFloat | None = None
    """Spread over the window (``per_day = 10000`` over a whole day is one every 8.64 s)."""

    @model_validator(mode="after")
    def _one_rate(self) -> Window:
        given = [r for r in (self.per_second, self.per_minute, self.per_hour, self.per_day) if r is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of per_second, per_minute, per_hour, per_day")
        if self.end_s <= self.start_s:
            raise ValueError(f"window {self.start}-{self.end} ends before it starts")
        return self

    @property
    def start_s(self) -> float:
        return _clock(self.start)

    @property
    def end_s(self) -> float:
        return _clock(self.end)

    @property
    def rate(self) -> float:
        """Invocations per second."""
        if self.per_second is not None:
            return self.per_second
        if self.per_minute is not None:
            return self.per_minute / 60
        if self.per_hour is not None:
            return self.per_hour / 3600
        assert self.per_day is not None
        return self.per_day / (self.end_s - self.start_s)

    @property
    def per_occurrence(self) -> float:
        """Invocations in one day's occurrence of the window (exact, before any rounding)."""
        if self.per_day is not None:
            return self.per_day
        return self.rate * (self.end_s - self.start_s)


class Traffic(_Spec):
    windows: list[Window] = []
    arrivals: Literal["uniform", "poisson"] = "uniform"
    """``uniform``: evenly spaced at the window's rate, deterministic (counts over the whole run are
    exact: 50 an hour over 23.75 h for 30 days is 35,625). ``poisson``: random, seeded."""
    timestamps_file: str | None = None
    """Instead of windows: a file with one arrival per line, in seconds (relative or Unix), and
    optionally, after a space, that invocation's model latency in seconds (used instead of
    ``model_latency``)."""
    seed: int = 0

    @model_validator(mode="after")
    def _one_source(self) -> Traffic:
        if bool(self.windows) == bool(self.timestamps_file):
            raise ValueError("traffic needs either windows or timestamps_file")
        return self


class Latency(_Spec):
    """Model latency: fixed, lognormal with a median and a shape, or drawn from measured values."""

    fixed_s: PositiveFloat | None = None
    lognormal_median_s: PositiveFloat | None = None
    lognormal_sigma: NonNegativeFloat = 0.5
    empirical_s: list[PositiveFloat] | None = None
    """Measured latencies (e.g. ``meter_records.model_latency_us / 1e6``), drawn with replacement."""

    @model_validator(mode="after")
    def _one(self) -> Latency:
        if sum(x is not None for x in (self.fixed_s, self.lognormal_median_s, self.empirical_s)) != 1:
            raise ValueError("model_latency needs one of fixed_s, lognormal_median_s, empirical_s")
        if self.empirical_s is not None and not self.empirical_s:
            raise ValueError("model_latency.empirical_s is empty")
        return self


class KeepAlive(_Spec):
    policy: str = "fixed"
    """A name :func:`coldbrew.scaling.keepalive.make_policy` knows ("fixed", "adaptive")."""
    idle_timeout_s: PositiveFloat = 300.0


class Fleet(_Spec):
    """Many endpoints with the spec's configuration on one machine: the traffic windows give the
    rate over all of them, and each invocation goes to one endpoint by Zipf popularity (the
    ``k``-th most popular gets a share proportional to ``1 / k ** zipf_s``)."""

    endpoints: PositiveInt
    zipf_s: NonNegativeFloat = 1.0
    """0 spreads traffic evenly; larger values concentrate it on the most popular endpoints."""
    memory_budget_mb: PositiveInt
    """The machine's memory budget (COLDBREW_MEMORY_BUDGET_MB) that their environments share."""


class Compare(_Spec):
    instances: list[str] = []
    """Instance types to price as always-on alternatives; empty: the smallest that fits the memory."""
    instance_count: PositiveInt = 1
    lambda_archs: list[str] = ["x86"]
    """Lambda architectures to price the same traffic on ("x86", "arm")."""
    lambda_memory_mb: PositiveInt | None = None
    """Lambda memory, if not ``memory_mb`` (Lambda allows 128 MB to 10 GB)."""


class Batch(_Spec):
    """The same requests collected and run as batch jobs instead of answered as they arrive, priced
    as SageMaker Batch Transform jobs, as AWS Fargate tasks and as Lambda invocations.

    A job runs its share of the day's requests one after another on each of its workers, after a
    start-up it is billed for: ``startup + requests x duration / workers`` seconds."""

    requests_per_day: NonNegativeInt | None = None
    """Default: the simulated traffic's served invocations per day."""
    duration_ms: PositiveFloat | None = None
    """Time per request; default: the simulated invocations' mean billed model latency."""
    jobs_per_day: PositiveInt = 1
    """The day's requests split evenly into this many jobs, each paying its start-up (and on
    Fargate at least the one-minute minimum)."""
    instance_type: str = "ml.m5.large"
    """A Batch Transform instance type in the price table's ``batch_transform_instances``."""
    instance_count: PositiveInt = 1
    max_concurrent_transforms: PositiveInt = 1
    """Requests in flight on each instance (workers per instance)."""
    transform_startup_s: NonNegativeFloat = 0.0
    """Billed seconds of each instance before its first request (launch, container, model load).
    0 prices the requests alone."""
    fargate_vcpu: PositiveFloat = 0.5
    fargate_memory_gb: PositiveFloat = 1.0
    """A Fargate task size: 0.25 vCPU with 0.5-2 GB, 0.5 with 1-4, 1 with 2-8, and so on."""
    fargate_arch: str = "x86"
    fargate_startup_s: NonNegativeFloat = 0.0
    """Billed seconds of each task before its first request (image pull, container start)."""
    lambda_memory_mb: PositiveInt | None = None
    """Default: ``compare.lambda_memory_mb``, else ``memory_mb``."""
    lambda_arch: str = "x86"

    @model_validator(mode="after")
    def _fargate_size(self) -> Batch:
        check_fargate_size(self.fargate_vcpu, self.fargate_memory_gb)
        return self


class SimulationSpec(_Spec):
    name: str = "simulation"
    days: PositiveInt = 30
    """Days simulated; costs are also given per 30-day month."""
    memory_mb: PositiveInt = 1024
    max_concurrency: PositiveInt = 20
    provisioned_concurrency: NonNegativeInt = 0
    cold_start_s: NonNegativeFloat = 1.0
    """How long a cold start takes (ModelSetupTime); spent waiting, not billed by serverless."""
    cold_start_empirical_s: list[PositiveFloat] | None = None
    """Measured cold starts to draw from instead (their spread decides how often a hedge wins)."""
    model_latency: Latency = Field(default_factory=lambda: Latency(fixed_s=0.1))
    bytes_in: NonNegativeInt = 0
    """Request payload size, for the data-processed charge."""
    bytes_out: NonNegativeInt = 0
    traffic: Traffic
    keep_alive: KeepAlive = Field(default_factory=KeepAlive)
    compare: Compare = Field(default_factory=Compare)
    fleet: Fleet | None = None
    """Simulate this many endpoints sharing one machine instead of one endpoint."""
    batch: Batch | None = None
    """Also price the spec's requests as batch jobs (Batch Transform, Fargate, Lambda)."""
    prices: dict[str, object] = {}
    """Price overrides merged over the price table (e.g. the figures an article used)."""


def load_spec(path: Path | str) -> SimulationSpec:
    path = Path(path)
    text = path.read_text()
    data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    traffic = data.get("traffic", {})
    if traffic.get("timestamps_file") and not Path(traffic["timestamps_file"]).is_absolute():
        traffic["timestamps_file"] = str(path.parent / traffic["timestamps_file"])
    return SimulationSpec.model_validate(data)
