"""What the server's meter recorded for an endpoint, read from its ``/metrics``.

The meter's cumulative totals are kept for the life of the server, also after an endpoint is
deleted, so they can be read once the measurements are done.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MeterFigures:
    invocations: int
    cold_starts: int
    errors_4xx: int
    errors_5xx: int
    model_errors: int
    billed_gb_seconds: float
    """Memory size x model latency rounded up to the millisecond, summed: what serverless bills."""
    bytes_in: int
    bytes_out: int
    model_latency_sum_us: float
    environments: int
    """Execution environments the endpoint holds now (sampled by the server twice a second)."""


_COUNTERS = {
    "sagemaker_Invocations": "invocations",
    "sagemaker_ColdStarts": "cold_starts",
    "sagemaker_Invocation4XXErrors": "errors_4xx",
    "sagemaker_Invocation5XXErrors": "errors_5xx",
    "sagemaker_InvocationModelErrors": "model_errors",
    "sagemaker_ServerlessBilledGBSeconds": "billed_gb_seconds",
    "sagemaker_BytesIn": "bytes_in",
    "sagemaker_BytesOut": "bytes_out",
}


def parse_meter(text: str, endpoint: str) -> MeterFigures:
    """``endpoint``'s totals (summed over its variants) in a ``/metrics`` page; all zero for an
    endpoint the meter has not seen yet."""
    from prometheus_client.parser import text_string_to_metric_families

    wanted = endpoint.lower()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("EndpointName", "").lower() != wanted:
                continue
            # By the sample's name: the family's depends on the exposition's TYPE lines.
            name = sample.name
            if name.endswith("_total") and name.removesuffix("_total") in _COUNTERS:
                key = _COUNTERS[name.removesuffix("_total")]
            elif name == "sagemaker_ExecutionEnvironments":
                key = "environments"
            elif name.startswith("sagemaker_ModelLatency") and name.endswith("_sum"):
                key = "model_latency_sum_us"
            else:
                continue
            values[key] = values.get(key, 0.0) + sample.value
    return MeterFigures(
        invocations=int(values.get("invocations", 0)),
        cold_starts=int(values.get("cold_starts", 0)),
        errors_4xx=int(values.get("errors_4xx", 0)),
        errors_5xx=int(values.get("errors_5xx", 0)),
        model_errors=int(values.get("model_errors", 0)),
        billed_gb_seconds=values.get("billed_gb_seconds", 0.0),
        bytes_in=int(values.get("bytes_in", 0)),
        bytes_out=int(values.get("bytes_out", 0)),
        model_latency_sum_us=values.get("model_latency_sum_us", 0.0),
        environments=int(values.get("environments", 0)),
    )
