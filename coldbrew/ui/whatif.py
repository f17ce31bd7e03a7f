"""The cost page's what-if form: a traffic pattern through the simulator (``coldbrew simulate``).

The form is a small subset of a simulation spec — one endpoint, one daily window of traffic — so it
answers in about a second; anything larger is for ``coldbrew simulate`` with a spec file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from coldbrew.metering.prices import PriceTable
from coldbrew.simulate import simulate
from coldbrew.simulate.report import build_report
from coldbrew.simulate.spec import SimulationSpec

MAX_PER_DAY = 100_000
"""Most invocations a day the form simulates (a day of 100,000 takes about two seconds)."""


class WhatIf(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    memory_mb: int = Field(default=2048, ge=1024, le=6144, multiple_of=1024)
    max_concurrency: int = Field(default=10, ge=1, le=200)
    provisioned_concurrency: int = Field(default=0, ge=0, le=200)
    per_day: int = Field(default=10_000, ge=0, le=MAX_PER_DAY)
    start: str = Field(default="00:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    end: str = Field(default="24:00", pattern=r"^(([01]\d|2[0-3]):[0-5]\d|24:00)$")
    model_latency_ms: float = Field(default=50.0, gt=0, le=60_000)
    cold_start_ms: float = Field(default=500.0, ge=0, le=600_000)
    idle_timeout_s: float = Field(default=300.0, gt=0, le=86_400)
    days: int = Field(default=30, ge=1, le=30)

    @model_validator(mode="after")
    def _window(self) -> WhatIf:
        if self.end <= self.start:
            raise ValueError(f"the traffic window {self.start}-{self.end} ends before it starts")
        if self.provisioned_concurrency > self.max_concurrency:
            raise ValueError("provisioned concurrency cannot exceed max concurrency")
        return self

    def spec(self) -> SimulationSpec:
        return SimulationSpec.model_validate(
            {
                "name": "what-if",
                "days": self.days,
                "memory_mb": self.memory_mb,
                "max_concurrency": self.max_concurrency,
                "provisioned_concurrency": self.provisioned_concurrency,
                "cold_start_s": self.cold_start_ms / 1000,
                "model_latency": {"fixed_s": self.model_latency_ms / 1000},
                "traffic": {"windows": [{"start": self.start, "end": self.end, "per_day": self.per_day}]},
                "keep_alive": {"idle_timeout_s": self.idle_timeout_s},
                "compare": {"lambda_archs": []},
            }
        )


@dataclass(frozen=True, slots=True)
class Option:
    option: str
    kind: str
    cost_per_month: float
    cost_per_million: float | None
    p50_ms: float | None
    p99_ms: float | None


@dataclass(frozen=True, slots=True)
class WhatIfResult:
    invocations: int
    served: int
    throttled: int
    cold_starts: int
    peak_environments: int
    options: list[Option]
    break_even_per_day: float | None
    """Invocations a day above which the always-on instance is cheaper than serverless."""
    currency: str


def run(what: WhatIf, prices: PriceTable) -> WhatIfResult:
    """Simulate the pattern and price it (CPU-bound: call in a thread)."""
    report: dict[str, Any] = build_report(simulate(what.spec()), prices)
    options = [
        Option(
            a["option"],
            a["kind"],
            float(a["cost_per_month"]),
            a["cost_per_million"],
            a["latency"].get("p50_ms"),
            a["latency"].get("p99_ms"),
        )
        for a in report["alternatives"]
    ]
    serverless = next(o for o in options if o.kind == "serverless")
    instance = next((o for o in options if o.kind == "instance"), None)
    break_even = None
    if instance is not None and serverless.cost_per_million:
        # Serverless cost grows with invocations; the instance's does not.
        break_even = instance.cost_per_month / 30 / serverless.cost_per_million * 1_000_000
    return WhatIfResult(
        invocations=report["invocations"],
        served=report["served"],
        throttled=report["throttled"],
        cold_starts=report["cold_starts"],
        peak_environments=report["peak_environments"],
        options=options,
        break_even_per_day=break_even,
        currency=prices.currency,
    )
