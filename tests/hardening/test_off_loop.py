"""Control requests are parsed and validated off the event loop (issue 14, point 4): a multi-MB body
parsed on the loop would stall every invocation meanwhile. In process, through the real handler."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.testclient import TestClient

from coldbrew.gateway import control_api
from coldbrew.gateway.control_api import ControlEndpoint


class _Plane:
    def __init__(self) -> None:
        self.operations = {"ListModels": lambda context, params: {"Models": [], "Seen": sorted(params)}}


def _on_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def test_bodies_are_parsed_and_validated_in_a_worker_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, bool]] = []
    parse, validate = control_api.parse_json_object, control_api.validate_input

    def parse_watched(raw: bytes, error: Any) -> dict[str, Any]:
        seen.append(("parse", _on_loop()))
        return parse(raw, error)

    def validate_watched(model: Any, params: dict[str, Any]) -> None:
        seen.append(("validate", _on_loop()))
        validate(model, params)

    monkeypatch.setattr(control_api, "parse_json_object", parse_watched)
    monkeypatch.setattr(control_api, "validate_input", validate_watched)
    endpoint = ControlEndpoint(_Plane(), "123456789012", "us-east-1")  # type: ignore[arg-type]
    app = Starlette(routes=[Route("/", endpoint.handle, methods=["POST"])])
    body = json.dumps({"NameContains": "x" * 60, "MaxResults": 5})
    with TestClient(app) as client:
        response = client.post("/", content=body, headers={"X-Amz-Target": "SageMaker.ListModels"})
    assert response.status_code == 200, response.text
    assert response.json()["Seen"] == ["MaxResults", "NameContains"]
    assert seen == [("parse", False), ("validate", False)]
