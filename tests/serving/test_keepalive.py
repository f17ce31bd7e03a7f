"""Keep-alive policies under a virtual clock: no processes, no sleeping, no wall clock.

Traces run through the scaling core itself, driven by the simulator's discrete-event loop with
environments that start instantly, so these figures are what the live pools and the simulator
decide. Counted: cold starts, and the environment-seconds held while no invocation runs (busy time
is the same under every keep-alive policy).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import pytest

from coldbrew.scaling.keepalive import (
    FixedKeepAlive,
    HybridHistogramKeepAlive,
    KeepAlivePolicy,
    KeepAliveWindows,
    make_policy,
)
from coldbrew.scaling.messages import PoolConfig
from coldbrew.simulate.engine import MachineSim

# --- driver ---------------------------------------------------------------------------------------


@dataclass
class Replay:
    cold_starts: int = 0
    idle_env_s: float = 0.0
    """Environment-seconds held while no invocation ran, including after the last invocation."""
    windows: list[KeepAliveWindows] = field(default_factory=list)
    """The windows the policy gave each time the variant went idle, in order."""


class Recording:
    """Passes a policy's answers through, noting the windows it gives as the variant goes idle."""

    def __init__(self, policy: KeepAlivePolicy, windows: list[KeepAliveWindows]) -> None:
        self.policy = policy
        self.name = policy.name
        self.noted = windows

    def on_arrival(self, t: float) -> None:
        self.policy.on_arrival(t)

    def on_idle(self, t: float) -> None:
        self.policy.on_idle(t)
        self.noted.append(self.policy.windows(t))

    def windows(self, now: float) -> KeepAliveWindows:
        return self.policy.windows(now)


def replay(policy: KeepAlivePolicy, arrivals: list[float], duration_s: float) -> Replay:
    """Runs sorted arrival times, each invocation taking ``duration_s``, through the scaling core."""
    result = Replay()
    sim = MachineSim()
    config = PoolConfig(
        endpoint="e", variant="v", serverless=True, memory_mb=1024, max_concurrency=1000, min_environments=0
    )
    pool = sim.add_variant(config, lambda: 0.0)
    sim.core.pools[pool].policy = Recording(policy, result.windows)
    for t in arrivals:
        sim.arrive(pool, t, duration_s)
    # Long enough after the last invocation for any window to end.
    totals = sim.close_period(arrivals[-1] + duration_s + 10 * 86400.0)[pool]
    assert totals.served == len(arrivals)
    assert not sim.core.pools[pool].envs  # everything was released in the end
    result.cold_starts = totals.cold_starts
    result.idle_env_s = totals.held_mb_s / config.memory_mb - len(arrivals) * duration_s
    return result


def jitter(i: int) -> float:
    """Deterministic jitter in whole seconds, cycling through -3, 0, 3, -1, 2, -2, 1."""
    return float((i * 3) % 7 - 3)


def periodic_trace(n: int = 100, period_s: float = 600.0) -> list[float]:
    return [period_s * i + jitter(i) for i in range(n)]


def bursty_trace(
    bursts: int = 30, gap_s: float = 1200.0, size: int = 5, spacing_s: float = 3.0
) -> list[float]:
    return [gap_s * b + jitter(b) + spacing_s * k for b in range(bursts) for k in range(size)]


def poisson_trace(mean_s: float, n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    t, out = 0.0, []
    for _ in range(n):
        out.append(t)
        t += rng.expovariate(1.0 / mean_s)
    return out


def fallbacks(result: Replay, timeout_s: float) -> int:
    return sum(w == KeepAliveWindows(0.0, timeout_s) for w in result.windows)


# --- traces ---------------------------------------------------------------------------------------


def test_periodic_learns_the_period_and_prewarms_just_before_each_arrival() -> None:
    # An invocation every 600 s (+-3 s), running 2 s: idle times 592-604 s, in bins 59 and 60.
    arrivals = periodic_trace()
    fixed_900 = replay(FixedKeepAlive(900.0), arrivals, 2.0)
    adaptive_900 = replay(HybridHistogramKeepAlive(900.0), arrivals, 2.0)

    # The first 10 idle periods use the fallback (fewer than min_samples=10 idle times), then
    # prewarm = 590 * 0.9 = 531 s and keepalive = 610 * 1.1 - 531 = 140 s: warm from 531 to 671 s.
    assert fallbacks(adaptive_900, 900.0) == 10
    assert all(w == KeepAliveWindows(531.0, pytest.approx(140.0)) for w in adaptive_900.windows[10:])

    # Only the very first arrival is cold, for both.
    assert fixed_900.cold_starts == 1
    assert adaptive_900.cold_starts == 1
    # The 99 idle times sum to a_99 - a_0 - 99 * 2 = 59400 + 3 - 198 = 59205 s. Fixed holds all of
    # them plus 900 s at the end. Adaptive holds the first 10 in full (5982 s), then it - 531 for
    # the other 89 (53223 - 89 * 531 = 5964 s), plus 140 s at the end.
    assert fixed_900.idle_env_s == pytest.approx(60105.0)
    assert adaptive_900.idle_env_s == pytest.approx(12086.0)
    assert adaptive_900.idle_env_s < 0.21 * fixed_900.idle_env_s

    # Against coldbrew's default 300 s timeout, which misses every 600 s arrival, the adaptive
    # policy only pays the cold starts of its warm-up.
    fixed_300 = replay(FixedKeepAlive(300.0), arrivals, 2.0)
    adaptive_300 = replay(HybridHistogramKeepAlive(300.0), arrivals, 2.0)
    assert (fixed_300.cold_starts, adaptive_300.cold_starts) == (100, 11)
    assert fixed_300.idle_env_s == pytest.approx(99 * 300.0 + 300.0)
    assert adaptive_300.idle_env_s == pytest.approx(10 * 300.0 + 5964.0 + 140.0)


def test_bursty_keeps_through_the_gaps_instead_of_cold_starting_each_burst() -> None:
    # Bursts of 5 requests 3 s apart (1 s each) every 1200 s (+-3 s): 4 idle times of 2 s per
    # burst and one gap of 1181-1193 s. The head (5th percentile) is in the first bin, so there is
    # no pre-warm: keep-alive = 1200 * 1.1 = 1320 s covers the gaps.
    arrivals = bursty_trace()
    policy = HybridHistogramKeepAlive(900.0)
    adaptive = replay(policy, arrivals, 1.0)
    fixed_900 = replay(FixedKeepAlive(900.0), arrivals, 1.0)
    fixed_300 = replay(FixedKeepAlive(300.0), arrivals, 1.0)

    assert adaptive.windows[-1] == KeepAliveWindows(0.0, pytest.approx(1320.0))
    decision = policy.decision(0.0)
    assert (decision.reason, decision.head_bin, decision.tail_bin) == ("histogram", 0, 119)

    # Fixed timeouts (300 or 900 s) cold-start every burst; adaptive only the first one and the two
    # bursts after the gaps it saw while warming up.
    assert (fixed_300.cold_starts, fixed_900.cold_starts, adaptive.cold_starts) == (30, 30, 3)
    # The price: the gaps are held. 4 * 2 s inside each of 30 bursts = 240 s for every policy;
    # fixed adds 29 gaps * timeout + timeout at the end, adaptive 2 gaps * 900 s during warm-up,
    # the 27 later gaps in full, and 1320 s at the end.
    assert fixed_300.idle_env_s == pytest.approx(240.0 + 30 * 300.0)
    assert fixed_900.idle_env_s == pytest.approx(240.0 + 30 * 900.0)
    assert adaptive.idle_env_s == pytest.approx(35406.0)
    # About 300 environment-seconds more than fixed 900 s per cold start avoided.
    extra_env_s = adaptive.idle_env_s - fixed_900.idle_env_s
    per_avoided = extra_env_s / (fixed_900.cold_starts - adaptive.cold_starts)
    assert 300.0 < per_avoided < 305.0


def test_sparse_poisson_falls_back_to_the_fixed_timeout() -> None:
    # Poisson arrivals with a 1200 s mean spread the idle times over most of the 1 h range: the CV
    # of the bin counts stays below 2 (about sqrt(3600 / 2400 - 1) = 0.7 in expectation), so the
    # policy is the fixed timeout apart from a short stretch early on (idle periods 33-39, at 32-38
    # samples), when sampling noise briefly pushed the CV just over 2.
    arrivals = poisson_trace(1200.0, 300, seed=1)
    policy = HybridHistogramKeepAlive(300.0)
    adaptive = replay(policy, arrivals, 1.0)
    fixed = replay(FixedKeepAlive(300.0), arrivals, 1.0)

    assert fallbacks(adaptive, 300.0) == 293  # of 300 idle periods
    assert adaptive.windows[40:] == [KeepAliveWindows(0.0, 300.0)] * (len(adaptive.windows) - 40)
    assert policy.decision(0.0).reason == "not_representative"
    assert (fixed.cold_starts, adaptive.cold_starts) == (230, 225)
    assert fixed.idle_env_s == pytest.approx(78404.0, abs=1.0)
    assert adaptive.idle_env_s == pytest.approx(82312.5, abs=1.0)
    # No more cold starts than fixed, at under 6% more environment-seconds.
    assert adaptive.cold_starts <= fixed.cold_starts
    assert adaptive.idle_env_s < 1.06 * fixed.idle_env_s


def test_dense_poisson_keeps_about_the_tail_and_stays_within_the_stated_bound() -> None:
    # With a 60 s mean the idle times crowd into the first bins (CV ~5): the histogram is used, the
    # head is in the first bin (no pre-warm) and the keep-alive covers the 99th percentile
    # (tail bin 26, 270 * 1.1 = 297 s), i.e. it lands next to a fixed 300 s timeout. The stated
    # bound: when the histogram is used, an idle time is missed only if it is shorter than the
    # pre-warm point (under 5% of learned idle times, none here) or longer than the keep-alive
    # (at most 1%), so after the warm-up cold starts stay near 1% of arrivals whatever the fallback.
    # 11 arrivals come less than 1 s after the one before, while it still runs: each needs a second
    # environment, a cold start that no keep-alive policy avoids (fixed 900 s pays only those, bar
    # one, and the first), and the second environment is held for its keep-alive too.
    arrivals = poisson_trace(60.0, 1000, seed=2)
    adaptive = replay(HybridHistogramKeepAlive(900.0), arrivals, 1.0)
    fixed_300 = replay(FixedKeepAlive(300.0), arrivals, 1.0)
    fixed_900 = replay(FixedKeepAlive(900.0), arrivals, 1.0)

    assert fallbacks(adaptive, 900.0) == 10  # warm-up only
    assert adaptive.windows[-1] == KeepAliveWindows(0.0, pytest.approx(297.0))
    assert sum(b - a < 1.0 for a, b in zip(arrivals, arrivals[1:], strict=False)) == 11
    assert (fixed_300.cold_starts, fixed_900.cold_starts, adaptive.cold_starts) == (19, 11, 16)
    overlap_starts = fixed_900.cold_starts - 1
    assert adaptive.cold_starts - overlap_starts <= 1 + math.ceil(0.01 * len(arrivals))
    assert fixed_300.idle_env_s == pytest.approx(62410.8, abs=1.0)
    assert fixed_900.idle_env_s == pytest.approx(69418.1, abs=1.0)
    assert adaptive.idle_env_s == pytest.approx(62951.9, abs=1.0)


def test_medium_poisson_trades_like_a_longer_fixed_timeout() -> None:
    # A 300 s mean sits at the CV threshold (about sqrt(6 - 1) = 2.2): the histogram is used for
    # most idle periods, with a short pre-warm (head bin 1: 10 * 0.9 = 9 s) and a long keep-alive
    # (tail bin 137: 1380 * 1.1 - 9 = 1509 s). Against fixed 300 s it has 6x fewer cold starts for
    # 40% more environment-seconds; against fixed 900 s it is better on both. (One arrival comes
    # while the one before still runs: one cold start and one environment's keep-alive more for each.)
    arrivals = poisson_trace(300.0, 500, seed=3)
    adaptive = replay(HybridHistogramKeepAlive(300.0), arrivals, 1.0)
    adaptive_900 = replay(HybridHistogramKeepAlive(900.0), arrivals, 1.0)
    fixed_300 = replay(FixedKeepAlive(300.0), arrivals, 1.0)
    fixed_900 = replay(FixedKeepAlive(900.0), arrivals, 1.0)

    assert adaptive.windows[-1] == KeepAliveWindows(9.0, pytest.approx(1509.0))
    assert fallbacks(adaptive, 300.0) == 56  # of 499
    assert (fixed_300.cold_starts, adaptive.cold_starts) == (188, 32)
    assert fixed_300.idle_env_s == pytest.approx(96309.4, abs=1.0)
    assert adaptive.idle_env_s == pytest.approx(134948.5, abs=1.0)
    assert (fixed_900.cold_starts, adaptive_900.cold_starts) == (22, 18)
    assert fixed_900.idle_env_s == pytest.approx(142728.8, abs=1.0)
    assert adaptive_900.idle_env_s == pytest.approx(140756.6, abs=1.0)


# --- decision rule --------------------------------------------------------------------------------


def feed(policy: HybridHistogramKeepAlive, idle_times: list[float]) -> None:
    """Feeds idle times through the events, on a virtual clock."""
    t = 0.0
    for it in idle_times:
        policy.on_idle(t)
        policy.on_arrival(t + it)
        t += it + 1.0


def test_too_few_samples_gives_exactly_the_fixed_windows() -> None:
    policy = HybridHistogramKeepAlive(300.0)
    assert policy.windows(0.0) == KeepAliveWindows(0.0, 300.0) == FixedKeepAlive(300.0).windows(0.0)
    feed(policy, [600.0] * 9)
    assert policy.windows(1e6) == KeepAliveWindows(0.0, 300.0)
    assert (policy.decision(0.0).reason, policy.decision(0.0).samples) == ("too_few_samples", 9)
    # Arrivals while invocations are in flight (no on_idle before them) end no idle time.
    for t in range(100):
        policy.on_arrival(1e6 + t)
    assert policy.decision(0.0).samples == 9
    feed(policy, [600.0])  # all 10 in bin 60: prewarm 600 * 0.9 = 540, keepalive 610 * 1.1 - 540
    assert policy.windows(0.0) == KeepAliveWindows(540.0, pytest.approx(131.0))


def test_windows_of_a_hand_computed_histogram() -> None:
    # 10 bins of 10 s. 20 idle times: 1 in bin 1, 17 in bin 2, 2 in bin 4.
    # S = (1 + 289 + 4 - 20) / (20 * 19) = 0.7211, CV = sqrt(10 * 0.7211 - 1) = 2.492.
    # Head rank ceil(5 * 20 / 100) = 1 -> bin 1, lower edge 10; tail rank ceil(99 * 20 / 100) = 20
    # -> bin 4, upper edge 50. prewarm = 10 * 0.9 = 9, keepalive = 50 * 1.1 - 9 = 46.
    policy = HybridHistogramKeepAlive(300.0, bin_s=10.0, range_s=100.0)
    feed(policy, [15.0] + [20.0, 22.5, 25.0, 29.9] * 4 + [21.0, 40.0, 49.5])
    decision = policy.decision(0.0)
    assert decision.reason == "histogram"
    assert (decision.head_bin, decision.tail_bin, decision.samples, decision.out_of_range) == (1, 4, 20, 0)
    assert decision.cv == pytest.approx(math.sqrt(10 * 274 / 380 - 1))
    assert decision.windows == KeepAliveWindows(pytest.approx(9.0), pytest.approx(46.0))


def test_head_in_the_first_bin_disables_the_prewarm() -> None:
    # 19 idle times in bin 0 and one in bin 3: head bin 0, tail rank 20 -> bin 3, upper edge 40.
    policy = HybridHistogramKeepAlive(300.0, bin_s=10.0, range_s=100.0)
    feed(policy, [1.0] * 19 + [35.0])
    assert policy.windows(0.0) == KeepAliveWindows(0.0, pytest.approx(44.0))


def test_flat_histogram_is_not_representative() -> None:
    # Two idle times in each of 10 bins: S = (40 - 20) / 380, CV^2 = 10 * S - 1 < 0 -> CV 0.
    policy = HybridHistogramKeepAlive(300.0, bin_s=10.0, range_s=100.0)
    feed(policy, [10.0 * b + 5.0 for b in range(10)] * 2)
    decision = policy.decision(0.0)
    assert (decision.reason, decision.cv) == ("not_representative", 0.0)
    assert decision.windows == KeepAliveWindows(0.0, 300.0)


def test_sparse_distinct_samples_are_not_called_peaked() -> None:
    # 10 idle times in 10 distinct bins of 360: the raw CV of the counts would be sqrt(35) = 5.9.
    policy = HybridHistogramKeepAlive(300.0)
    feed(policy, [100.0 + 300.0 * i for i in range(10)])
    assert policy.decision(0.0).reason == "not_representative"


def test_too_many_idle_times_out_of_range_fall_back() -> None:
    policy = HybridHistogramKeepAlive(300.0, bin_s=10.0, range_s=100.0)
    feed(policy, [50.0] * 18 + [100.0, 5000.0])  # 2 of 20 out of range: 10% is still trusted
    assert policy.decision(0.0).reason == "histogram"
    assert policy.windows(0.0) == KeepAliveWindows(45.0, pytest.approx(21.0))
    feed(policy, [7200.0])  # 3 of 21
    decision = policy.decision(0.0)
    assert (decision.reason, decision.out_of_range) == ("out_of_range", 3)
    assert decision.windows == KeepAliveWindows(0.0, 300.0)


def test_only_the_most_recent_samples_count() -> None:
    policy = HybridHistogramKeepAlive(300.0, min_samples=10, max_samples=20)
    feed(policy, [600.0] * 20)
    assert policy.windows(0.0) == KeepAliveWindows(540.0, pytest.approx(131.0))
    feed(policy, [60.0] * 20)  # the 600 s idle times have all left the window
    assert policy.decision(0.0).samples == 20
    assert policy.windows(0.0) == KeepAliveWindows(54.0, pytest.approx(23.0))


def test_decisions_are_deterministic_and_ignore_now() -> None:
    a, b = HybridHistogramKeepAlive(300.0), HybridHistogramKeepAlive(300.0)
    trace = poisson_trace(60.0, 200, seed=7)
    assert replay(a, trace, 1.0) == replay(b, trace, 1.0)
    assert a.windows(0.0) == a.windows(1e9) == b.windows(-5.0)


def test_invalid_parameters_are_rejected() -> None:
    with pytest.raises(ValueError, match="whole number of bins"):
        HybridHistogramKeepAlive(300.0, bin_s=7.0, range_s=100.0)
    with pytest.raises(ValueError, match="percentile"):
        HybridHistogramKeepAlive(300.0, head_percentile=50.0, tail_percentile=10.0)
    with pytest.raises(ValueError, match="margin"):
        HybridHistogramKeepAlive(300.0, margin=1.0)
    with pytest.raises(ValueError, match="max_samples"):
        HybridHistogramKeepAlive(300.0, min_samples=10, max_samples=5)


# --- factory --------------------------------------------------------------------------------------


def test_make_policy_builds_a_fresh_policy_per_call() -> None:
    fixed = make_policy("fixed", 120.0)
    assert isinstance(fixed, FixedKeepAlive)
    assert (fixed.name, fixed.windows(0.0)) == ("fixed", KeepAliveWindows(0.0, 120.0))
    adaptive = make_policy("adaptive", 120.0)
    assert isinstance(adaptive, HybridHistogramKeepAlive)
    assert (adaptive.name, adaptive.fallback_idle_timeout_s) == ("adaptive", 120.0)
    assert make_policy("adaptive", 120.0) is not adaptive


@pytest.mark.parametrize("name", ["hybrid", "Adaptive", "", "fixed "])
def test_make_policy_rejects_unknown_names(name: str) -> None:
    with pytest.raises(ValueError, match="accepted names: fixed, adaptive") as info:
        make_policy(name, 300.0)
    assert repr(name) in str(info.value)
