"""The capture writer's counters as Prometheus metrics, read at scrape time: how many records were
written, how many dropped (buffer full, or S3 refused or unreachable), and what waits in memory."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from coldbrew.capture.writer import CaptureWriter


class CaptureCollector(Collector):
    def __init__(self, writer: CaptureWriter) -> None:
        self.writer = writer

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "coldbrew_capture_records_written",
            "Data capture records written to S3",
            value=self.writer.written,
        )
        dropped = CounterMetricFamily(
            "coldbrew_capture_records_dropped", "Data capture records dropped, by reason", labels=["reason"]
        )
        dropped.add_metric(["buffer_full"], self.writer.dropped_full)
        dropped.add_metric(["write_failed"], self.writer.dropped_failed)
        yield dropped
        yield GaugeMetricFamily(
            "coldbrew_capture_buffered_bytes",
            "Data capture records waiting in memory to be written (approximate bytes)",
            value=self.writer.buffered_bytes,
        )
