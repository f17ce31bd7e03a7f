"""The AWS JSON 1.1 wire protocol with raw HTTP: what a broken client gets back."""

from __future__ import annotations

import json
import random
from typing import Any

import httpx
import pytest

from tests.support import ColdbrewServer

HEADERS = {"Content-Type": "application/x-amz-json-1.1"}


def call(server: ColdbrewServer, target: str | None, body: bytes | str) -> httpx.Response:
    headers = dict(HEADERS)
    if target is not None:
        headers["X-Amz-Target"] = target
    return httpx.post(server.url + "/", headers=headers, content=body, timeout=10)


def test_ping(server: ColdbrewServer) -> None:
    assert httpx.get(server.url + "/ping").status_code == 200


def test_unknown_operation(server: ColdbrewServer) -> None:
    response = call(server, "SageMaker.MakeCoffee", "{}")
    assert response.status_code == 400
    assert response.json()["__type"] == "UnknownOperationException"
    assert "MakeCoffee" in response.json()["message"]


def test_known_but_unimplemented_operation(server: ColdbrewServer) -> None:
    response = call(server, "SageMaker.CreateTrainingJob", "{}")
    assert response.status_code == 400
    assert response.json() == {
        "__type": "UnknownOperationException",
        "message": "coldbrew does not implement SageMaker.CreateTrainingJob.",
    }


def test_missing_target(server: ColdbrewServer) -> None:
    response = call(server, None, "{}")
    assert response.status_code == 400
    assert "X-Amz-Target" in response.json()["message"]


@pytest.mark.parametrize("body", [b"not json", b"{", b"[1, 2]", b"\xff\xfe", b'"text"'])
def test_body_that_is_not_a_json_object(server: ColdbrewServer, body: bytes) -> None:
    response = call(server, "SageMaker.ListModels", body)
    assert response.status_code == 400
    assert response.json()["__type"] == "SerializationException"


def _garbage(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 3 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([0, -1, 2**70, 1.5, float("1e308")])
    if kind == 2:
        return rng.choice(["", "x" * 5000, "s3://b/k", "../../etc", "ml.m5.large", "\u2603"])
    if kind == 3:
        return rng.choice([True, False])
    if kind == 4:
        return rng.choice(["Name", "CreationTime", "Ascending"])
    if kind == 5:
        return [_garbage(rng, depth + 1) for _ in range(rng.randrange(3))]
    keys = [
        "ModelName",
        "EndpointName",
        "EndpointConfigName",
        "ProductionVariants",
        "PrimaryContainer",
        "ServerlessConfig",
        "VariantName",
        "MaxResults",
        "NextToken",
        "Tags",
        "Key",
        "ResourceArn",
        "ModelDataUrl",
        "MemorySizeInMB",
        "DesiredWeightsAndCapacities",
        "Junk",
    ]
    return {rng.choice(keys): _garbage(rng, depth + 1) for _ in range(rng.randrange(5))}


def test_no_input_gets_a_500(server: ColdbrewServer) -> None:
    rng = random.Random(1234)
    operations = [
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
        "DeleteEndpoint",
        "AddTags",
        "ListTags",
        "DeleteTags",
        "UpdateEndpointWeightsAndCapacities",
    ]
    for _ in range(400):
        operation = rng.choice(operations)
        body = _garbage(rng)
        if not isinstance(body, dict):
            body = {"X": body}
        response = call(server, f"SageMaker.{operation}", json.dumps(body))
        assert response.status_code < 500, (operation, body, response.text)
        assert response.status_code == 200 or "__type" in response.json()
    assert httpx.get(server.url + "/ping").status_code == 200
