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
