"""The log store's sizes as Prometheus metrics, per endpoint, read at scrape time: what each log
group holds and how many of its oldest events were dropped to keep it under its cap."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from coldbrew.logs.collector import LogCollector
from coldbrew.logs.names import GROUP_PREFIX


class LogsCollector(Collector):
    def __init__(self, logs: LogCollector) -> None:
        self.logs = logs

    def collect(self) -> Iterator[Metric]:
        stored = GaugeMetricFamily(
            "coldbrew_logs_stored_bytes",
            "Bytes an endpoint's log group holds, as CloudWatch Logs counts them (message + 26 per event)",
            labels=["EndpointName"],
        )
        dropped = CounterMetricFamily(
            "coldbrew_logs_dropped_events",
            "Oldest log events dropped to keep an endpoint's log group under its cap",
            labels=["EndpointName"],
        )
        for group, (size, drops) in sorted(self.logs.writer.totals().items()):
            endpoint = group.removeprefix(GROUP_PREFIX)
            stored.add_metric([endpoint], size)
            dropped.add_metric([endpoint], drops)
        yield stored
        yield dropped
