"""A property-based fuzzer for coldbrew's wire APIs, driven by botocore's service models.

Requests are generated per operation from its input shape: mostly values that fit the shape (so
the request gets past parsing into the operation), mixed with hostile ones in any member (huge
strings, deep nesting, wrong types, NaN and Infinity, integers past 64 bits or 4,300 digits,
out-of-range timestamps, unknown members) and hostile whole bodies. They go to a real server as
raw HTTP: AWS JSON 1.1 for SageMaker and CloudWatch Logs, AWS JSON 1.0 for CloudWatch, and
InvokeEndpoint / InvokeEndpointAsync for the runtime. ``check`` is the property: never a 5xx,
never a hang, and every AWS JSON answer is strict JSON (an error with its ``__type``).

Used by ``tests/hardening/test_fuzz.py`` (a bounded run in the suite) and ``bench/fuzz.py``.
"""

from __future__ import annotations

import base64
import functools
import json
import re
from dataclasses import dataclass, field
from typing import Any

import botocore.session
import httpx
from botocore.model import ListShape, MapShape, Shape, StructureShape
from hypothesis import strategies as st

ENDPOINT = "fuzz-ep"
KNOWN_NAMES = (
    ENDPOINT,
    f"{ENDPOINT}-config",
    f"arn:aws:sagemaker:us-east-1:123456789012:endpoint/{ENDPOINT}",
    f"arn:aws:sagemaker:us-east-1:123456789012:model/{ENDPOINT}",
    f"/aws/sagemaker/Endpoints/{ENDPOINT}",
)
"""What the fuzzed server holds (``tests.support.deploy_serverless`` of ENDPOINT: a model and
an endpoint of that name and its config; its log group), so generated requests reach real ones."""

# The operations coldbrew serves, fuzzed most; the rest of each model's are refused early but are
# fuzzed too, now and then.
SAGEMAKER_SERVED = (
    "CreateModel",
    "DescribeModel",
    "ListModels",
    "DeleteModel",
    "CreateEndpointConfig",
    "DescribeEndpointConfig",
    "ListEndpointConfigs",
    "DeleteEndpointConfig",
    "CreateEndpoint",
    "DescribeEndpoint",
    "ListEndpoints",
    "UpdateEndpoint",
    "UpdateEndpointWeightsAndCapacities",
    "DeleteEndpoint",
    "AddTags",
    "ListTags",
    "DeleteTags",
    "CreateTransformJob",
    "DescribeTransformJob",
    "ListTransformJobs",
    "StopTransformJob",
)
LOGS_SERVED = ("DescribeLogGroups", "DescribeLogStreams", "GetLogEvents", "FilterLogEvents")
CLOUDWATCH_SERVED = ("GetMetricStatistics", "GetMetricData", "ListMetrics")


@dataclass(frozen=True)
class Api:
    service: str
    target_prefix: str
    content_type: str
    served: tuple[str, ...]


APIS = {
    "sagemaker": Api("sagemaker", "SageMaker.", "application/x-amz-json-1.1", SAGEMAKER_SERVED),
    "logs": Api("logs", "Logs_20140328.", "application/x-amz-json-1.1", LOGS_SERVED),
    "cloudwatch": Api(
        "cloudwatch", "GraniteServiceVersion20100801.", "application/x-amz-json-1.0", CLOUDWATCH_SERVED
    ),
}


class Raw(str):
    """JSON text sent as is: what ``json.dumps`` cannot write (NaN in any member, 5,000-digit
    numbers, nesting deeper than Python's recursion limit)."""


@dataclass
class Request:
    """One generated HTTP request, and what it was for (the label reports count by)."""

    label: str
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json_api: bool = field(default=True)


def encode(value: Any) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{encode(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(encode(v) for v in value) + "]"
    return json.dumps(value)


# --- hostile values ---------------------------------------------------------------------------


def _nested(depth: int, kind: str) -> Raw:
    if kind == "list":
        return Raw("[" * depth + "]" * depth)
    return Raw('{"a":' * depth + "1" + "}" * depth)


def hostile(huge: int) -> st.SearchStrategy[Any]:
    """Any JSON value a client could send where another is expected; ``huge``: the longest string."""
    constants = st.sampled_from(
        [
            Raw("NaN"),
            Raw("Infinity"),
            Raw("-Infinity"),
            Raw("1e400"),
            Raw("-1e400"),
            Raw("1e20"),
            Raw("-1e20"),
            Raw("9" * 5000),
            Raw("-" + "9" * 4299),
            2**63,
            -(2**63) - 1,
            2**64,
            10**30,
            1.7976931348623157e308,
            -0.0,
            5e-324,
            True,
            False,
            None,
            "",
            " ",
            "\ud800",
            "\x00",
            "../../etc/passwd",
            "s3://",
            "s3://bucket/../../x",
            "file:///etc/shadow",
            "arn:aws:sagemaker:us-east-1:123456789012:endpoint/fuzz-ep",
            "1970-01-01T00:00:00Z",
            "99999-12-31T00:00:00Z",
            {},
            [],
            [None],
            {"": None},
        ]
    )
    return st.one_of(
        constants,
        st.builds(_nested, st.integers(1, 3000), st.sampled_from(["list", "dict"])),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(),
        st.text(max_size=50),
        st.integers(0, huge).map(lambda n: "x" * n),
        st.lists(st.integers(), max_size=5),
        st.dictionaries(st.text(max_size=10), st.integers(), max_size=3),
    )


# --- values that fit a shape -------------------------------------------------------------------


def _compiles(pattern: str) -> bool:
    try:
        re.compile(pattern)
    except re.error:
        return False
    return True


@functools.cache
def _pattern_strategy(pattern: str) -> st.SearchStrategy[str] | None:
    if not _compiles(pattern):
        return None
    try:
        return st.from_regex(pattern, fullmatch=True)
    except Exception:  # hypothesis cannot generate from some regex features
        return None


def _string(shape: Shape, names: tuple[str, ...]) -> st.SearchStrategy[Any]:
    meta = shape.metadata
    if shape.enum:
        return st.sampled_from(list(shape.enum))
    low, high = meta.get("min", 0), min(meta.get("max", 64), 64)
    options: list[st.SearchStrategy[Any]] = [st.text(min_size=low, max_size=max(low, high))]
    pattern = _pattern_strategy(meta["pattern"]) if "pattern" in meta else None
    if pattern is not None:
        options.append(pattern.filter(lambda s: len(s) <= meta.get("max", 1 << 20)))
    if names and ("Name" in shape.name or "Arn" in shape.name):
        options.append(st.sampled_from(names))
    return st.one_of(options)


def fitting(shape: Shape, names: tuple[str, ...], depth: int = 0) -> st.SearchStrategy[Any]:
    """Values of ``shape``, within its constraints most of the time (lists and maps kept small)."""
    meta = shape.metadata
    if isinstance(shape, StructureShape):
        if depth > 6:
            return st.just({})
        required = {
            n: _member(s, names, depth) for n, s in shape.members.items() if n in shape.required_members
        }
        optional = {n: _member(s, names, depth) for n, s in shape.members.items() if n not in required}
        return st.fixed_dictionaries(required, optional=optional)
    if isinstance(shape, ListShape):
        low = meta.get("min", 0)
        return st.lists(
            _member(shape.member, names, depth), min_size=low, max_size=max(low, min(meta.get("max", 3), 3))
        )
    if isinstance(shape, MapShape):
        return st.dictionaries(
            _string(shape.key, ()), _member(shape.value, names, depth), max_size=min(meta.get("max", 3), 3)
        )
    kind = shape.type_name
    if kind == "string":
        return _string(shape, names)
    if kind in ("integer", "long"):
        low, high = meta.get("min"), meta.get("max")
        return st.integers(min_value=low, max_value=high if high is not None else 2**31)
    if kind in ("float", "double"):
        return st.floats(
            min_value=meta.get("min"), max_value=meta.get("max"), allow_nan=False, allow_infinity=False
        )
    if kind == "boolean":
        return st.booleans()
    if kind == "timestamp":
        return st.one_of(
            st.floats(0, 4e9, allow_nan=False),
            st.integers(0, 4_000_000_000),
            st.datetimes().map(lambda d: d.isoformat() + "Z"),
        )
    if kind == "blob":
        return st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode())
    return st.none()


def _member(shape: Shape, names: tuple[str, ...], depth: int) -> st.SearchStrategy[Any]:
    # Members are generated lazily: SageMaker's shapes are recursive (SearchExpression).
    return st.deferred(lambda: _sometimes_hostile(shape, names, depth + 1))


def _sometimes_hostile(shape: Shape, names: tuple[str, ...], depth: int) -> st.SearchStrategy[Any]:
    return st.integers(0, 11).flatmap(
        lambda roll: hostile(2_000) if roll == 0 else fitting(shape, names, depth)
    )


# --- requests -------------------------------------------------------------------------------------


@functools.cache
def _model(service: str) -> Any:
    return botocore.session.get_session().get_service_model(service)


def _body(api: Api, operation: str, names: tuple[str, ...], huge: int) -> st.SearchStrategy[bytes]:
    model = _model(api.service)
    shape = model.operation_model(operation).input_shape if operation in model.operation_names else None
    document: st.SearchStrategy[Any] = fitting(shape, names) if shape is not None else st.just({})
    with_unknown = st.tuples(document, st.dictionaries(st.text(max_size=8), hostile(100), max_size=2)).map(
        lambda pair: {**pair[1], **pair[0]} if isinstance(pair[0], dict) else pair[0]
    )
    as_json = st.one_of(document, document, document, with_unknown).map(lambda doc: encode(doc).encode())
    whole = st.one_of(
        st.sampled_from(
            [b"", b"null", b"[]", b"1", b'"x"', b"{", b'{"a":}', b"\xff\xfe", b"{}" * 3, b'{"a":1,"a":2}']
        ),
        st.binary(max_size=200),
        hostile(huge).map(lambda value: encode(value).encode()),
        st.builds(_nested, st.integers(60, 100_000), st.sampled_from(["list", "dict"])).map(str.encode),
    )
    return st.integers(0, 9).flatmap(lambda roll: whole if roll == 0 else as_json)


def _operation(api: Api) -> st.SearchStrategy[str]:
    every = sorted(_model(api.service).operation_names)
    odd = st.sampled_from(["", "Nope", "x" * 300, "../", "SageMaker.CreateModel"])
    return st.integers(0, 19).flatmap(
        lambda roll: odd if roll == 0 else st.sampled_from(every) if roll < 4 else st.sampled_from(api.served)
    )


@st.composite
def json_requests(draw: Any, api: Api, huge: int = 20_000) -> Request:
    operation = draw(_operation(api))
    names = () if operation.startswith(("Delete", "Stop", "Update")) else KNOWN_NAMES
    body = draw(_body(api, operation, names, huge))
    headers = {"X-Amz-Target": api.target_prefix + operation, "Content-Type": api.content_type}
    if draw(st.integers(0, 19)) == 0:
        headers["Content-Type"] = draw(st.sampled_from(["", "text/plain", "application/json", "x" * 100]))
    label = f"{api.service}:{operation if operation in _model(api.service).operation_names else '(unknown)'}"
    return Request(label, "POST", "/", headers, body)


# Printable ASCII without surrounding spaces: what an HTTP client can send as a header value.
_HEADER_TEXT = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80).map(
    str.strip
)


def _npy(data: bytes) -> bytes:
    return b"\x93NUMPY\x01\x00" + len(data).to_bytes(2, "little") + data


RUNTIME_BODIES = st.one_of(
    st.sampled_from(
        [
            b"0.03,0.05,0.06,0.02,-0.04,-0.03,-0.04,-0.002,0.02,-0.01",
            b"1,2,3",
            b"a,b,c",
            b"",
            b"\xff\xfe\x00",
            b"NaN,Infinity,-Infinity,1e400,1,1,1,1,1,1",
            b"[[1,2,3,4,5,6,7,8,9,10]]",
            b'{"instances": [[1,2,3,4,5,6,7,8,9,10]]}',
            b"[NaN]",
            b"[" + b"9" * 5000 + b"]",
            b"\x93NUMPY garbage",
            _npy(b"{'descr': '<U5', 'fortran_order': False, 'shape': (1,), }\n"),
            _npy(b"{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999999999999,), }\n"),
            _npy(b"{'descr': '<f8', 'fortran_order': False, 'shape': (" + b"(" * 50),
            b"PK\x03\x04" + b"\x00" * 30,
        ]
    ),
    st.builds(_nested, st.integers(1, 100_000), st.sampled_from(["list", "dict"])).map(str.encode),
    st.binary(max_size=300),
    st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
)


@st.composite
def runtime_requests(draw: Any) -> Request:
    """InvokeEndpoint (mostly) and InvokeEndpointAsync requests to the fuzzed endpoint."""
    name = draw(
        st.sampled_from([ENDPOINT, ENDPOINT, ENDPOINT, "nope", "FUZZ-EP", "x" * 70, "%2e%2e", "a%00b"])
    )
    asynchronous = draw(st.integers(0, 9)) == 0
    suffix = "async-invocations" if asynchronous else "invocations"
    content_type = draw(
        st.sampled_from(
            ["text/csv", "application/json", "application/jsonlines", "application/x-npy"] * 3
            + ["application/octet-stream", "text/csv; charset=nope", "text/plain", "", "*/*"]
        )
    )
    headers = {"Content-Type": content_type}
    for header in (
        "Accept",
        "X-Amzn-SageMaker-Custom-Attributes",
        "X-Amzn-SageMaker-Target-Variant",
        "X-Amzn-SageMaker-InputLocation",
        "X-Amzn-SageMaker-RequestTTLSeconds",
        "X-Amzn-SageMaker-InvocationTimeoutSeconds",
        "X-Amzn-SageMaker-Inference-Id",
    ):
        if draw(st.integers(0, 3)) == 0:
            headers[header] = draw(
                st.one_of(_HEADER_TEXT, st.sampled_from(["-1", "9" * 40, "s3://b/k", "*/*"]))
            )
    body = b"" if asynchronous and draw(st.booleans()) else draw(RUNTIME_BODIES)
    label = "runtime:InvokeEndpointAsync" if asynchronous else "runtime:InvokeEndpoint"
    return Request(label, "POST", f"/endpoints/{name}/{suffix}", headers, body, json_api=False)


def any_request(huge: int = 20_000) -> st.SearchStrategy[Request]:
    """Requests to every API, by share: SageMaker's control plane 45%, the runtime 25%, CloudWatch
    Logs 15% and CloudWatch 15% (``st.one_of`` would favour its first branches)."""
    sagemaker = json_requests(APIS["sagemaker"], huge)
    logs, cloudwatch = json_requests(APIS["logs"], huge), json_requests(APIS["cloudwatch"], huge)
    runtime = runtime_requests()

    def pick(roll: int) -> st.SearchStrategy[Request]:
        if roll < 45:
            return sagemaker
        if roll < 70:
            return runtime
        return logs if roll < 85 else cloudwatch

    return st.integers(0, 99).flatmap(pick)


# --- the property -----------------------------------------------------------------------------------


class Broken(AssertionError):
    """The server broke the property for one request."""


def _strict(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def check(client: httpx.Client, base_url: str, request: Request) -> tuple[int, str | None]:
    """Send ``request``; its status and error code, or Broken naming what was wrong (a 5xx, a
    hang, an answer that is not what the protocol promises)."""
    try:
        response = client.request(
            request.method, base_url + request.path, headers=request.headers, content=request.body
        )
    except httpx.TimeoutException:
        raise Broken(f"{request.label}: no answer within the client's timeout") from None
    except httpx.TransportError as exc:
        raise Broken(f"{request.label}: the connection failed: {exc!r}") from None
    status = response.status_code
    if status >= 500:
        raise Broken(f"{request.label}: {status} {response.text[:500]}")
    if len(response.content) > 64 * 1024 and status >= 400:
        raise Broken(f"{request.label}: a {len(response.content)}-byte error message")
    code = response.headers.get("x-amzn-errortype")
    if request.json_api:
        try:
            document = _strict(response.text)
        except ValueError as exc:
            raise Broken(
                f"{request.label}: {status} answer is not JSON ({exc}): {response.text[:300]}"
            ) from None
        if status >= 400:
            if not (isinstance(document, dict) and "__type" in document):
                raise Broken(f"{request.label}: {status} error without __type: {response.text[:300]}")
            code = str(document["__type"]).rsplit("#", 1)[-1]
    elif status >= 400:
        try:
            error = _strict(response.text)
        except ValueError:
            error = None
        if not isinstance(error, dict) or "message" not in error or code is None:
            raise Broken(f"{request.label}: {status} error is not SageMaker's shape: {response.text[:300]}")
    return status, code if status >= 400 else None
