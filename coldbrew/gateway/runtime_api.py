"""The runtime API: ``POST /endpoints/{name}/invocations`` as sagemaker-runtime speaks it (REST JSON)."""

from __future__ import annotations

import json
import logging
import uuid

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from coldbrew.control.store import Store
from coldbrew.errors import ColdbrewError, InternalFailure, ValidationError
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
    def __init__(self, serving: Serving, store: Store, account: str) -> None:
        self.serving = serving
        self.store = store
        self.account = account

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
        try:
            runtime = self.serving.runtime(name)
            if runtime is None:
                raise await run_in_threadpool(self._not_serving, name)
            declared = request.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > PROVISIONED_MAX_PAYLOAD:
                raise ValidationError(
                    f"Request payload of {declared} bytes exceeds the {PROVISIONED_MAX_PAYLOAD // 2**20} MB limit."
                )
            body = await request.body()
            invocation = Invocation(
                endpoint=name,
                body=body,
                content_type=request.headers.get("content-type"),
                accept=request.headers.get("accept"),
                custom_attributes=request.headers.get(CUSTOM_ATTRIBUTES),
                target_variant=request.headers.get("x-amzn-sagemaker-target-variant"),
            )
            result = await self.serving.invoke(runtime, invocation)
        except ColdbrewError as error:
            return runtime_error(error, request_id)
        except Exception:
            log.exception("invocation %s of %s failed", request_id, name)
            return runtime_error(InternalFailure(f"Internal error; request id {request_id}."), request_id)
        # The model's content type is passed through as is (no charset added).
        headers = {"content-type": result.content_type, "x-Amzn-Invoked-Production-Variant": result.variant,
                   "x-amzn-RequestId": request_id}
        if result.custom_attributes is not None:
            headers[CUSTOM_ATTRIBUTES] = result.custom_attributes
        return Response(result.body, headers=headers)
