"""Intrinsic functions and conditions, evaluated against a scope (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from coldbrew.stacks.errors import TemplateError
from coldbrew.stacks.evaluation import StackIdentity
from coldbrew.stacks.intrinsics import NO_VALUE, Reference, Scope, evaluate, evaluate_conditions, references

IDENTITY = StackIdentity(
    "demo", "arn:aws:cloudformation:us-east-1:123456789012:stack/demo/1", "us-east-1", "123456789012"
)


def scope(**conditions: bool) -> Scope:
    return Scope(
        parameters={"Stage": "prod", "Memory": "2048", "Subnets": ["a", "b"]},
        pseudo=IDENTITY.pseudo(),
        mappings={"Sizes": {"prod": {"Memory": 4096}, "staging": {"Memory": 1024}}},
        conditions=conditions,
        resource_ref=lambda name: f"arn:aws:sagemaker:us-east-1:123456789012:model/{name.lower()}",
        resource_attribute=lambda name, attribute: f"{name}-physical",
    )


def ev(node: Any, **conditions: bool) -> Any:
    return evaluate(node, scope(**conditions), "Resources/R/Properties")


def test_ref_and_getatt() -> None:
    assert ev({"Ref": "Stage"}) == "prod"
    assert ev({"Ref": "AWS::Region"}) == "us-east-1"
    assert ev({"Ref": "Model"}) == "arn:aws:sagemaker:us-east-1:123456789012:model/model"
    assert ev({"Fn::GetAtt": ["Model", "ModelName"]}) == "Model-physical"
    assert ev({"Fn::GetAtt": "Model.ModelName"}) == "Model-physical"


def test_sub_in_both_forms() -> None:
    assert ev({"Fn::Sub": "${AWS::StackName}-${Stage}-${Model.ModelName}-${!Literal}"}) == (
        "demo-prod-Model-physical-${Literal}"
    )
    assert ev({"Fn::Sub": ["${Name}/${AWS::AccountId}", {"Name": {"Ref": "Stage"}}]}) == "prod/123456789012"


def test_join_select_split_find_in_map_base64() -> None:
    assert ev({"Fn::Join": ["-", ["a", {"Ref": "Stage"}, 3]]}) == "a-prod-3"
    assert ev({"Fn::Join": [",", {"Ref": "Subnets"}]}) == "a,b"
    assert ev({"Fn::Select": ["1", {"Ref": "Subnets"}]}) == "b"
    assert ev({"Fn::Select": [0, {"Fn::Split": ["/", "x/y"]}]}) == "x"
    assert ev({"Fn::FindInMap": ["Sizes", {"Ref": "Stage"}, "Memory"]}) == 4096
    assert ev({"Fn::Base64": "hi"}) == "aGk="


def test_if_and_no_value_remove_what_they_stand_for() -> None:
    node = {
        "InstanceType": {"Fn::If": ["IsProd", "ml.m5.large", {"Ref": "AWS::NoValue"}]},
        "ServerlessConfig": {
            "Fn::If": ["IsProd", {"Ref": "AWS::NoValue"}, {"MemorySizeInMB": {"Ref": "Memory"}}]
        },
        "Items": ["a", {"Fn::If": ["IsProd", {"Ref": "AWS::NoValue"}, "b"]}],
    }
    assert ev(node, IsProd=True) == {"InstanceType": "ml.m5.large", "Items": ["a"]}
    assert ev(node, IsProd=False) == {"ServerlessConfig": {"MemorySizeInMB": "2048"}, "Items": ["a", "b"]}
    assert ev({"Ref": "AWS::NoValue"}) is NO_VALUE


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ({"Fn::Select": [5, ["a"]]}, "cannot select nonexistent value at index 5"),
        ({"Fn::FindInMap": ["Sizes", "dev", "Memory"]}, "Unable to get mapping for Sizes::dev::Memory"),
        ({"Fn::Join": ["-", "notalist"]}, "second argument of Fn::Join must be a list"),
        ({"Fn::If": ["Missing", 1, 2]}, "unresolved condition dependency Missing"),
        ({"Ref": ["a"]}, "Every Ref object must have a single String value"),
        ({"Fn::Split": ["", "abc"]}, "delimiter of Fn::Split must not be empty"),
    ],
)
def test_misuse_is_a_template_error_with_its_place(node: Any, message: str) -> None:
    with pytest.raises(TemplateError, match=message) as raised:
        ev(node)
    assert "Resources/R/Properties" in raised.value.message


def test_conditions() -> None:
    declared = {
        "IsProd": {"Fn::Equals": [{"Ref": "Stage"}, "prod"]},
        "IsBig": {"Fn::Equals": [{"Fn::FindInMap": ["Sizes", {"Ref": "Stage"}, "Memory"]}, 4096]},
        "NotProd": {"Fn::Not": [{"Condition": "IsProd"}]},
        "Both": {"Fn::And": [{"Condition": "IsProd"}, {"Condition": "IsBig"}]},
        "Either": {"Fn::Or": [{"Condition": "NotProd"}, {"Fn::Equals": ["a", "b"]}]},
        "Yaml": {"Fn::Equals": [True, "true"]},
    }
    assert evaluate_conditions(declared, scope()) == {
        "IsProd": True,
        "IsBig": True,
        "NotProd": False,
        "Both": True,
        "Either": False,
        "Yaml": True,
    }


def test_condition_errors() -> None:
    with pytest.raises(TemplateError, match="Circular dependency between conditions"):
        evaluate_conditions(
            {"A": {"Fn::Not": [{"Condition": "B"}]}, "B": {"Fn::Not": [{"Condition": "A"}]}}, scope()
        )
    with pytest.raises(TemplateError, match="Fn::And requires a list of 2 to 10 conditions"):
        evaluate_conditions({"A": {"Fn::And": [{"Fn::Equals": ["a", "a"]}]}}, scope())
    with pytest.raises(TemplateError, match="Unresolved condition dependency Nope"):
        evaluate_conditions({"A": {"Condition": "Nope"}}, scope())


def test_pseudo_parameters() -> None:
    pseudo = IDENTITY.pseudo()
    assert pseudo["AWS::Partition"] == "aws" and pseudo["AWS::URLSuffix"] == "amazonaws.com"
    assert pseudo["AWS::StackId"] == IDENTITY.stack_id and pseudo["AWS::NotificationARNs"] == []
    china = StackIdentity("s", "id", "cn-north-1", "123456789012").pseudo()
    assert china["AWS::Partition"] == "aws-cn" and china["AWS::URLSuffix"] == "amazonaws.com.cn"


def test_references_found_statically() -> None:
    node = {
        "A": {"Ref": "Stage"},
        "B": {"Fn::GetAtt": ["Model", "ModelName"]},
        "C": {"Fn::Sub": ["${Config.EndpointConfigName}-${Local}-${AWS::Region}", {"Local": "x"}]},
        "D": {"Ref": "AWS::NoValue"},
    }
    assert references(node) == [
        Reference("Stage"),
        Reference("Model", "ModelName"),
        Reference("Config", "EndpointConfigName"),
    ]
