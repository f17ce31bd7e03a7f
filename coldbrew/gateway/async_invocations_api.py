"""``POST /endpoints/{name}/async-invocations``: InvokeEndpointAsync as sagemaker-runtime speaks it.

Everything is in headers (botocore's model); the answer is 202 with the InferenceId in a JSON body
and the result locations in headers. The request is durable in the queue before 202 is sent.
"""

from __future__ import annotations

import json
import logging
import re
import uuid

from starlette.concurrency import run_in_threadpool
from starlette.types import Receive

from coldbrew.async_inference.dispatcher import Dispatcher
from coldbrew.async_inference.requests import new_request
from coldbrew.control.service import ControlPlane
from coldbrew.errors import ColdbrewError, InternalFailure, ValidationError
from coldbrew.gateway.invocations_api import Reply, check_custom_attributes, invocation_error
from coldbrew.serving.service import Serving
from coldbrew.serving.targets import S3Url
from coldbrew.wire.bodies import CLOSE, OversizeBody, declared_oversize, read_body

log = logging.getLogger("coldbrew.gateway")

SUFFIX = "/async-invocations"
_HEADER = "x-amzn-sagemaker-"
_INFERENCE_ID = re.compile(r"\A\S[\x20-\x7e]*\Z")
_EXTENSION = re.compile(r"^(?!s3:|https:)[a-zA-Z0-9!_.*'()/-]+$")
_FILENAME = re.compile(r"^(?!.*\..*\.)[a-zA-Z0-9][a-zA-Z0-9-_\.]*$")
_MAX_IGNORED_BODY = 64 * 1024
"""InvokeEndpointAsync has no body; a client that sends one anyway gets at most this much read."""


def _invalid(member: str, constraint: str) -> ValidationError:
    return ValidationError(
        f"1 validation error detected: Value at '{member}' failed to satisfy constraint: {constraint}"
    )


def _text(headers: dict[str, str], name: str, member: str, *, low: int, high: int) -> str | None:
    value = headers.get(_HEADER + name)
    if value is None:
        return None
    if not low <= len(value) <= high:
        raise _invalid(member, f"Member must have length between {low} and {high}")
    return value


def _seconds(headers: dict[str, str], name: str, member: str, *, low: int, high: int) -> int | None:
    value = headers.get(_HEADER + name)
    if value is None:
        return None
    if not value.strip().lstrip("-").isdigit() or len(value) > 12:
        raise _invalid(member, "Member must be an integer")
    number = int(value)
    if not low <= number <= high:
        raise _invalid(member, f"Member must have value between {low} and {high} (got {number})")
    return number


class _BodySent(ValidationError):
    """A body sent to InvokeEndpointAsync, refused before it was read to its end."""


class AsyncInvocationsEndpoint:
    def __init__(self, serving: Serving, control: ControlPlane, dispatcher: Dispatcher, account: str) -> None:
        self.serving = serving
        self.control = control
        self.dispatcher = dispatcher
        self.account = account

    async def invoke(self, name: str, headers: dict[str, str], receive: Receive) -> Reply:
        request_id = str(uuid.uuid4())
        try:
            return await self._accept(name, headers, receive, request_id)
        except _BodySent as error:
            reply = invocation_error(error, request_id)
            reply.headers.append(CLOSE)  # the rest of the body is not read
            return reply
        except ColdbrewError as error:
            return invocation_error(error, request_id)
        except Exception:
            log.exception("InvokeEndpointAsync %s of %s failed", request_id, name)
            return invocation_error(InternalFailure(f"Internal error; request id {request_id}."), request_id)

    async def _accept(self, name: str, headers: dict[str, str], receive: Receive, request_id: str) -> Reply:
        try:
            if declared_oversize(headers.get("content-length"), _MAX_IGNORED_BODY):
                raise OversizeBody
            await read_body(receive, _MAX_IGNORED_BODY)
        except OversizeBody:
            raise _BodySent(
                "InvokeEndpointAsync takes no request body: put the input in S3 and pass its URI as "
                "InputLocation."
            ) from None
        endpoint = self.serving.endpoint(name)
        if endpoint is None or endpoint.name != name:
            raise await run_in_threadpool(self.control.refusal_for, name, self.account)
        config = endpoint.asynchronous
        if config is None:
            raise ValidationError(
                f"Endpoint {name} of account {self.account} is not configured for asynchronous "
                "inference (its endpoint config has no AsyncInferenceConfig); use InvokeEndpoint."
            )
        input_location = _text(headers, "inputlocation", "inputLocation", low=1, high=1024)
        if input_location is None:
            raise _invalid("inputLocation", "Member must not be null")
        source = S3Url.parse(input_location)
        if source is None or not source.key:
            raise ValidationError(
                f"InputLocation {input_location[:200]!r} is not an S3 URI of an object (s3://bucket/key)."
            )
        inference_id = _text(headers, "inference-id", "inferenceId", low=1, high=64)
        if inference_id is not None and not _INFERENCE_ID.match(inference_id):
            raise _invalid(
                "inferenceId", r"Member must satisfy regular expression pattern: \A\S[\p{Print}]*\z"
            )
        extension = _text(headers, "s3outputpathextension", "s3OutputPathExtension", low=1, high=512)
        if extension is not None and not _EXTENSION.match(extension):
            raise _invalid(
                "s3OutputPathExtension",
                "Member must satisfy regular expression pattern: ^(?!s3:|https:)[a-zA-Z0-9!_.*'()/-]+$",
            )
        filename = _text(headers, "filename", "filename", low=1, high=32)
        if filename is not None and not _FILENAME.match(filename):
            raise _invalid(
                "filename",
                r"Member must satisfy regular expression pattern: ^(?!.*\..*\.)[a-zA-Z0-9][a-zA-Z0-9-_\.]*$",
            )
        custom_attributes = headers.get(_HEADER + "custom-attributes")
        check_custom_attributes(custom_attributes)
        content_type = _text(headers, "content-type", "contentType", low=0, high=1024)
        accept = _text(headers, "accept", "accept", low=0, high=1024)
        ttl = _seconds(headers, "requestttlseconds", "requestTTLSeconds", low=60, high=21600)
        timeout = _seconds(headers, "invocationtimeoutseconds", "invocationTimeoutSeconds", low=1, high=3600)
        request = new_request(
            name,
            config,
            input_location,
            inference_id=inference_id,
            content_type=content_type or None,
            accept=accept or None,
            custom_attributes=custom_attributes,
            ttl_s=ttl,
            invocation_timeout_s=timeout,
            output_extension=extension,
            filename=filename,
        )
        # The input is looked up in the same batch as the request is queued: one trip, one commit.
        refusal = await self.dispatcher.accept(request)
        if refusal is not None:
            raise ValidationError(f"Could not access InputLocation {input_location}: {refusal}")
        return Reply(
            202,
            [
                (b"content-type", b"application/json"),
                (b"x-amzn-requestid", request_id.encode()),
                (b"x-amzn-sagemaker-outputlocation", request.output_location.encode()),
                (b"x-amzn-sagemaker-failurelocation", request.failure_location.encode()),
            ],
            json.dumps({"InferenceId": request.inference_id}).encode(),
        )
