"""An AuthError as the protocol the request speaks answers errors, so the client's SDK raises it
with AWS's code: AWS JSON 1.1 (SageMaker's control plane, CloudWatch Logs), REST JSON (the
SageMaker runtime), CloudWatch's three (JSON 1.0, Smithy RPC v2 CBOR, query XML, by its own
renderer), S3's XML, and plain text for ``/metrics`` and the gateway's other routes."""

from __future__ import annotations

import json
import secrets
import uuid
from enum import Enum

from starlette.types import Send

from coldbrew.auth.errors import AuthError, MissingAuthentication
from coldbrew.cloudwatch.errors import SenderError
from coldbrew.cloudwatch.protocols import Protocol as CloudWatchProtocol
from coldbrew.cloudwatch.protocols import encode_error, protocol_of
from coldbrew.s3.errors import S3Error
from coldbrew.s3.xmlio import error_document

Headers = list[tuple[bytes, bytes]]


class Wire(Enum):
    JSON = "aws-json"  # SageMaker control, Logs, and services coldbrew does not serve
    REST_JSON = "rest-json"  # the SageMaker runtime
    CLOUDWATCH_JSON = "cloudwatch-json"
    CLOUDWATCH_CBOR = "cloudwatch-cbor"
    CLOUDWATCH_QUERY = "cloudwatch-query"
    S3 = "s3"
    PLAIN = "plain"  # /metrics, /ping and the gateway's other routes


_CLOUDWATCH = {
    CloudWatchProtocol.JSON: Wire.CLOUDWATCH_JSON,
    CloudWatchProtocol.CBOR: Wire.CLOUDWATCH_CBOR,
    CloudWatchProtocol.QUERY: Wire.CLOUDWATCH_QUERY,
}


def wire_of(service: str | None, method: str, path: str, headers: dict[bytes, bytes]) -> Wire:
    if service == "s3":
        return Wire.S3
    if service == "monitoring":
        return _CLOUDWATCH[protocol_of(method, path, headers)]
    if service == "cloudformation":
        return Wire.CLOUDWATCH_QUERY  # the query protocol too: the same error document
    if service not in (None, "sagemaker"):
        return Wire.JSON
    if path.startswith("/endpoints/"):
        return Wire.REST_JSON
    if path == "/" and method == "POST":
        return Wire.JSON
    return Wire.PLAIN


def render(error: AuthError, wire: Wire, s3_resource: str = "/") -> tuple[int, Headers, bytes]:
    request_id = str(uuid.uuid4())
    if wire is Wire.S3:
        s3_error = type(error.s3_code, (S3Error,), {"code": error.s3_code, "status": error.s3_status})(
            error.message, **{k: str(v) for k, v in error.fields.items()}
        )
        rid = secrets.token_hex(8).upper()
        body = error_document(s3_error, rid, s3_resource)
        return (
            error.s3_status,
            [(b"content-type", b"application/xml"), (b"x-amz-request-id", rid.encode())],
            body,
        )
    if wire in (Wire.CLOUDWATCH_JSON, Wire.CLOUDWATCH_CBOR, Wire.CLOUDWATCH_QUERY):
        code = error.query_code if wire is Wire.CLOUDWATCH_QUERY else error.code
        status = error.query_status if wire is Wire.CLOUDWATCH_QUERY else error.status
        cloudwatch_error = type(code, (SenderError,), {"code": code, "shape": code, "status": status})(
            error.message
        )
        protocol = next(p for p, w in _CLOUDWATCH.items() if w is wire)
        return encode_error(protocol, cloudwatch_error, request_id)
    headers: Headers = [
        (b"x-amzn-requestid", request_id.encode()),
        (b"x-amzn-errortype", error.code.encode()),
    ]
    if wire is Wire.PLAIN:
        headers.append((b"content-type", b"text/plain; charset=utf-8"))
        if isinstance(error, MissingAuthentication):
            # A browser (the dashboard) or a scraper without credentials: 401 makes it ask for them.
            headers.append((b"www-authenticate", b'Basic realm="coldbrew"'))
            return 401, headers, f"{error.code}: {error.message}\n".encode()
        return error.status, headers, f"{error.code}: {error.message}\n".encode()
    if wire is Wire.REST_JSON:
        headers.append((b"content-type", b"application/json"))
        return error.status, headers, json.dumps({"message": error.message}).encode()
    headers.append((b"content-type", b"application/x-amz-json-1.1"))
    return error.status, headers, json.dumps({"__type": error.code, "message": error.message}).encode()


async def send_error(
    send: Send, error: AuthError, wire: Wire, s3_resource: str = "/", close: bool = False
) -> None:
    """``close``: the request's body was not read, so the connection cannot carry another request."""
    status, headers, body = render(error, wire, s3_resource)
    headers.append((b"content-length", str(len(body)).encode()))
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
