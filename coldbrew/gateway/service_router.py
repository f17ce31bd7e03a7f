"""One port for every AWS API coldbrew serves: each request goes to the service it is meant for.

AWS clients say which service a request is for in the SigV4 credential scope they sign with
(``Credential=AKID/20261202/us-east-1/s3/aws4_request``, or ``X-Amz-Credential`` in a presigned
URL's query). Unsigned requests are told apart by protocol, as their clients send them: AWS JSON's
``X-Amz-Target`` (``SageMaker.``, ``Logs_20140328.``, ``GraniteServiceVersion20100801.`` for
CloudWatch), Smithy RPC v2 CBOR's ``Smithy-Protocol`` header and ``/service/<name>/operation/<op>``
path, and the query protocol's form-encoded POST. Everything else — the SageMaker control plane and
runtime, ``/ping``, ``/metrics`` — is the gateway's own app, as before.

Signing names (botocore's ``signingName``): ``sagemaker`` for both SageMaker APIs, ``s3``,
``monitoring`` for CloudWatch, ``logs`` for CloudWatch Logs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from urllib.parse import unquote

from starlette.types import ASGIApp, Receive, Scope, Send

SAGEMAKER, S3, CLOUDWATCH, LOGS = "sagemaker", "s3", "monitoring", "logs"

_SCOPE = re.compile(rb"Credential=[^/,\s]+/\d{8}/[a-z0-9\-]+/(?P<service>[a-z0-9\-.]+)/aws4_request")
_QUERY_SCOPE = re.compile(
    r"(?:^|&)X-Amz-Credential=[^/&]+/\d{8}/[a-z0-9\-]+/(?P<service>[a-z0-9\-.]+)/aws4_request"
)
_SIGV2_KEY, _SIGV2_SIGNATURE = re.compile(r"(?:^|&)AWSAccessKeyId="), re.compile(r"(?:^|&)Signature=")
_TARGETS = {b"SageMaker.": SAGEMAKER, b"Logs_20140328.": LOGS, b"GraniteServiceVersion20100801.": CLOUDWATCH}
_CBOR_PATH = "/service/GraniteServiceVersion20100801/"


def service_of(method: str, path: str, query: str, headers: Mapping[bytes, bytes]) -> str | None:
    """The service a request is for (a signing name), or None for the gateway's own app.

    Pure, and cheap on the invoke path: one header lookup and one regex over a short header.
    """
    authorization = headers.get(b"authorization")
    if authorization:
        match = _SCOPE.search(authorization)
        if match:
            return match["service"].decode()
    if "X-Amz-Credential=" in query:
        presigned = _QUERY_SCOPE.search(unquote(query))
        if presigned:
            return presigned["service"]
    # Signature version 2, which only S3 still takes: boto3 presigns S3 URLs with it by default
    # (?AWSAccessKeyId=...&Signature=...&Expires=...), and old clients sign headers with it.
    if (authorization and authorization.startswith(b"AWS ")) or (
        _SIGV2_KEY.search(query) and _SIGV2_SIGNATURE.search(query)
    ):
        return S3
    target = headers.get(b"x-amz-target")
    if target:
        for prefix, service in _TARGETS.items():
            if target.startswith(prefix):
                return service
    if headers.get(b"smithy-protocol") == b"rpc-v2-cbor" and path.startswith(_CBOR_PATH):
        return CLOUDWATCH
    if (
        method == "POST"
        and path == "/"
        and headers.get(b"content-type", b"").startswith(b"application/x-www-form-urlencoded")
    ):
        return CLOUDWATCH  # the query protocol; SageMaker's control plane speaks AWS JSON
    return None


class ServiceRouter:
    """ASGI: HTTP requests for ``services`` (by signing name) go to theirs, the rest to ``default``
    (which also gets the lifespan). A signed request for a service coldbrew does not serve is
    refused in the AWS JSON error shape, which every botocore protocol parser can read."""

    def __init__(self, default: ASGIApp, services: Mapping[str, ASGIApp]) -> None:
        self.default, self.services = default, dict(services)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.default(scope, receive, send)
            return
        headers = dict(scope["headers"])
        query = scope.get("query_string", b"").decode("latin-1")
        service = service_of(scope["method"], scope["path"], query, headers)
        if service is None or service == SAGEMAKER:
            await self.default(scope, receive, send)
            return
        app = self.services.get(service)
        if app is None:
            await _unknown_service(service, sorted({SAGEMAKER, *self.services}), send)
            return
        await app(scope, receive, send)


async def _unknown_service(service: str, served: list[str], send: Send) -> None:
    body = json.dumps(
        {
            "__type": "UnrecognizedClientException",
            "message": f"coldbrew does not serve the '{service}' API on this port; it serves "
            f"{', '.join(served)}. Point this client at the real service (AWS_ENDPOINT_URL_<SERVICE>).",
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 400,
            "headers": [
                (b"content-type", b"application/x-amz-json-1.1"),
                (b"x-amzn-errortype", b"UnrecognizedClientException"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
