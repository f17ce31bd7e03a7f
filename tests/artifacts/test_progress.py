"""Progress lines of long transfers: at most one per interval, with how far and how fast."""

from __future__ import annotations

import logging

import pytest

from coldbrew.artifacts.progress import MiB, TransferProgress


def test_a_long_download_says_how_far_it_is_at_most_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    progress = TransferProgress("s3://b/model.tar.gz", 100 * MiB, clock=lambda: now[0], interval_s=5.0)
    with caplog.at_level(logging.INFO, logger="coldbrew.artifacts"):
        for _ in range(10):  # 10 MiB a second for 10 s, one chunk a second
            now[0] += 1.0
            progress.add(10 * MiB)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "model data s3://b/model.tar.gz: 50 of 100 MB (50%), 10.0 MB/s",
        "model data s3://b/model.tar.gz: 100 of 100 MB (100%), 10.0 MB/s",
    ]


def test_a_short_download_says_nothing(caplog: pytest.LogCaptureFixture) -> None:
    progress = TransferProgress("s3://b/k", 0, clock=lambda: 0.0)
    with caplog.at_level(logging.INFO, logger="coldbrew.artifacts"):
        progress.add(1024)
    assert progress.done == 1024 and not caplog.records
