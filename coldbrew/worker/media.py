"""Media type names and header parsing shared by the handler pipeline and the default codecs."""

from __future__ import annotations

CSV = "text/csv"
JSON = "application/json"
JSONLINES = "application/jsonlines"
NPY = "application/x-npy"
LIBSVM = "text/libsvm"
ANY = "*/*"
OCTET_STREAM = "application/octet-stream"

# Other spellings clients send for the same formats, mapped to the names above. SageMaker's
# containers accept "text/x-libsvm" and "application/x-jsonlines" alike.
ALIASES = {
    "application/x-jsonlines": JSONLINES,
    "application/jsonl": JSONLINES,
    "text/x-libsvm": LIBSVM,
    "application/npy": NPY,
}

# Bodies of these types reach input_fn/transform_fn as str, as in the SageMaker toolkit, so
# handlers written for SageMaker (``request_body.split("\n")``) keep working.
TEXT_TYPES = frozenset({CSV, JSON})


def media_type(header: str) -> str:
    """``"Text/CSV; charset=utf-8"`` -> ``"text/csv"``."""
    return header.split(";", 1)[0].strip().lower()


def canonical(header: str) -> str:
    """The media type of ``header`` with aliases resolved: ``"text/x-libsvm"`` -> ``"text/libsvm"``."""
    kind = media_type(header)
    return ALIASES.get(kind, kind)


def charset(header: str, default: str = "utf-8") -> str:
    """The ``charset`` parameter of a Content-Type header, or ``default``."""
    for param in header.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"') or default
    return default


def first_concrete(accept: str) -> str | None:
    """The first media range in an Accept header without a wildcard, or None."""
    for part in accept.split(","):
        candidate = part.split(";", 1)[0].strip()
        if candidate and "*" not in candidate:
            return candidate
    return None
