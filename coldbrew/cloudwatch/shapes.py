"""Requests and responses as botocore's CloudWatch model shapes them, for every protocol.

botocore's model is the authority on the wire format (it is what every client serialises from), so
decoding and encoding walk its shapes instead of hand-written field lists:

- ``coerce`` checks a decoded JSON or CBOR document against an input shape and converts timestamps
  (epoch seconds, a CBOR tag-1 ``datetime`` or an ISO 8601 string) to Unix seconds;
- ``unflatten`` turns the query protocol's form (``Dimensions.member.1.Name=...``) into the same
  document first;
- ``document`` and ``xml`` write an output shape's value for JSON/CBOR and for the query protocol.

Parameter paths in messages are written as the query protocol names them
(``MetricDataQueries.member.2.MetricStat.Period``), as CloudWatch's own messages do.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import escape

import botocore.session
from botocore.model import OperationModel, ServiceModel, Shape

from coldbrew.cloudwatch.errors import InvalidParameterValue, MissingParameter

SERVED = ("GetMetricStatistics", "GetMetricData", "ListMetrics")
XML_NAMESPACE = "http://monitoring.amazonaws.com/doc/2010-08-01/"
# Year 1 to 9999 is what a datetime can hold; CloudWatch has no data outside 1970 to 3000 either.
_EARLIEST, _LATEST = 0.0, 32503680000.0
_INT_LIMIT = 2**63


@functools.cache
def service_model() -> ServiceModel:
    return botocore.session.get_session().get_service_model("cloudwatch")


@functools.cache
def operation(name: str) -> OperationModel | None:
    """The model of an operation coldbrew serves, or None."""
    if name not in SERVED:
        return None
    return service_model().operation_model(name)


def all_operations() -> list[str]:
    return list(service_model().operation_names)


# --- decoding -------------------------------------------------------------------------------------


def coerce(value: Any, shape: Shape, path: str = "") -> Any:
    """``value`` as ``shape`` says it is, or InvalidParameterValue/MissingParameter naming ``path``."""
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, Mapping):
            raise _invalid(value, path)
        out: dict[str, Any] = {}
        for name, member in shape.members.items():
            sub = f"{path}.{name}" if path else name
            if name in value and value[name] is not None:
                out[name] = coerce(value[name], member, sub)
            elif name in shape.required_members:
                raise MissingParameter(f"The parameter {sub} is required.")
        return out
    if kind == "list":
        if not isinstance(value, list):
            raise _invalid(value, path)
        return [coerce(item, shape.member, f"{path}.member.{i}") for i, item in enumerate(value, 1)]
    if kind == "map":
        if not isinstance(value, Mapping):
            raise _invalid(value, path)
        return {
            coerce(k, shape.key, f"{path}.entry.{i}.key"): coerce(v, shape.value, f"{path}.entry.{i}.value")
            for i, (k, v) in enumerate(value.items(), 1)
        }
    if kind == "string":
        if not isinstance(value, str):
            raise _invalid(value, path)
        return value
    if kind in ("integer", "long"):
        if isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise _invalid(value, path) from None
        if isinstance(value, bool) or not isinstance(value, int) or abs(value) >= _INT_LIMIT:
            raise _invalid(value, path)
        return value
    if kind in ("double", "float"):
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise _invalid(value, path) from None
        if isinstance(value, bool) or not isinstance(value, int | float) or not _finite(value):
            raise _invalid(value, path)
        return float(value)
    if kind == "boolean":
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise _invalid(value, path)
        return value
    if kind == "timestamp":
        return _timestamp(value, path)
    raise _invalid(value, path)  # blobs: CloudWatch's read operations take none


def _timestamp(value: Any, path: str) -> float:
    seconds: float
    if isinstance(value, datetime):
        seconds = (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if not _finite(value):
            raise _invalid(value, path)
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(text.replace("z", "Z"))
            except ValueError:
                raise _invalid(value, path) from None
            seconds = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    else:
        raise _invalid(value, path)
    if not (math.isfinite(seconds) and _EARLIEST <= seconds < _LATEST):
        raise InvalidParameterValue(f"The parameter {path} must be a time between 1970 and 3000.")
    return seconds


def _finite(value: int | float) -> bool:
    # An integer of hundreds of digits is no double: float() of it raises OverflowError.
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _invalid(value: Any, path: str) -> InvalidParameterValue:
    shown = value if isinstance(value, str | int | float) else type(value).__name__
    text = str(shown)
    if len(text) > 80:
        text = text[:77] + "..."
    return InvalidParameterValue(f"The value {text} for parameter {path} is invalid.")


def unflatten(form: Mapping[str, str], shape: Shape) -> dict[str, Any]:
    """The query protocol's ``Name.member.1.Key=value`` pairs as a document of ``shape``."""
    tree: dict[str, Any] = {}
    for key, value in form.items():
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {} if child is None else {"": child}
            node = child
        last = parts[-1]
        if isinstance(node.get(last), dict):
            node[last][""] = value
        else:
            node[last] = value
    result = _from_tree(tree, shape)
    return result if isinstance(result, dict) else {}


def _from_tree(node: Any, shape: Shape) -> Any:
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(node, dict):
            return node  # a scalar where a structure belongs: coerce() names it
        out = {}
        for name, member in shape.members.items():
            key = member.serialization.get("name", name)
            if key in node:
                out[name] = _from_tree(node[key], member)
        return out
    if kind == "list":
        if isinstance(node, str) or (isinstance(node, dict) and set(node) == {""}):
            return []  # botocore sends ``Name=`` for an empty list
        items = node.get("member", {}) if isinstance(node, dict) else {}
        return [_from_tree(v, shape.member) for _, v in sorted(_indexed(items))]
    if kind == "map":
        entries = node.get("entry", {}) if isinstance(node, dict) else {}
        out = {}
        for _, entry in sorted(_indexed(entries)):
            if isinstance(entry, dict) and "key" in entry:
                out[entry["key"]] = _from_tree(entry.get("value"), shape.value)
        return out
    if isinstance(node, dict):
        return node.get("", node)
    return node


def _indexed(items: Any) -> list[tuple[int, Any]]:
    if not isinstance(items, dict):
        return []
    out = []
    for key, value in items.items():
        if key.isdigit() and 0 < len(key) < 7:
            out.append((int(key), value))
    return out


# --- encoding -------------------------------------------------------------------------------------


def document(value: Any, shape: Shape, timestamp: Callable[[float], Any]) -> Any:
    """``value`` (timestamps as Unix seconds) for JSON or CBOR; ``timestamp`` writes a time."""
    kind = shape.type_name
    if kind == "structure":
        return {
            name: document(value[name], member, timestamp)
            for name, member in shape.members.items()
            if value.get(name) is not None
        }
    if kind == "list":
        return [document(item, shape.member, timestamp) for item in value]
    if kind == "map":
        return {k: document(v, shape.value, timestamp) for k, v in value.items()}
    if kind == "timestamp":
        return timestamp(value)
    if kind in ("double", "float"):
        return float(value)
    return value


def xml(operation_name: str, value: dict[str, Any], shape: Shape, request_id: str) -> bytes:
    """A query-protocol response: ``<OpResponse><OpResult>...</OpResult><ResponseMetadata>``."""
    wrapper = shape.serialization.get("resultWrapper", f"{operation_name}Result")
    parts = [f'<{operation_name}Response xmlns="{XML_NAMESPACE}"><{wrapper}>']
    xml_members(parts, value, shape)
    parts.append(
        f"</{wrapper}><ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>"
        f"</{operation_name}Response>"
    )
    return "".join(parts).encode()


def xml_members(parts: list[str], value: dict[str, Any], shape: Shape) -> None:
    """The members of ``value`` as the query protocol's XML, in ``shape``'s order (CloudWatch's and
    CloudFormation's responses)."""
    for name, member in shape.members.items():
        if value.get(name) is None:
            continue
        tag = member.serialization.get("name", name)
        parts.append(f"<{tag}>")
        _xml_value(parts, value[name], member)
        parts.append(f"</{tag}>")


def _xml_value(parts: list[str], value: Any, shape: Shape) -> None:
    kind = shape.type_name
    if kind == "structure":
        xml_members(parts, value, shape)
    elif kind == "list":
        for item in value:
            parts.append("<member>")
            _xml_value(parts, item, shape.member)
            parts.append("</member>")
    elif kind == "map":
        for k, v in value.items():
            parts.append(f"<entry><key>{escape(str(k))}</key><value>")
            _xml_value(parts, v, shape.value)
            parts.append("</value></entry>")
    elif kind == "timestamp":
        parts.append(iso8601(value))
    elif kind == "boolean":
        parts.append("true" if value else "false")
    elif kind in ("double", "float"):
        parts.append(repr(float(value)))
    else:
        parts.append(escape(str(value)))


def iso8601(seconds: float) -> str:
    moment = datetime.fromtimestamp(seconds, UTC)
    if moment.microsecond:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
