"""Errors of the worker: what a handler raises to choose a status, and what setup reports.

The translation of an exception into an HTTP response happens in one place,
:func:`describe`, used by :mod:`coldbrew.worker.app`. The gateway wraps any non-2xx answer of a
worker into SageMaker's ``ModelError`` (``coldbrew.errors``), so these never reach a client as-is.
"""

from __future__ import annotations

from http import HTTPStatus


class InferenceError(Exception):
    """Raise from a handler to answer with ``status_code`` and ``message``.

    The equivalent of the SageMaker inference toolkit's ``BaseInferenceToolkitError``; like it,
    ``phrase`` is accepted for compatibility (the reason phrase is not sent over HTTP/1.1 here).
    """

    def __init__(self, status_code: int, message: str, phrase: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.phrase = phrase if phrase is not None else _phrase(status_code)


class BadRequest(InferenceError):
    """The body could not be read as the declared content type (400)."""

    def __init__(self, message: str) -> None:
        super().__init__(HTTPStatus.BAD_REQUEST, message)


class UnsupportedMediaType(InferenceError):
    """No input_fn understands the request's Content-Type (415)."""

    def __init__(self, message: str) -> None:
        super().__init__(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, message)


class NotAcceptable(InferenceError):
    """No output_fn can produce what the request's Accept asks for (406)."""

    def __init__(self, message: str) -> None:
        super().__init__(HTTPStatus.NOT_ACCEPTABLE, message)


class ModelLoadError(Exception):
    """Setup failed; ``str(self)`` is the one line the status pipe carries to the gateway."""


def describe(exc: BaseException) -> tuple[int, str]:
    """Return the HTTP status and the ``"<ExceptionClass>: <message>"`` text for ``exc``.

    Any exception with an integer ``status_code`` and a ``message`` chooses its status, so the
    toolkit's own ``BaseInferenceToolkitError`` subclasses work unchanged; a status outside
    400-599 would claim success or redirect, so it becomes 500. Everything else is a 500.
    """
    status = getattr(exc, "status_code", None)
    message = getattr(exc, "message", None)
    if isinstance(status, int) and not isinstance(status, bool) and message is not None:
        if not 400 <= status <= 599:
            status = int(HTTPStatus.INTERNAL_SERVER_ERROR)
        return int(status), f"{type(exc).__name__}: {message}"
    return int(HTTPStatus.INTERNAL_SERVER_ERROR), f"{type(exc).__name__}: {exc}"


def one_line(exc: BaseException) -> str:
    """``"<ExceptionClass>: <message>"`` folded onto one line, for the status pipe and logs."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _phrase(status_code: int) -> str:
    try:
        return HTTPStatus(status_code).phrase
    except ValueError:
        return ""
