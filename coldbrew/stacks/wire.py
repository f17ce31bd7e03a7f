"""CloudFormation's wire protocol, the AWS query protocol, as botocore speaks it: a form-encoded
``POST /`` with ``Action`` and ``Version`` (``Parameters.member.1.ParameterKey=...``), answered
with ``<ActionResponse><ActionResult>...`` XML in CloudFormation's namespace, errors as
``<ErrorResponse><Error><Type>Sender</Type><Code>ValidationError</Code>...``.

Requests are shaped by botocore's CloudFormation model (the same walk over shapes the CloudWatch
query protocol uses, ``coldbrew.cloudwatch.shapes``), so every member a client sends is typed
as the model says.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

import botocore.session
from botocore.model import OperationModel, ServiceModel

from coldbrew.cloudwatch.errors import CloudWatchError
from coldbrew.cloudwatch.shapes import coerce, unflatten, xml_members
from coldbrew.stacks.errors import InvalidAction, StackError, ValidationError

NAMESPACE = "http://cloudformation.amazonaws.com/doc/2010-05-15/"
MAX_FORM_FIELDS = 10_000


@dataclass(frozen=True)
class Request:
    action: str
    params: dict[str, Any]


@functools.cache
def service_model() -> ServiceModel:
    return botocore.session.get_session().get_service_model("cloudformation")


def operation_model(name: str) -> OperationModel | None:
    model = service_model()
    return model.operation_model(name) if name in model.operation_names else None


def decode(body: bytes, query: str, served: frozenset[str]) -> Request:
    """The action a form (the body, or a GET's query string) asks for, and its parameters."""
    text = body.decode("utf-8", errors="replace") if body else query
    try:
        form = dict(parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS, errors="strict"))
    except ValueError as exc:
        raise ValidationError(f"The request is not a valid form: {str(exc)[:120]}") from None
    action = form.pop("Action", "")
    form.pop("Version", None)
    if not action:
        raise InvalidAction("The request names no CloudFormation operation (Action).")
    model = operation_model(action)
    if model is None or action not in served:
        shown = action[:80]
        if model is not None:
            raise InvalidAction(
                f"coldbrew does not serve CloudFormation's {shown}; it serves {', '.join(sorted(served))}."
            )
        raise InvalidAction(f"The action {shown} is not valid for this web service.")
    shape = model.input_shape
    if shape is None:
        return Request(action, {})
    try:
        params = coerce(unflatten(form, shape), shape)
    except CloudWatchError as error:  # the shapes' walk names the member; CloudFormation says ValidationError
        raise ValidationError(error.message) from None
    return Request(action, params)


# --- responses ------------------------------------------------------------------------------------


def encode(action: str, result: dict[str, Any], request_id: str) -> bytes:
    model = operation_model(action)
    assert model is not None
    parts = [f'<{action}Response xmlns="{NAMESPACE}">']
    shape = model.output_shape
    if shape is not None:
        wrapper = shape.serialization.get("resultWrapper", f"{action}Result")
        parts.append(f"<{wrapper}>")
        xml_members(parts, result, shape)
        parts.append(f"</{wrapper}>")
    parts.append(
        f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata></{action}Response>"
    )
    return "".join(parts).encode()


def encode_error(error: StackError, request_id: str) -> bytes:
    return (
        f'<ErrorResponse xmlns="{NAMESPACE}"><Error><Type>{error.fault}</Type><Code>{error.code}</Code>'
        f"<Message>{escape(error.message)}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
    ).encode()
