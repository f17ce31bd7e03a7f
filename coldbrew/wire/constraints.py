"""A request's values checked against the constraints of botocore's service model (lengths,
ranges, enums, patterns, required members), reported in the AWS wire format. Shared by every API
whose shapes come from botocore (SageMaker's control plane, CloudWatch Logs)."""

from __future__ import annotations

import functools
import math
import re
import reprlib
import sys
from typing import Any

from botocore.model import ListShape, MapShape, Shape, StructureShape
from botocore.utils import parse_to_aware_datetime
from botocore.validate import ParamValidator


@functools.cache
def _pattern(source: str) -> re.Pattern[str] | None:
    # The model's patterns are Java regexes; the few Python cannot compile (\p{L} classes) are
    # left to the type checks rather than rejecting valid input.
    try:
        return re.compile(source)
    except re.error:
        return None


# Patterns coldbrew deliberately widens: an Image may be "exec:COMMAND ARGS" (a user's own server),
# which contains spaces; and model data (the "Url" shape, ModelDataUrl) may also be a local
# absolute path or file:// URL besides the s3:// and https:// URLs SageMaker's pattern allows.
WIDENED_PATTERNS = frozenset({"ContainerImage"})
LOCAL_URL_SHAPES = frozenset({"Url"})
_LOCAL_PATH = re.compile(r"(file://)?/.*")


def _lower_first(name: str) -> str:
    return name[:1].lower() + name[1:]


SHOWN_CHARS = 100
"""Most characters of a client's value an error message quotes: a 6 MB value is not echoed."""

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, SHOWN_CHARS, SHOWN_CHARS
_REPR.maxlist = _REPR.maxdict = _REPR.maxtuple = _REPR.maxset = 10


def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """A client's value as an error message quotes it, at most ``limit`` characters (then "...").
    Containers are abbreviated without visiting all of them, however big or deep."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 1024:
        text = f"an integer of {len(str(abs(value)))} digits"  # under the 4,300-digit str() limit
    elif isinstance(value, dict | list | tuple):
        text = _REPR.repr(value)
    else:
        text = str(value)
    return text if len(text) <= limit else text[:limit] + "..."


def bounded(message: str, limit: int = 300) -> str:
    """Each line of a report (botocore's, which quotes whole values) cut to ``limit`` characters."""
    lines = [line if len(line) <= limit else line[:limit] + "..." for line in message.splitlines()]
    return " ".join(line.strip() for line in lines if line.strip())


MIN_TIMESTAMP, MAX_TIMESTAMP = -62135596800.0, 253402300799.0
"""0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z: the timestamps a datetime can hold."""


def timestamp_seconds(value: Any) -> float | None:
    """A request's timestamp (epoch seconds, or a string botocore reads as one) in epoch
    seconds; None if it is not one or lies outside years 1 to 9999 (where botocore's own parser
    raises errors of its own, or a RuntimeError)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an integer of hundreds of digits
            return None
    elif isinstance(value, str) and len(value) <= 64:
        try:
            seconds = float(value)
        except ValueError:
            try:
                seconds = parse_to_aware_datetime(value).timestamp()
            except Exception:  # dateutil raises what it likes (ValueError, OverflowError, ...)
                return None
    else:
        return None
    if not math.isfinite(seconds) or not MIN_TIMESTAMP <= seconds <= MAX_TIMESTAMP:
        return None
    return seconds


_INTEGER_BITS = {"integer": 31, "long": 63}
_MAX_FLOAT_INT = int(sys.float_info.max)


def constraint_errors(value: Any, shape: Shape, path: str = "") -> list[str]:
    """Every constraint ``value`` breaks, in the AWS wire format: member paths in lower camel case,
    list items as ``.N.member`` counted from 1, and AWS's standard wording for null, length, range,
    enum and pattern constraints (what the service answers, not botocore's client-side report)."""
    errors: list[str] = []
    meta = shape.metadata
    where = path or _lower_first(shape.name)

    def broken(rule: str, bad: Any = None) -> None:
        quoted = "" if bad is None else f" '{shown(bad)}'"
        errors.append(f"Value{quoted} at '{where}' failed to satisfy constraint: Member must {rule}")

    if isinstance(shape, StructureShape) and isinstance(value, dict):
        for member_name, member_shape in shape.members.items():
            child = f"{path}.{_lower_first(member_name)}" if path else _lower_first(member_name)
            if value.get(member_name) is None:
                if member_name in shape.required_members:
                    errors.append(
                        f"Value null at '{child}' failed to satisfy constraint: Member must not be null"
                    )
                continue
            errors += constraint_errors(value[member_name], member_shape, child)
    elif isinstance(shape, ListShape | MapShape) and isinstance(value, list | dict):
        if "min" in meta and len(value) < meta["min"]:
            broken(f"have length greater than or equal to {meta['min']}")
        if "max" in meta and len(value) > meta["max"]:
            broken(f"have length less than or equal to {meta['max']}")
        if isinstance(shape, ListShape) and isinstance(value, list):
            for index, item in enumerate(value):
                errors += constraint_errors(item, shape.member, f"{where}.{index + 1}.member")
        elif isinstance(shape, MapShape) and isinstance(value, dict):
            for key, item in value.items():
                errors += constraint_errors(key, shape.key, f"{where}.key")
                errors += constraint_errors(item, shape.value, f"{where}.{shown(key)}")
    elif shape.type_name == "string" and isinstance(value, str):
        if "min" in meta and len(value) < meta["min"]:
            broken(f"have length greater than or equal to {meta['min']}", value)
        if "max" in meta and len(value) > meta["max"]:
            broken(f"have length less than or equal to {meta['max']}", value)
        if shape.enum and value not in shape.enum:
            broken(f"satisfy enum value set: [{', '.join(shape.enum)}]", value)
        # A value already too long is not matched too: a pattern over megabytes can backtrack
        # for seconds.
        checked = "pattern" in meta and shape.name not in WIDENED_PATTERNS
        checked = checked and len(value) <= meta.get("max", 1 << 20)
        if checked and shape.name in LOCAL_URL_SHAPES and _LOCAL_PATH.fullmatch(value):
            checked = False
        pattern = _pattern(meta["pattern"]) if checked else None
        if pattern is not None and not pattern.fullmatch(value):
            broken(f"satisfy regular expression pattern: {meta['pattern']}", value)
    elif shape.type_name == "timestamp" and not isinstance(value, dict | list):
        if timestamp_seconds(value) is None:
            broken("be a timestamp between 0001-01-01 and 9999-12-31 (ISO 8601 or epoch seconds)", value)
    elif (
        shape.type_name in ("integer", "long", "float", "double")
        and isinstance(value, int | float)
        and not isinstance(value, bool)
    ):
        bits = _INTEGER_BITS.get(shape.type_name)
        if isinstance(value, float) and not math.isfinite(value):
            # NaN and Infinity are not JSON: stored, they would be echoed back as invalid JSON.
            broken("be a finite number", value)
        elif bits is None and isinstance(value, int) and abs(value) > _MAX_FLOAT_INT:
            broken("be a finite number", value)  # float() of it overflows
        elif bits is not None and isinstance(value, int) and not -(2**bits) <= value < 2**bits:
            # What AWS's services deserialize an integer (32 bits) or long (64 bits) into.
            broken(f"be a {bits + 1}-bit integer", value)
        elif "min" in meta and value < meta["min"]:
            broken(f"have value greater than or equal to {meta['min']}", value)
        elif "max" in meta and value > meta["max"]:
            broken(f"have value less than or equal to {meta['max']}", value)
    return errors


MAX_LISTED_ERRORS = 10
"""Most constraint errors one message spells out (a list of 10,000 bad items is one message)."""


def errors_message(errors: list[str]) -> str:
    count = len(errors)
    noun = "error" if count == 1 else "errors"
    listed = "; ".join(errors[:MAX_LISTED_ERRORS])
    if count > MAX_LISTED_ERRORS:
        listed += f"; and {count - MAX_LISTED_ERRORS} more"
    return f"{count} validation {noun} detected: {listed}"


def params_error(params: dict[str, Any], shape: Shape) -> str | None:
    """Why ``params`` do not fit ``shape``, or None: the constraints in AWS's wording, then the
    wrong types and unknown members botocore's validator finds (its report cut to a bounded
    length, as it quotes whole values)."""
    errors = constraint_errors(params, shape)
    if errors:
        return errors_message(errors)
    report = ParamValidator().validate(params, shape)
    if report.has_errors():
        return bounded(report.generate_report())
    return None
