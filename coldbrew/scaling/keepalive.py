"""Keep-alive policies: how long a variant's environments are kept after it goes idle.

Policies are pure objects: the pool (live, on the real clock) and the cost simulator (under a
virtual clock) feed them the same events and ask the same question, so both make the same
decisions. Times are seconds on whatever clock the caller uses.

Events, per variant:
- ``on_idle(t)``: the variant has just finished its last in-flight invocation;
- ``on_arrival(t)``: an invocation arrives (the idle time it ends is ``t`` minus the last idle).

Decision: ``windows(now)`` gives a :class:`KeepAliveWindows` measured from the moment the variant
went idle: release every environment (beyond the provisioned minimum) at once, pre-warm one
environment ``prewarm_s`` later, and keep it until ``prewarm_s + keepalive_s``. A fixed idle
timeout is ``prewarm_s = 0, keepalive_s = timeout``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class KeepAliveWindows:
    prewarm_s: float
    """How long after going idle to (re)start one environment; 0 keeps environments from the start."""
    keepalive_s: float
    """How long, after the pre-warm point, environments are kept before they are released."""


class KeepAlivePolicy(Protocol):
    name: str

    def on_arrival(self, t: float) -> None: ...

    def on_idle(self, t: float) -> None: ...

    def windows(self, now: float) -> KeepAliveWindows: ...


class FixedKeepAlive:
    """SageMaker's behaviour: an idle environment is released after a fixed idle timeout."""

    name = "fixed"

    def __init__(self, idle_timeout_s: float) -> None:
        self.idle_timeout_s = idle_timeout_s

    def on_arrival(self, t: float) -> None:
        return None

    def on_idle(self, t: float) -> None:
        return None

    def windows(self, now: float) -> KeepAliveWindows:
        return KeepAliveWindows(prewarm_s=0.0, keepalive_s=self.idle_timeout_s)


# --- hybrid histogram policy ----------------------------------------------------------------------
#
# After the hybrid histogram policy of "Serverless in the Wild" (Shahrad et al., USENIX ATC 2020),
# as a pure object: it only sees the events above and the times they carry, keeps no wall clock,
# draws no random numbers and does no I/O, so the pool and the simulator decide alike.


@dataclass(frozen=True)
class HistogramDecision:
    """What :meth:`HybridHistogramKeepAlive.decision` decided, with every number it used.

    Exported so that a pool can publish them as metrics, as Knative's decider does.
    """

    windows: KeepAliveWindows
    reason: str
    """``"histogram"``, or why it fell back to the fixed timeout: ``"too_few_samples"``,
    ``"out_of_range"`` or ``"not_representative"``."""
    samples: int
    """Idle times in the sample window, in range or not."""
    out_of_range: int
    """Of those, idle times at or beyond the histogram's range."""
    cv: float | None
    """Coefficient of variation of the bin counts (see the class docstring); None if not computed."""
    head_bin: int | None
    tail_bin: int | None


class HybridHistogramKeepAlive:
    """Learns a variant's idle-time distribution and keeps environments only when it predicts use.

    An idle time (IT) runs from ``on_idle(t0)`` (the variant finished its last in-flight
    invocation) to the next ``on_arrival(t1)``: ``IT = t1 - t0``. Arrivals while invocations are in
    flight follow no ``on_idle`` and record nothing. The last ``max_samples`` ITs are kept
    (a count window rather than a time decay: counts stay integers, so the percentiles and the CV
    below are exact and a decision can be reproduced from those ITs alone); those below
    ``range_s`` go into ``range_s / bin_s`` bins of width ``bin_s``, the rest are counted as out of
    range.

    Decision rule (:meth:`windows`). With ``n`` in-range ITs and bin counts ``c_i`` over ``B`` bins:

    1. Fewer than ``min_samples`` ITs in the window: fixed fallback.
    2. More than ``max_out_of_range_fraction`` of them out of range: fixed fallback (the paper
       forecasts those with ARIMA; here a cold start after more than ``range_s`` idle is cheap
       enough, and the fixed timeout misses such ITs as well).
    3. The histogram is *representative* only if its ITs are concentrated: the coefficient of
       variation of the bin counts is at least ``cv_threshold``; otherwise fixed fallback. The CV is
       computed from ``S = (sum c_i^2 - n) / (n (n - 1))``, the unbiased estimate of
       ``sum p_i^2`` for bin probabilities ``p_i``, as ``CV = sqrt(max(0, B S - 1))``. For many ITs
       this is the paper's CV of the bin counts; unlike the raw CV it does not call a handful of
       ITs in separate bins peaked (10 ITs in 10 of 360 bins have a raw CV of 5.9 but ``S = 0``).
       A histogram uniform over ``k`` of ``B`` bins has ``CV = sqrt(B / k - 1)``, so the default
       threshold 2 asks for the ITs to sit in at most about a fifth of the bins (72 bins = 12 min
       with the defaults); an exponential (Poisson arrivals) with mean ``m`` has
       ``CV ~ sqrt(B bin_s / (2 m) - 1)``, which passes only for ``m`` below ~1/10 of the range.
    4. Otherwise: the head is the bin holding the ``head_percentile``-th percentile IT, the tail
       the bin holding the ``tail_percentile``-th one (the bin where the cumulative count first
       reaches ``ceil(p n / 100)``). The head is rounded down to its bin's lower edge and the tail
       up to its bin's upper edge, then::

           prewarm_s   = head_lower * (1 - margin)            (0 if the head is the first bin)
           keepalive_s = tail_upper * (1 + margin) - prewarm_s

       so an environment exists from ``head_lower (1 - margin)`` to ``tail_upper (1 + margin)``
       after going idle. By construction fewer than ``head_percentile`` % of the learned ITs fall
       before that window and at most ``100 - tail_percentile`` % after it.

    Fixed fallback is ``KeepAliveWindows(0, fallback_idle_timeout_s)``, i.e. :class:`FixedKeepAlive`.

    Example:
        ``bin_s=10``: 20 ITs, 1 in bin 1 ([10, 20) s), 17 in bin 2 ([20, 30) s), 2 in bin 4
        ([40, 50) s), with 10 bins (``range_s=100``). ``S = (1 + 289 + 4 - 20) / (20 * 19) = 0.721``,
        ``CV = sqrt(10 * 0.721 - 1) = 2.49 >= 2``: representative. Head: rank
        ``ceil(5 * 20 / 100) = 1`` is in bin 1, lower edge 10 s; tail: rank
        ``ceil(99 * 20 / 100) = 20`` is in bin 4, upper edge 50 s. ``prewarm_s = 10 * 0.9 = 9``,
        ``keepalive_s = 50 * 1.1 - 9 = 46``: one environment from 9 s to 55 s after going idle.
        With the defaults and an invocation every 600 s (ITs of 592-604 s, bins 59 and 60):
        ``prewarm_s = 590 * 0.9 = 531``, ``keepalive_s = 610 * 1.1 - 531 = 140``, an environment
        from 531 s to 671 s, against 600 s held per period by a fixed 900 s timeout.

    Args:
        fallback_idle_timeout_s: The fixed idle timeout used whenever the histogram is not trusted.
        bin_s: Bin width. The paper uses 1-minute bins over 4 hours (240 bins) for Azure
            Functions. Coldbrew's default idle timeout is 300 s and its environments are local
            processes that start in seconds, so 10-second bins (about 3% of that timeout, against
            20% for 1-minute bins) give windows fine enough to matter, while ``range_s=3600``
            keeps 360 bins, the paper's order of size, so the CV threshold keeps its meaning and a
            few hundred ITs fill the histogram (1-second bins would leave 3600 bins mostly empty).
        range_s: Histogram range, a whole number of bins. One hour is 12 times the default
            timeout; an IT longer than that costs at most one cold start an hour, which the fixed
            timeout pays too.
        head_percentile: Percentile (0-100) of ITs that sets the pre-warm point.
        tail_percentile: Percentile (0-100) of ITs that sets the end of the keep-alive.
        margin: Fraction by which the pre-warm point is moved earlier and the end later.
        min_samples: ITs needed in the window before the histogram is used at all.
        cv_threshold: Minimum CV of the bin counts for the histogram to be representative.
        max_out_of_range_fraction: Largest fraction of ITs beyond ``range_s`` still trusted.
        max_samples: How many of the most recent ITs are kept (None: all of them).

    Raises:
        ValueError: If a parameter is out of its domain.
    """

    name = "adaptive"

    def __init__(
        self,
        fallback_idle_timeout_s: float,
        *,
        bin_s: float = 10.0,
        range_s: float = 3600.0,
        head_percentile: float = 5.0,
        tail_percentile: float = 99.0,
        margin: float = 0.1,
        min_samples: int = 10,
        cv_threshold: float = 2.0,
        max_out_of_range_fraction: float = 0.1,
        max_samples: int | None = 1000,
    ) -> None:
        if not fallback_idle_timeout_s >= 0:
            raise ValueError(f"fallback_idle_timeout_s must be >= 0, got {fallback_idle_timeout_s}")
        if not bin_s > 0:
            raise ValueError(f"bin_s must be > 0, got {bin_s}")
        n_bins = round(range_s / bin_s)
        if n_bins < 1 or abs(n_bins * bin_s - range_s) > 1e-9 * range_s:
            raise ValueError(f"range_s ({range_s}) must be a positive whole number of bins of {bin_s} s")
        if not 0 <= head_percentile <= tail_percentile <= 100:
            raise ValueError(
                "need 0 <= head_percentile <= tail_percentile <= 100, "
                f"got {head_percentile} and {tail_percentile}"
            )
        if not 0 <= margin < 1:
            raise ValueError(f"margin must be in [0, 1), got {margin}")
        if min_samples < 2:
            raise ValueError(f"min_samples must be >= 2, got {min_samples}")
        if not cv_threshold >= 0:
            raise ValueError(f"cv_threshold must be >= 0, got {cv_threshold}")
        if not 0 <= max_out_of_range_fraction <= 1:
            raise ValueError(f"max_out_of_range_fraction must be in [0, 1], got {max_out_of_range_fraction}")
        if max_samples is not None and max_samples < min_samples:
            raise ValueError(f"max_samples ({max_samples}) must be >= min_samples ({min_samples})")
        self.fallback_idle_timeout_s = fallback_idle_timeout_s
        self.bin_s = bin_s
        self.range_s = range_s
        self.n_bins = n_bins
        self.head_percentile = head_percentile
        self.tail_percentile = tail_percentile
        self.margin = margin
        self.min_samples = min_samples
        self.cv_threshold = cv_threshold
        self.max_out_of_range_fraction = max_out_of_range_fraction
        self.max_samples = max_samples
        self._fallback = KeepAliveWindows(prewarm_s=0.0, keepalive_s=fallback_idle_timeout_s)
        self._counts = [0] * n_bins
        self._out_of_range = 0
        self._recent: deque[int] = deque()  # bin index per IT, oldest first; n_bins = out of range
        self._idle_since: float | None = None
        self._decision: HistogramDecision | None = None

    # --- events -----------------------------------------------------------------------------------

    def on_idle(self, t: float) -> None:
        self._idle_since = t

    def on_arrival(self, t: float) -> None:
        if self._idle_since is None:  # invocations in flight: no idle time ends here
            return
        self.record_idle_time(max(0.0, t - self._idle_since))
        self._idle_since = None

    def record_idle_time(self, it_s: float) -> None:
        """Adds one idle time directly (what ``on_idle(t); on_arrival(t + it_s)`` does)."""
        index = min(int(it_s // self.bin_s), self.n_bins - 1) if it_s < self.range_s else self.n_bins
        self._recent.append(index)
        self._count(index, +1)
        if self.max_samples is not None and len(self._recent) > self.max_samples:
            self._count(self._recent.popleft(), -1)
        self._decision = None

    def _count(self, index: int, delta: int) -> None:
        if index == self.n_bins:
            self._out_of_range += delta
        else:
            self._counts[index] += delta

    # --- decision ---------------------------------------------------------------------------------

    def windows(self, now: float) -> KeepAliveWindows:
        """The windows to apply from the moment the variant goes idle (see the class docstring).

        Args:
            now: The caller's clock; the decision depends only on the recorded idle times.

        Returns:
            The histogram's windows, or ``KeepAliveWindows(0, fallback_idle_timeout_s)``.
        """
        return self.decision(now).windows

    def decision(self, now: float) -> HistogramDecision:
        """Like :meth:`windows`, with the reason and the numbers behind it."""
        if self._decision is None:
            self._decision = self._decide()
        return self._decision

    def _decide(self) -> HistogramDecision:
        samples = len(self._recent)
        oor = self._out_of_range

        def fallback(reason: str, cv: float | None = None) -> HistogramDecision:
            return HistogramDecision(self._fallback, reason, samples, oor, cv, None, None)

        if samples < self.min_samples:
            return fallback("too_few_samples")
        n = samples - oor
        if oor > self.max_out_of_range_fraction * samples or n < 2:
            return fallback("out_of_range")
        cv = self._cv(n)
        if cv < self.cv_threshold:
            return fallback("not_representative", cv)
        head = self._percentile_bin(self.head_percentile, n)
        tail = self._percentile_bin(self.tail_percentile, n)
        prewarm_s = 0.0 if head == 0 else head * self.bin_s * (1 - self.margin)
        keepalive_s = (tail + 1) * self.bin_s * (1 + self.margin) - prewarm_s
        return HistogramDecision(
            KeepAliveWindows(prewarm_s, keepalive_s), "histogram", samples, oor, cv, head, tail
        )

    def _cv(self, n: int) -> float:
        """CV of the bin counts, from the unbiased estimate of the sum of squared bin probabilities."""
        sum_p2 = (sum(c * c for c in self._counts) - n) / (n * (n - 1))
        return math.sqrt(max(0.0, self.n_bins * sum_p2 - 1.0))

    def _percentile_bin(self, percentile: float, n: int) -> int:
        """The bin where the cumulative count first reaches ``ceil(percentile * n / 100)`` (at least 1)."""
        rank = max(1, math.ceil(percentile * n / 100))
        cumulative = 0
        for index, count in enumerate(self._counts):
            cumulative += count
            if cumulative >= rank:
                return index
        return self.n_bins - 1  # unreachable: the counts sum to n >= rank


def make_policy(name: str, idle_timeout_s: float) -> KeepAlivePolicy:
    """A fresh keep-alive policy for one variant.

    Args:
        name: ``"fixed"`` (SageMaker's fixed idle timeout) or ``"adaptive"``
            (:class:`HybridHistogramKeepAlive`, falling back to that timeout).
        idle_timeout_s: The fixed idle timeout.

    Returns:
        A new policy instance; give each variant its own.

    Raises:
        ValueError: If ``name`` is not one of the accepted names.
    """
    if name == FixedKeepAlive.name:
        return FixedKeepAlive(idle_timeout_s)
    if name == HybridHistogramKeepAlive.name:
        return HybridHistogramKeepAlive(idle_timeout_s)
    raise ValueError(f"unknown keep-alive policy {name!r}; accepted names: {', '.join(POLICY_NAMES)}")


POLICY_NAMES: tuple[str, ...] = (FixedKeepAlive.name, HybridHistogramKeepAlive.name)
"""The names :func:`make_policy` accepts."""
