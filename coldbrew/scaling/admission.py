"""SageMaker Serverless admission: what happens to an invocation that arrives at a variant.

A pure function of the variant's counts, used by the live pool and by the cost simulator alike.
"""

from __future__ import annotations

from enum import Enum


class Admission(Enum):
    WARM = "warm"
    """An idle environment takes it."""
    COLD_START = "cold_start"
    """A new environment is started for it (it may still be served by one that frees up first)."""
    WAIT = "wait"
    """Every environment the limit allows exists or is starting: it takes the first one free."""
    THROTTLE = "throttle"
    """MaxConcurrency invocations are already running or waiting: ThrottlingException."""


def admit(
    *,
    idle: int,
    live: int,
    starting: int,
    concurrent: int,
    max_concurrency: int,
    max_starting: int | None = None,
) -> Admission:
    """Decide for one arriving invocation.

    Args:
        idle: environments ready and serving nothing.
        live: environments that exist (idle or busy).
        starting: environments being started.
        concurrent: invocations being served or waiting for an environment, before this one.
        max_concurrency: the variant's MaxConcurrency.
        max_starting: at most this many of its environments start at once (None: no limit). Starts
            beyond the machine's cores only slow one another down (they are CPU-bound: a fork, a
            model load): in a burst from zero, 20 parallel starts on 2 cores made the first one
            ready after ~200 ms, and the requests piling up meanwhile reached MaxConcurrency.
    """
    if idle > 0:
        return Admission.WARM
    if concurrent >= max_concurrency:
        return Admission.THROTTLE
    if live + starting >= max_concurrency:
        return Admission.WAIT
    if max_starting is not None and starting >= max_starting:
        return Admission.WAIT
    return Admission.COLD_START
