"""CPU time of a running ``coldbrew serve`` and everything under it, for the benchmarks.

On a 2-core machine the CPU is the bottleneck, whoever else runs: CPU per request (or per record)
says what a throughput figure would be on a machine the server had to itself.
"""

from __future__ import annotations

import time

import psutil

from tests.support import ColdbrewServer


class Cpu:
    """CPU seconds used since it was made: by the server, by every process under it (workers,
    zygotes; a reaped worker's time counts through its parent), and by this client process."""

    def __init__(self, server: ColdbrewServer) -> None:
        assert server.process is not None
        self.server = psutil.Process(server.process.pid)
        self.start = self.now()

    def now(self) -> tuple[float, float, float]:
        """(server and workers, workers, this client) CPU seconds so far."""
        t = self.server.cpu_times()
        workers = t.children_user + t.children_system
        for process in self.server.children(recursive=True):
            try:
                c = process.cpu_times()
                workers += c.user + c.system + c.children_user + c.children_system
            except psutil.Error:
                pass
        return t.user + t.system + workers, workers, time.process_time()

    def per_request_ms(self, requests: int) -> dict[str, float]:
        now = self.now()
        total, workers, client = (
            round((b - a) * 1000 / requests, 2) for a, b in zip(self.start, now, strict=True)
        )
        return {"server_and_workers": total, "of_which_workers": workers, "client": client}

    def seconds(self) -> dict[str, float]:
        now = self.now()
        total, workers, client = (round(b - a, 2) for a, b in zip(self.start, now, strict=True))
        return {"gateway": round(total - workers, 2), "workers_and_zygotes": workers, "client": client}
