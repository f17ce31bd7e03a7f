"""SNS notifications of async results, in the shape SageMaker publishes them.

Published with boto3 (``AWS_ENDPOINT_URL_SNS`` and the standard credential chain apply), after the
result object is written and before the request is marked finished: a crash in between publishes
again on restart, so a subscriber may see a notification twice but never misses one.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from coldbrew.async_inference.requests import AsyncRequest

log = logging.getLogger("coldbrew.async")

MAX_INCLUDED_RESPONSE = 128 * 1024
"""SageMaker includes the inference response only up to this size."""
_CONFIG = Config(connect_timeout=5, read_timeout=20, retries={"max_attempts": 3, "mode": "standard"})


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(ts * 1000) % 1000:03d}Z"


def message(
    request: AsyncRequest,
    *,
    succeeded: bool,
    region: str,
    now: float,
    response_content_type: str | None = None,
    response: bytes | None = None,
    failure_reason: str | None = None,
) -> dict[str, Any]:
    """The notification's JSON: SageMaker's InferenceResult event."""
    request_parameters: dict[str, Any] = {
        "endpointName": request.endpoint,
        "inputLocation": request.input_location,
    }
    if request.content_type:
        request_parameters["contentType"] = request.content_type
    if request.accept:
        request_parameters["accept"] = request.accept
    if request.custom_attributes:
        request_parameters["customAttributes"] = request.custom_attributes
    body: dict[str, Any] = {
        "awsRegion": region,
        "eventTime": _iso(now),
        "receivedTime": _iso(request.received_at),
        "invocationStatus": "Completed" if succeeded else "Failed",
        "requestParameters": request_parameters,
        "inferenceId": request.inference_id,
        "eventVersion": "1.0",
        "eventSource": "aws:sagemaker",
        "eventName": "InferenceResult",
    }
    if succeeded:
        body["responseParameters"] = {
            "contentType": response_content_type or "application/octet-stream",
            "outputLocation": request.output_location,
        }
    else:
        body["failureReason"] = failure_reason or "The inference failed."
        body["responseParameters"] = {
            "contentType": response_content_type or "application/json",
            "failureLocation": request.failure_location,
        }
    include = request.response_in_success if succeeded else request.response_in_error
    if include and response is not None and len(response) <= MAX_INCLUDED_RESPONSE:
        try:
            body["responseBody"] = {"content": response.decode("utf-8"), "encoding": "UTF-8"}
        except UnicodeDecodeError:
            body["responseBody"] = {"content": base64.b64encode(response).decode(), "encoding": "BASE64"}
    return body


class Notifier:
    """Publishes to SNS; one client per region, made on first use."""

    def __init__(self) -> None:
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _client(self, region: str) -> Any:
        with self._lock:
            client = self._clients.get(region)
            if client is None:
                client = boto3.session.Session().client("sns", region_name=region, config=_CONFIG)
                self._clients[region] = client
            return client

    def publish(self, topic_arn: str, body: dict[str, Any]) -> None:
        """Blocking; a failure is logged, never raised (the result object is what counts)."""
        region = topic_arn.split(":")[3] or "us-east-1"
        try:
            self._client(region).publish(TopicArn=topic_arn, Message=json.dumps(body))
        except (BotoCoreError, ClientError) as e:
            log.warning(
                "could not publish the result of inference %s to %s: %s",
                body.get("inferenceId"),
                topic_arn,
                e,
            )
