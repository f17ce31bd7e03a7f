"""The zygote's settings against threads at import (issue 18) keep what the operator chose."""

from __future__ import annotations

from coldbrew.worker.zygote import quiet_threads


def test_jemalloc_background_thread_is_turned_off_unless_the_operator_chose() -> None:
    unset: dict[str, str] = {}
    quiet_threads(unset)
    assert unset["JE_ARROW_MALLOC_CONF"] == "background_thread:false"

    other_options = {"JE_ARROW_MALLOC_CONF": "dirty_decay_ms:0"}
    quiet_threads(other_options)
    assert other_options["JE_ARROW_MALLOC_CONF"] == "dirty_decay_ms:0,background_thread:false"

    # Asked for outright: kept (the zygote then leaves out what starts the thread, and says so).
    chosen = {"JE_ARROW_MALLOC_CONF": "background_thread:true,dirty_decay_ms:0"}
    quiet_threads(chosen)
    assert chosen["JE_ARROW_MALLOC_CONF"] == "background_thread:true,dirty_decay_ms:0"
