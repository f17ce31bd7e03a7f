"""Where a cold start's time goes: the steps of one environment's start, on one clock.

The gateway reads ``time.monotonic()`` around its own steps (asking for the worker, limiting its
memory, reading its status), the worker around its own (``WorkerStages``); Linux's CLOCK_MONOTONIC
is shared by every process on the machine, so the two sets line up. ``breakdown`` turns them, with
the invocation's arrival and its answer, into the stages ``bench/coldstart.py`` reports and the
server logs for every cold start.
"""

from __future__ import annotations

from dataclasses import dataclass

from coldbrew.worker.messages import WorkerStages


@dataclass(frozen=True)
class StartTrace:
    requested: float
    """The gateway asks the zygote to fork (or starts a fresh interpreter)."""
    launched: float
    """The zygote answered with the pid (or the interpreter was started)."""
    limited: float
    """The worker is in its memory cgroup."""
    reported: float
    """The gateway has read the worker's ready status."""
    worker: WorkerStages | None
    """The worker's own readings; None from a worker that does not send them (a user's server)."""


STAGES = ("admit", "fork", "prepare", "model_load", "listen", "limit_wait", "report", "first_invoke")
"""The cold start's path, one after another: their sum is ``total``."""


def breakdown(trace: StartTrace, arrived: float, answered: float) -> dict[str, float]:
    """Milliseconds per stage of a cold start whose invocation arrived at ``arrived`` and was answered
    at ``answered`` (both ``time.monotonic()``).

    The stages of ``STAGES`` follow one another: admit, arrival to the fork's request (the scaling
    core's decision, the launch's set-up); fork, to the child's first step; prepare, its containment
    and configuration; model_load, the model's handler loaded; listen, its socket bound and its
    server up; limit_wait, the worker ready but the gateway still moving it into its memory cgroup
    (it reads the status only after the move); report, until the gateway has read the ready status;
    first_invoke, from there to the answer (routing, connecting, the first request's round trip,
    first predict included). ``limit`` is the move itself, from the zygote's answer to its end: it
    runs while the child starts, so only what outlasts the child's start (limit_wait) is on the
    path. A worker that does
    not report its steps (a user's server) gets ``start`` (fork to ready) instead of fork..report.
    A start that began before its invocation arrived (hedged, provisioned) has a negative admit.
    """
    ms = {"admit": trace.requested - arrived}
    if trace.worker is not None:
        stages = trace.worker
        ms |= {
            "fork": stages.running - trace.requested,
            "prepare": stages.loading - stages.running,
            "model_load": stages.loaded - stages.loading,
            "listen": stages.listening - stages.loaded,
            "limit_wait": max(0.0, trace.limited - stages.listening),
            "report": trace.reported - max(stages.listening, trace.limited),
        }
    else:
        ms["start"] = trace.reported - trace.requested
    ms["first_invoke"] = answered - trace.reported
    ms["total"] = answered - arrived
    ms["limit"] = trace.limited - trace.launched
    return {stage: round(seconds * 1000, 3) for stage, seconds in ms.items()}
