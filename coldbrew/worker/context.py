"""The ``context`` argument handler functions may take as their last parameter."""

from __future__ import annotations

_MAX_CUSTOM_ATTRIBUTES = 1024  # SageMaker's limit for the header in both directions


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
        "model_dir",
        "request_id",
    )

    def __init__(
        self,
        model_dir: str,
        request_id: str | None = None,
        custom_attributes: str | None = None,
        content_type: str | None = None,
        accept: str | None = None,
    ) -> None:
        self.model_dir = model_dir
        self.request_id = request_id
        self.custom_attributes = custom_attributes
        self.content_type = content_type
        self.accept = accept
        self._response_attributes: str | None = None

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
