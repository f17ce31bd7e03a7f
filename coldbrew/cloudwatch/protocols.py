"""CloudWatch's three wire protocols, as botocore's serializers and parsers speak them.

- ``smithy-rpc-v2-cbor`` (botocore 1.37 and later): ``POST /service/GraniteServiceVersion20100801/
  operation/<Op>``, ``smithy-protocol: rpc-v2-cbor``, a CBOR map body, timestamps as tag 1 (epoch
  seconds). Errors: the status, a CBOR body with ``__type`` and ``message``, ``smithy-protocol``.
- ``json`` (awsJson1_0): ``POST /``, ``X-Amz-Target: GraniteServiceVersion20100801.<Op>``, a JSON
  body, timestamps as epoch seconds. Errors: ``{"__type": ..., "message": ...}``.
- ``query`` (older botocore, the AWS CLI v1 of its time): a form-encoded ``POST /`` (or a ``GET``
  with the same query string) with ``Action`` and ``Version``, ISO 8601 timestamps; the response is
  ``<OpResponse><OpResult>`` XML and an error ``<ErrorResponse><Error><Type>Sender</Type><Code>``.

CloudWatch's model is ``awsQueryCompatible``: JSON and CBOR errors also carry
``x-amzn-query-error: <query code>;<Sender|Receiver>``, from which botocore takes the error code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from typing import Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

import cbor2

from coldbrew.cloudwatch.errors import CloudWatchError, InvalidAction, SerializationError
from coldbrew.cloudwatch.shapes import XML_NAMESPACE, all_operations, document, operation, unflatten, xml

TARGET_PREFIX = "GraniteServiceVersion20100801."
CBOR_PREFIX = "/service/GraniteServiceVersion20100801/operation/"
MAX_FORM_FIELDS = 100_000
MAX_DOCUMENT_NODES = 200_000
"""A decoded body with more values than this is refused (a 1 MiB body holds far fewer)."""

Headers = list[tuple[bytes, bytes]]


class Protocol(Enum):
    CBOR = "smithy-rpc-v2-cbor"
    JSON = "json"
    QUERY = "query"


@dataclass(frozen=True)
class Request:
    protocol: Protocol
    operation: str
    document: dict[str, Any]
    """The body as decoded, before ``shapes.coerce`` (the query form already unflattened)."""


def protocol_of(method: str, path: str, headers: dict[bytes, bytes]) -> Protocol:
    if path.startswith(CBOR_PREFIX) or headers.get(b"smithy-protocol") == b"rpc-v2-cbor":
        return Protocol.CBOR
    if headers.get(b"x-amz-target", b"").startswith(TARGET_PREFIX.encode()):
        return Protocol.JSON
    return Protocol.QUERY


def decode(
    protocol: Protocol, path: str, query_string: str, body: bytes, headers: dict[bytes, bytes]
) -> Request:
    if protocol is Protocol.CBOR:
        name = path[len(CBOR_PREFIX) :] if path.startswith(CBOR_PREFIX) else ""
        doc = _cbor(body) if body else {}
    elif protocol is Protocol.JSON:
        name = headers[b"x-amz-target"].decode("latin-1")[len(TARGET_PREFIX) :]
        doc = _json(body) if body.strip() else {}
    else:
        form = _form(body.decode("latin-1") if body else query_string)
        name = form.pop("Action", "")
        form.pop("Version", None)
        model = operation(name)
        if model is None:
            raise _unserved(name)
        return Request(protocol, name, unflatten(form, model.input_shape))
    if operation(name) is None:
        raise _unserved(name)
    if not isinstance(doc, dict):
        raise SerializationError(f"The body of a {name} request must be a map of its parameters.")
    _check_size(doc)
    return Request(protocol, name, doc)


def _unserved(name: str) -> InvalidAction:
    if not name:
        return InvalidAction("The request names no CloudWatch operation (Action).")
    shown = name[:80]
    if name in all_operations():
        return InvalidAction(
            f"coldbrew serves CloudWatch's GetMetricStatistics, GetMetricData and ListMetrics, not {shown}."
        )
    return InvalidAction(f"The action {shown} is not valid for this web service.")


def _cbor(body: bytes) -> Any:
    try:
        return cbor2.loads(body)
    except Exception as exc:  # CBORDecodeError, and ValueError/OverflowError from some tags
        raise SerializationError(f"The request body is not valid CBOR: {str(exc)[:120]}") from None


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise SerializationError(f"The request body is not valid JSON: {str(exc)[:120]}") from None


def _form(text: str) -> dict[str, str]:
    try:
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS, errors="strict")
    except ValueError as exc:
        raise SerializationError(f"The request is not a valid form: {str(exc)[:120]}") from None
    return dict(pairs)


def _check_size(doc: Any) -> None:
    """Refuse documents that are too big, or that share a container (CBOR tags 28/29 can make a
    tree whose walk is exponential, or a cycle)."""
    seen: set[int] = set()
    stack = [doc]
    nodes = 0
    while stack:
        item = stack.pop()
        nodes += 1
        if nodes > MAX_DOCUMENT_NODES:
            raise SerializationError(f"The request has more than {MAX_DOCUMENT_NODES:,} values.")
        if isinstance(item, dict | list):
            if id(item) in seen:
                raise SerializationError("The request body shares or repeats a container.")
            seen.add(id(item))
            stack.extend(item.values() if isinstance(item, dict) else item)


# --- responses ------------------------------------------------------------------------------------


def _cbor_time(seconds: float) -> cbor2.CBORTag:
    return cbor2.CBORTag(1, float(seconds))


def encode(
    protocol: Protocol, name: str, result: dict[str, Any], request_id: str
) -> tuple[int, Headers, bytes]:
    model = operation(name)
    assert model is not None
    shape = model.output_shape
    headers: Headers = [(b"x-amzn-requestid", request_id.encode())]
    if protocol is Protocol.CBOR:
        body = cbor2.dumps(document(result, shape, _cbor_time))
        headers += [(b"content-type", b"application/cbor"), (b"smithy-protocol", b"rpc-v2-cbor")]
    elif protocol is Protocol.JSON:
        body = json.dumps(document(result, shape, float), separators=(",", ":")).encode()
        headers.append((b"content-type", b"application/x-amz-json-1.0"))
    else:
        body = xml(name, result, shape, request_id)
        headers.append((b"content-type", b"text/xml"))
    return 200, headers, body


def encode_error(protocol: Protocol, error: CloudWatchError, request_id: str) -> tuple[int, Headers, bytes]:
    headers: Headers = [(b"x-amzn-requestid", request_id.encode())]
    if protocol is Protocol.QUERY:
        body = (
            f'<ErrorResponse xmlns="{XML_NAMESPACE}"><Error><Type>{error.fault}</Type>'
            f"<Code>{error.code}</Code><Message>{escape(error.message)}</Message></Error>"
            f"<RequestId>{request_id}</RequestId></ErrorResponse>"
        ).encode()
        headers.append((b"content-type", b"text/xml"))
        return error.status, headers, body
    payload = {"__type": error.type, "message": error.message}
    headers.append((b"x-amzn-query-error", f"{error.code};{error.fault}".encode()))
    if protocol is Protocol.CBOR:
        headers += [(b"content-type", b"application/cbor"), (b"smithy-protocol", b"rpc-v2-cbor")]
        return error.status, headers, cbor2.dumps(payload)
    headers += [(b"content-type", b"application/x-amz-json-1.0"), (b"x-amzn-errortype", error.code.encode())]
    return error.status, headers, json.dumps(payload).encode()
