"""CloudWatch Logs' error codes, as its AWS JSON protocol sends them (``__type``, HTTP 400)."""

from __future__ import annotations

from coldbrew.errors import ColdbrewError

GROUP_NOT_FOUND = "The specified log group does not exist."
STREAM_NOT_FOUND = "The specified log stream does not exist."
BAD_TOKEN = "The specified nextToken is invalid."


class LogsError(ColdbrewError):
    """Root of the errors the Logs API answers with."""

    code = "InvalidParameterException"
    status = 400


class ResourceNotFoundException(LogsError):
    code = "ResourceNotFoundException"


class InvalidParameterException(LogsError):
    code = "InvalidParameterException"


class InvalidOperationException(LogsError):
    """An operation of the Logs API that coldbrew does not serve."""

    code = "InvalidOperationException"


class SerializationException(LogsError):
    code = "SerializationException"


class ServiceUnavailableException(LogsError):
    """Our own failure (the store could not be read), never the client's."""

    code = "ServiceUnavailableException"
    status = 500
