"""``GET /metrics``: the meter's totals as Prometheus metrics named after CloudWatch's.

CloudWatch's SageMaker metrics (namespace AWS/SageMaker, dimensions EndpointName and
VariantName) become ``sagemaker_<MetricName>`` with the same labels; latencies keep CloudWatch's
unit, microseconds, in the name. Counters and histograms are cumulative since the server started
(Prometheus expects resets on restart); the durable history is in the store (``coldbrew metrics``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from coldbrew.metering.aggregate import Histogram
from coldbrew.metering.meter import Meter

if TYPE_CHECKING:
    from coldbrew.backends.zygotes import ZygoteState

LABELS = ["EndpointName", "VariantName"]


class MeterCollector(Collector):
    def __init__(self, meter: Meter) -> None:
        self.meter = meter

    def collect(self) -> Iterator[Metric]:
        totals = self.meter.totals_snapshot()
        counters = {
            "Invocations": ("invocations", "Number of InvokeEndpoint requests sent to the variant."),
            "Invocation4XXErrors": ("errors_4xx", "Requests refused with a 4xx (validation, throttling)."),
            "Invocation5XXErrors": ("errors_5xx", "Requests that failed with a 5xx in coldbrew."),
            "InvocationModelErrors": (
                "model_errors",
                "Requests the model answered with an error (ModelError).",
            ),
            "ColdStarts": ("cold_starts", "Invocations that waited for a new execution environment."),
            "EnvironmentStarts": (
                "environment_starts",
                "Execution environments started (sampled; a hedged cold start counts here only).",
            ),
            "BytesIn": ("bytes_in", "Request payload bytes (data processed in)."),
            "BytesOut": ("bytes_out", "Response payload bytes (data processed out)."),
        }
        for name, (attribute, documentation) in counters.items():
            family = CounterMetricFamily(f"sagemaker_{name}", documentation, labels=LABELS)
            for (endpoint, variant), t in totals.items():
                family.add_metric([endpoint, variant], getattr(t, attribute))
            yield family
        billed = CounterMetricFamily(
            "sagemaker_ServerlessBilledGBSeconds",
            "Memory size times model latency (rounded up to 1 ms), as serverless bills it.",
            labels=LABELS,
        )
        for (endpoint, variant), t in totals.items():
            billed.add_metric([endpoint, variant], t.billed_mb_ms / 1024 / 1000)
        yield billed
        histograms = {
            "ModelLatency": ("model_latency", "Time the model took to respond (CloudWatch ModelLatency)."),
            "OverheadLatency": (
                "overhead_latency",
                "Time added by coldbrew, cold starts included (CloudWatch OverheadLatency).",
            ),
            "ModelSetupTime": ("setup_time", "Time to launch a new execution environment (ModelSetupTime)."),
        }
        for name, (attribute, documentation) in histograms.items():
            hist = HistogramMetricFamily(
                f"sagemaker_{name}", documentation, labels=LABELS, unit="microseconds"
            )
            for (endpoint, variant), t in totals.items():
                h: Histogram = getattr(t, attribute)
                hist.add_metric([endpoint, variant], h.cumulative(), sum_value=h.total)
            yield hist
        gauges = {
            "MemoryUtilization": (
                "memory_utilization",
                "Percent of the memory size of the variant's environments its workers use.",
            ),
            "ServerlessConcurrentExecutionsUtilization": (
                "concurrency_utilization",
                "Concurrent executions divided by MaxConcurrency (sampled).",
            ),
            "ExecutionEnvironments": ("environments", "Execution environments the variant holds now."),
        }
        for name, (attribute, documentation) in gauges.items():
            gauge = GaugeMetricFamily(f"sagemaker_{name}", documentation, labels=LABELS)
            for (endpoint, variant), t in totals.items():
                gauge.add_metric([endpoint, variant], getattr(t, attribute))
            yield gauge


@dataclass(frozen=True)
class MachineGauges:
    """Readings of the machine-wide serving state, taken at scrape time."""

    zygote_resident_bytes: Callable[[], int]
    memory_budget_mb: Callable[[], int]
    memory_budget_used_mb: Callable[[], int]
    budget_evictions: Callable[[], int]
    zygote_states: Callable[[], list[ZygoteState]] | None = None
    """Each runtime's zygote (the local backend's), so one that is off or leaves modules out is seen."""
    memory_budget_helpers_mb: Callable[[], int] | None = None


class MachineCollector(Collector):
    def __init__(self, gauges: MachineGauges) -> None:
        self.gauges = gauges

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "coldbrew_zygote_resident_bytes",
            "Resident memory of the zygotes that workers are forked from",
            value=self.gauges.zygote_resident_bytes(),
        )
        yield GaugeMetricFamily(
            "coldbrew_memory_budget_megabytes",
            "The machine's memory budget for environments",
            value=self.gauges.memory_budget_mb(),
        )
        yield GaugeMetricFamily(
            "coldbrew_memory_budget_used_megabytes",
            "Memory held by live environments (MemorySizeInMB, or an instance type's memory)",
            value=self.gauges.memory_budget_used_mb(),
        )
        yield CounterMetricFamily(
            "coldbrew_memory_budget_evictions",
            "Idle environments released to make room for another's cold start",
            value=self.gauges.budget_evictions(),
        )
        if self.gauges.memory_budget_helpers_mb is not None:
            yield GaugeMetricFamily(
                "coldbrew_memory_budget_helpers_megabytes",
                "Memory of the zygotes, taken out of the budget before any environment's",
                value=self.gauges.memory_budget_helpers_mb(),
            )
        if self.gauges.zygote_states is not None:
            yield from _zygote_metrics(self.gauges.zygote_states())


def _zygote_metrics(states: list[ZygoteState]) -> Iterator[Metric]:
    info = GaugeMetricFamily(
        "coldbrew_zygote_state",
        "1 for the state each runtime's zygote is in (ready, starting, failed: its workers start "
        "as fresh interpreters, stopped: idle, started again on demand)",
        labels=["runtime", "state"],
    )
    left_out = GaugeMetricFamily(
        "coldbrew_zygote_left_out_import_seconds",
        "A preload module a zygote left out because importing it started threads, and what its "
        "import costs each cold start of the runtime",
        labels=["runtime", "module", "started_by", "threads"],
    )
    for state in states:
        info.add_metric([state.runtime, state.state], 1)
        for module in state.left_out:
            left_out.add_metric(
                [state.runtime, module.module, module.started_by or "", ",".join(module.threads)],
                module.import_ms / 1000,
            )
    yield info
    yield left_out


def registry_for(meter: Meter, machine: MachineGauges | None = None) -> CollectorRegistry:
    # A registry of our own: the process-wide default one would also export Python's GC and
    # process metrics of every coldbrew in the test process, and forbids registering twice.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MeterCollector(meter))
    if machine is not None:
        registry.register(MachineCollector(machine))
    return registry
