"""The plan of a stack operation (pure): what changes, in place or by replacement, and the names
CloudFormation would give; and template properties typed as SageMaker's API takes them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from coldbrew.stacks.catalog import ENDPOINT, ENDPOINT_CONFIG, MODEL
from coldbrew.stacks.errors import ValidationError
from coldbrew.stacks.evaluation import Evaluation, StackIdentity, evaluate_template
from coldbrew.stacks.parameters import ParameterInput, resolve
from coldbrew.stacks.plan import Deployed, decide, generated_name, lookup, plan_changes
from coldbrew.stacks.resources import request_for
from coldbrew.stacks.template import parse_template

SEED = parse_template(
    (Path(__file__).resolve().parents[2] / "examples" / "mlops-endpoint-template.yml").read_text()
)
IDENTITY = StackIdentity(
    "rf", "arn:aws:cloudformation:us-east-1:123456789012:stack/rf/1", "us-east-1", "123456789012"
)
BASE = {
    "SageMakerProjectName": "rf",
    "ModelExecutionRoleArn": "arn:aws:iam::123456789012:role/any",
    "ModelDataUrl": "s3://models/rf.tar.gz",
    "StageName": "staging",
    "EndpointInstanceCount": "1",
    "EndpointInstanceType": "ml.m5.large",
    "DataCaptureUploadPath": "s3://capture/rf",
    "SamplingPercentage": "100",
}
PHYSICAL = {
    "Model": "Model-aaaaaaaaaaaa",
    "EndpointConfig": "EndpointConfig-bbbbbbbbbbbb",
    "Endpoint": "rf-staging",
}


def evaluation(**overrides: str) -> Evaluation:
    values = {**BASE, **overrides}
    resolved = resolve(SEED.parameters, [ParameterInput(k, v) for k, v in values.items()])
    return evaluate_template(SEED, resolved, IDENTITY)


def deployed(**overrides: str) -> dict[str, Deployed]:
    """The seed stack as created with ``overrides``."""
    ev = evaluation(**overrides)
    look = lookup(IDENTITY, {k: r.type for k, r in SEED.resources.items()}, PHYSICAL.get)
    return {
        lid: Deployed(SEED.resources[lid].type, PHYSICAL[lid], ev.properties(lid, look))
        for lid in ev.active()
    }


def summary(changes: list[Any]) -> list[tuple[str, str, str | None]]:
    return [(c.action, c.logical_id, c.replacement) for c in changes]


def test_both_stages_evaluate_as_the_article_says() -> None:
    look = lookup(IDENTITY, {k: r.type for k, r in SEED.resources.items()}, PHYSICAL.get)
    staging = evaluation().properties("EndpointConfig", look)
    assert staging == {
        "ProductionVariants": [
            {
                "InitialVariantWeight": 1.0,
                "ModelName": "Model-aaaaaaaaaaaa",
                "VariantName": "AllTraffic",
                "ServerlessConfig": {"MaxConcurrency": "20", "MemorySizeInMB": "2048"},
            }
        ]
    }
    prod = evaluation(StageName="prod").properties("EndpointConfig", look)
    assert prod["ProductionVariants"][0]["InstanceType"] == "ml.m5.large"
    assert "ServerlessConfig" not in prod["ProductionVariants"][0]
    assert prod["DataCaptureConfig"]["CaptureOptions"] == [
        {"CaptureMode": "Input"},
        {"CaptureMode": "Output"},
    ]
    assert evaluation(StageName="prod").properties("Endpoint", look)["EndpointName"] == "rf-prod"


def test_a_new_stack_adds_everything() -> None:
    assert summary(plan_changes(evaluation(), {})) == [
        ("Add", "Model", None),
        ("Add", "EndpointConfig", None),
        ("Add", "Endpoint", None),
    ]


def test_the_same_parameters_change_nothing() -> None:
    assert plan_changes(evaluation(), deployed()) == []


def test_a_new_memory_size_replaces_the_config_and_updates_the_endpoint() -> None:
    changes = plan_changes(evaluation(MemorySizeInMB="1024"), deployed())
    assert summary(changes) == [("Modify", "EndpointConfig", "True"), ("Modify", "Endpoint", "False")]
    endpoint = changes[1].details[0]
    assert (endpoint.name, endpoint.requires_recreation, endpoint.evaluation) == (
        "EndpointConfigName",
        "Never",
        "Dynamic",
    )


def test_a_new_model_replaces_model_and_config() -> None:
    changes = plan_changes(evaluation(ModelDataUrl="s3://models/rf-v2.tar.gz"), deployed())
    assert summary(changes) == [
        ("Modify", "Model", "True"),
        ("Modify", "EndpointConfig", "Conditional"),  # its ModelName is known once the model exists
        ("Modify", "Endpoint", "False"),
    ]


def test_a_new_stage_renames_and_so_replaces_the_endpoint() -> None:
    changes = plan_changes(evaluation(StageName="prod"), deployed())
    assert summary(changes) == [("Modify", "EndpointConfig", "True"), ("Modify", "Endpoint", "True")]


def test_resources_the_template_drops_are_removed() -> None:
    old = deployed()
    old["Extra"] = Deployed(MODEL.name, "Extra-cccccccccccc", {})
    assert summary(plan_changes(evaluation(), old)) == [("Remove", "Extra", None)]


def test_decide() -> None:
    old = Deployed(ENDPOINT.name, "e", {"EndpointConfigName": "a", "Tags": []})
    assert decide(ENDPOINT, None, {}).verdict == "create"
    assert decide(ENDPOINT, old, {"EndpointConfigName": "a", "Tags": []}).verdict == "keep"
    assert decide(ENDPOINT, old, {"EndpointConfigName": "b"}).verdict == "update"
    assert decide(ENDPOINT, old, {"EndpointConfigName": "a", "EndpointName": "x"}).verdict == "replace"
    tagged = Deployed(MODEL.name, "m", {"Tags": [{"Key": "a", "Value": "1"}]})
    assert decide(MODEL, tagged, {"Tags": [{"Key": "a", "Value": "2"}]}).verdict == "update"
    with pytest.raises(ValidationError, match="Update of resource type is not permitted"):
        decide(ENDPOINT_CONFIG, old, {})


def test_generated_names_are_as_cloudformation_makes_them() -> None:
    assert re.fullmatch(r"EndpointConfig-[A-Za-z0-9]{12}", generated_name("EndpointConfig", "u9H3Iqw70Kp2"))
    long = generated_name("L" * 80, "abcdefghijkl")
    assert len(long) == 63 and long.endswith("-abcdefghijkl")


def test_properties_are_typed_as_the_api_takes_them() -> None:
    request = request_for(
        "CreateEndpointConfig",
        {
            "EndpointConfigName": "c",
            "ProductionVariants": [
                {"VariantName": "v", "ModelName": "m", "InitialInstanceCount": "2", "InitialVariantWeight": 1}
            ],
            "DataCaptureConfig": {"EnableCapture": "true", "InitialSamplingPercentage": "50.0"},
        },
    )
    variant = request["ProductionVariants"][0]
    assert variant["InitialInstanceCount"] == 2 and variant["InitialVariantWeight"] == 1.0
    assert request["DataCaptureConfig"] == {"EnableCapture": True, "InitialSamplingPercentage": 50}
    # What cannot be converted is left for the operation's validation to name.
    assert request_for("CreateModel", {"ModelName": 5, "EnableNetworkIsolation": "maybe"}) == {
        "ModelName": "5",
        "EnableNetworkIsolation": "maybe",
    }
