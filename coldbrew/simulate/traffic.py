"""Arrival times, one simulated day at a time."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from coldbrew.simulate.spec import DAY_S, Latency, SimulationSpec


@dataclass(frozen=True)
class DayTraffic:
    arrivals: np.ndarray
    """Sorted seconds after the day's start."""
    key: tuple[object, ...] | None
    """Equal keys mean equal arrivals: a day the simulator has seen may be reused. None: unique."""


def _ceil(x: float) -> int:
    # d * count is exact in real numbers; keep float noise (149999.99999997) from moving a boundary.
    return math.ceil(round(x, 6))


def day_traffic(spec: SimulationSpec, day: int) -> DayTraffic:
    traffic = spec.traffic
    parts: list[np.ndarray] = []
    key: list[object] = []
    for index, window in enumerate(traffic.windows):
        length = window.end_s - window.start_s
        count = window.per_occurrence
        if traffic.arrivals == "uniform":
            # Arrival k (counted over every occurrence of the window) is at window time
            # (k + 1/2) / count of an occurrence: spacing is exact and whole-run counts are exact.
            first, last = _ceil(day * count - 0.5), _ceil((day + 1) * count - 0.5)
            k = np.arange(first, last, dtype=np.float64)
            parts.append(window.start_s + (k + 0.5) * (length / count) - day * length)
            key.append((index, round(first - day * count, 6), last - first))
        else:
            rng = np.random.default_rng([traffic.seed, day, index])
            n = int(rng.poisson(count))
            parts.append(window.start_s + np.sort(rng.uniform(0.0, length, n)))
    arrivals = np.sort(np.concatenate(parts)) if parts else np.empty(0)
    return DayTraffic(arrivals, tuple(key) if traffic.arrivals == "uniform" else None)


def trace_traffic(path: str) -> tuple[np.ndarray, float, np.ndarray | None]:
    """Arrivals from a file of timestamps, relative to the first; the trace's length in seconds; and,
    when every line has a second column, each invocation's model latency in seconds (a recorded
    trace replays the latencies that were measured, in arrival order)."""
    rows = [
        line.split()
        for line in Path(path).read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    arrivals = np.asarray([float(r[0]) for r in rows], dtype=np.float64)
    recorded = np.asarray([float(r[1]) for r in rows]) if rows and all(len(r) > 1 for r in rows) else None
    order = np.argsort(arrivals, kind="stable")
    arrivals = arrivals[order]
    if recorded is not None:
        recorded = recorded[order]
    if arrivals.size == 0:
        return arrivals, 0.0, recorded
    arrivals -= arrivals[0]
    return arrivals, float(arrivals[-1]), recorded


def latencies(latency: Latency, n: int, seed: object) -> np.ndarray:
    if latency.fixed_s is not None:
        return np.full(n, latency.fixed_s)
    rng = np.random.default_rng(abs(hash(seed)) % (2**63))
    if latency.empirical_s is not None:
        return rng.choice(np.asarray(latency.empirical_s), size=n, replace=True)
    assert latency.lognormal_median_s is not None
    return latency.lognormal_median_s * np.exp(rng.normal(0.0, latency.lognormal_sigma, n))


__all__ = ["DAY_S", "DayTraffic", "day_traffic", "latencies", "trace_traffic"]
