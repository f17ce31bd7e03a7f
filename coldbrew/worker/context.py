"""The ``context`` argument handler functions may take as their last parameter.

Handlers written for SageMaker's containers get the model server's context there (the
multi-model-server / TorchServe ``Context``): ``system_properties``, ``request_processor`` (one
per request in the batch; coldbrew's batches hold one), ``get_request_header(idx, name)``,
``set_response_header(idx, name, value)`` and friends. This one offers the same calls, so such
handlers run unchanged, plus coldbrew's own conveniences (``custom_attributes``,
``set_response_custom_attributes``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import coldbrew

_MAX_CUSTOM_ATTRIBUTES = 1024  # SageMaker's limit for the header in both directions


class RequestProcessor:
    """One request's headers in, and what the handler sets on its response (the model server's API)."""

    __slots__ = ("_raw", "_request", "response_headers", "status_code", "reason_phrase")

    def __init__(self, headers: Mapping[bytes, bytes] | None = None) -> None:
        self._raw = headers or {}
        self._request: dict[str, str] | None = None
        self.response_headers: dict[str, str] = {}
        self.status_code = 200
        self.reason_phrase: str | None = None

    def get_request_properties(self) -> dict[str, str]:
        """Every request header, by lower-case name (decoded only when a handler asks)."""
        if self._request is None:
            self._request = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in self._raw.items()}
        return self._request

    def get_request_property(self, key: str) -> str | None:
        return self.get_request_properties().get(key.lower())

    def add_response_property(self, key: str, value: str) -> None:
        self.response_headers[key.lower()] = str(value)

    def get_response_header(self) -> dict[str, str]:
        return self.response_headers

    def report_status(self, code: int, reason_phrase: str | None = None) -> None:
        self.status_code = int(code)
        self.reason_phrase = reason_phrase

    def get_response_status_code(self) -> int:
        return self.status_code

    def get_response_status_phrase(self) -> str | None:
        return self.reason_phrase


class Context:
    """What a handler can see of the request and set on the response.

    One is built per request (and one, without request fields, for ``model_fn``). Handlers read
    ``custom_attributes`` (the ``X-Amzn-SageMaker-Custom-Attributes`` request header, or None) and
    answer with their own by calling :meth:`set_response_custom_attributes` or assigning
    ``response_custom_attributes``.
    """

    __slots__ = (
        "_response_attributes",
        "accept",
        "content_type",
        "custom_attributes",
        "manifest",
        "metrics",
        "model_dir",
        "model_name",
        "request_id",
        "request_processor",
    )

    def __init__(
        self,
        model_dir: str,
        request_id: str | None = None,
        custom_attributes: str | None = None,
        content_type: str | None = None,
        accept: str | None = None,
        headers: Mapping[bytes, bytes] | None = None,
    ) -> None:
        self.model_dir = model_dir
        self.request_id = request_id
        self.custom_attributes = custom_attributes
        self.content_type = content_type
        self.accept = accept
        self._response_attributes: str | None = None
        self.model_name = "model"
        self.manifest: dict[str, Any] | None = None
        self.metrics: Any = None
        self.request_processor = [RequestProcessor(headers)]

    # --- the model server's calls (index 0: the one request) ----------------------------------

    @property
    def system_properties(self) -> dict[str, Any]:
        return {
            "model_dir": self.model_dir,
            "gpu_id": None,
            "batch_size": 1,
            "server_name": "coldbrew",
            "server_version": coldbrew.__version__,
        }

    def get_request_id(self, idx: int = 0) -> str | None:
        return self.request_id

    def get_request_header(self, idx: int, key: str) -> str | None:
        return self.request_processor[idx].get_request_property(key)

    def get_all_request_header(self, idx: int) -> dict[str, str]:
        return self.request_processor[idx].get_request_properties()

    def set_response_header(self, idx: int, key: str, value: str) -> None:
        if key.lower() == "x-amzn-sagemaker-custom-attributes":
            self.set_response_custom_attributes(value)
        else:
            self.request_processor[idx].add_response_property(key, value)

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.request_processor[idx].add_response_property("content-type", value)

    def get_response_content_type(self, idx: int) -> str | None:
        return self.request_processor[idx].response_headers.get("content-type")

    def get_response_headers(self, idx: int) -> dict[str, str]:
        return self.request_processor[idx].get_response_header()

    def set_http_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        self.request_processor[idx].report_status(code, phrase)

    def get_http_response_status(self, idx: int) -> tuple[int, str | None]:
        processor = self.request_processor[idx]
        return processor.status_code, processor.reason_phrase

    @property
    def response_custom_attributes(self) -> str | None:
        return self._response_attributes

    @response_custom_attributes.setter
    def response_custom_attributes(self, value: str | None) -> None:
        self.set_response_custom_attributes(value)

    def set_response_custom_attributes(self, value: str | None) -> None:
        """Send ``value`` back in the ``X-Amzn-SageMaker-Custom-Attributes`` response header."""
        if value is not None:
            # Checked here, not when the header is written, so the error points at the handler.
            if not isinstance(value, str):
                raise TypeError(f"custom attributes must be a str, got {type(value).__name__}")
            if len(value) > _MAX_CUSTOM_ATTRIBUTES or not (value.isascii() and value.isprintable()):
                raise ValueError(
                    f"custom attributes must be at most {_MAX_CUSTOM_ATTRIBUTES} printable ASCII characters"
                )
        self._response_attributes = value

    def __repr__(self) -> str:
        return f"Context(model_dir={self.model_dir!r}, request_id={self.request_id!r})"
