"""coldbrew.heap: the gateway's malloc settings are applied where glibc is, and are no-ops elsewhere."""

from __future__ import annotations

import subprocess
import sys

from coldbrew import heap


def test_trim_and_arena_limit_run_in_a_fresh_process() -> None:
    code = "from coldbrew import heap; print(heap.limit_arenas(), heap.trim() in (True, False))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    glibc = heap._glibc() is not None
    assert out.split() == [str(glibc), "True"]
