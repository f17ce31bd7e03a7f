"""The runtime API: ``POST /endpoints/{name}/invocations`` as sagemaker-runtime speaks it (REST JSON)."""

from __future__ import annotations

import json
import logging
import time
import uuid

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from coldbrew.control.store import Store
from coldbrew.errors import ColdbrewError, InternalFailure, ModelError, ValidationError
from coldbrew.metering.meter import Meter
from coldbrew.metering.records import MeterRecord
from coldbrew.serving.invocation import PROVISIONED_MAX_PAYLOAD, Invocation
from coldbrew.serving.runtime import Serving

log = logging.getLogger("coldbrew.gateway")

CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"


def runtime_error(error: ColdbrewError, request_id: str) -> Response:
    return Response(
        json.dumps({"message": error.message, **error.fields}),
        status_code=error.status,
        media_type="application/json",
        headers={"x-amzn-ErrorType": error.code, "x-amzn-RequestId": request_id},
    )


class RuntimeEndpoint:
    def __init__(self, serving: Serving, store: Store, account: str, meter: Meter | None = None) -> None:
        self.serving = serving
        self.store = store
        self.account = account
        self.meter = meter

    def _not_serving(self, name: str) -> ValidationError:
        """Why an endpoint takes no invocations; reads the store, but only on this error path."""
        row = self.store.query_one("SELECT name, status, failure_reason FROM endpoints WHERE name_key = ?", [name.lower()])
        if row is None:
            return ValidationError(f"Endpoint {name} of account {self.account} not found.")
        status = row["status"]
        if status == "Failed":
            return ValidationError(
                f"Endpoint {name} of account {self.account} is Failed and takes no invocations: "
                f"{row['failure_reason']}"
            )
        return ValidationError(
            f"Endpoint {name} of account {self.account} is {status}; invoke it once it is InService."
        )

    async def invoke(self, request: Request) -> Response:
        request_id = str(uuid.uuid4())
        name = request.path_params["name"]
        received, started = time.time(), time.perf_counter()
        metered = _Metered()
        try:
            runtime = self.serving.runtime(name)
            if runtime is None:
                raise await run_in_threadpool(self._not_serving, name)
            metered.endpoint = name.lower()
            # The variant is chosen here rather than in serving so that every record, an error's
            # too, names the variant and memory size it was for.
            pool = runtime.choose(request.headers.get("x-amzn-sagemaker-target-variant"))
            metered.variant, metered.memory_mb = pool.config.variant, pool.config.memory_mb
            metered.serverless = pool.config.serverless
            declared = request.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > PROVISIONED_MAX_PAYLOAD:
                raise ValidationError(
                    f"Request payload of {declared} bytes exceeds the {PROVISIONED_MAX_PAYLOAD // 2**20} MB limit."
                )
            body = await request.body()
            metered.bytes_in = len(body)
            invocation = Invocation(
                endpoint=name,
                body=body,
                content_type=request.headers.get("content-type"),
                accept=request.headers.get("accept"),
                custom_attributes=request.headers.get(CUSTOM_ATTRIBUTES),
                target_variant=pool.config.variant,
            )
            result = await self.serving.invoke(runtime, invocation)
        except ColdbrewError as error:
            response = runtime_error(error, request_id)
            self._record_error(metered, received, started, response, error)
            return response
        except Exception:
            log.exception("invocation %s of %s failed", request_id, name)
            response = runtime_error(InternalFailure(f"Internal error; request id {request_id}."), request_id)
            self._record_error(metered, received, started, response, InternalFailure(""))
            return response
        # The model's content type is passed through as is (no charset added).
        headers = {"content-type": result.content_type, "x-Amzn-Invoked-Production-Variant": result.variant,
                   "x-amzn-RequestId": request_id}
        if result.custom_attributes is not None:
            headers[CUSTOM_ATTRIBUTES] = result.custom_attributes
        if self.meter is not None:
            total_us = int((time.perf_counter() - started) * 1_000_000)
            self.meter.record(MeterRecord(
                endpoint=metered.endpoint, variant=result.variant, started_at=received,
                model_latency_us=result.model_latency_us,
                # As on SageMaker Serverless, a cold start's setup counts as overhead.
                overhead_latency_us=max(0, total_us - result.model_latency_us),
                cold_start=result.cold_start, setup_us=int(result.setup_ms * 1000), memory_mb=metered.memory_mb,
                serverless=metered.serverless, bytes_in=metered.bytes_in, bytes_out=len(result.body), status=200,
            ))
        return Response(result.body, headers=headers)

    def _record_error(self, metered: _Metered, received: float, started: float, response: Response,
                      error: ColdbrewError) -> None:
        # Invocations of endpoints that do not exist are not metered: there is nothing to charge
        # them to, and arbitrary names would grow the metrics without bound.
        if self.meter is None or metered.endpoint is None:
            return
        total_us = int((time.perf_counter() - started) * 1_000_000)
        # A ModelError ran the model (or crashed or timed out in it): serving does not say how long
        # the worker took, so the whole time is counted as model time, as the worker was held.
        model_us = total_us if isinstance(error, ModelError) else 0
        self.meter.record(MeterRecord(
            endpoint=metered.endpoint, variant=metered.variant, started_at=received, model_latency_us=model_us,
            overhead_latency_us=total_us - model_us, cold_start=False, setup_us=0, memory_mb=metered.memory_mb,
            serverless=metered.serverless, bytes_in=metered.bytes_in, bytes_out=len(response.body),
            status=response.status_code, error_code=error.code,
        ))


class _Metered:
    """What is known about an invocation for its meter record, filled in as the request proceeds."""

    __slots__ = ("bytes_in", "endpoint", "memory_mb", "serverless", "variant")

    def __init__(self) -> None:
        self.endpoint: str | None = None
        self.variant = ""
        self.memory_mb = 0
        self.serverless = True
        self.bytes_in = 0
