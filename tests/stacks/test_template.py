"""The template parser: YAML short forms through cfn-flip, sections, and the errors that name
what to change (unsupported types and functions, undefined names, cycles)."""

from __future__ import annotations

from pathlib import Path

import pytest

from coldbrew.stacks.errors import TemplateError, ValidationError
from coldbrew.stacks.template import MAX_BODY_BYTES, order, parse_template

SEED = Path(__file__).resolve().parents[2] / "examples" / "mlops-endpoint-template.yml"

MINIMAL = """
Resources:
  Model:
    Type: AWS::SageMaker::Model
    Properties:
      PrimaryContainer: {ModelDataUrl: s3://m/model.tar.gz}
"""


def test_the_seed_template_parses_with_its_short_forms() -> None:
    template = parse_template(SEED.read_text())
    assert list(template.resources) == ["Model", "EndpointConfig", "Endpoint"]
    assert template.conditions["IsProdEnv"] == {"Fn::Equals": [{"Ref": "StageName"}, "prod"]}
    variant = template.resources["EndpointConfig"].properties["ProductionVariants"][0]
    assert variant["ModelName"] == {"Fn::GetAtt": ["Model", "ModelName"]}
    assert variant["InstanceType"] == {
        "Fn::If": ["IsProdEnv", {"Ref": "EndpointInstanceType"}, {"Ref": "AWS::NoValue"}]
    }
    endpoint = template.resources["Endpoint"].properties
    assert endpoint["EndpointName"] == {"Fn::Sub": "${SageMakerProjectName}-${StageName}"}
    # YAML numbers and booleans are parameter text, as CloudFormation reads them.
    assert template.parameters["MemorySizeInMB"].allowed_values == (
        "1024",
        "2048",
        "3072",
        "4096",
        "5120",
        "6144",
    )
    assert template.parameters["EnableDataCapture"].default == "true"
    assert template.dependencies("Endpoint") == {"EndpointConfig"}
    assert order(template, ["Endpoint", "EndpointConfig", "Model"]) == ["Model", "EndpointConfig", "Endpoint"]


def test_json_templates_parse_too() -> None:
    body = (
        '{"Resources": {"M": {"Type": "AWS::SageMaker::Model", '
        '"Properties": {"ModelName": {"Ref": "AWS::StackName"}}}}}'
    )
    template = parse_template(body)
    assert template.resources["M"].properties == {"ModelName": {"Ref": "AWS::StackName"}}


def test_an_unsupported_resource_type_is_named() -> None:
    body = MINIMAL + "  Topic:\n    Type: AWS::SNS::Topic\n  Queue:\n    Type: AWS::SQS::Queue\n"
    with pytest.raises(
        TemplateError, match=r"Unrecognized resource types: \[AWS::SNS::Topic, AWS::SQS::Queue\]"
    ):
        parse_template(body)


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ("!ImportValue shared-bucket", "Fn::ImportValue"),
        ("!GetAZs ''", "Fn::GetAZs"),
        ("!Frobnicate x", "Fn::Frobnicate"),
    ],
)
def test_an_unsupported_function_is_named(value: str, name: str) -> None:
    body = MINIMAL + f"      ExecutionRoleArn: {value}\n"
    with pytest.raises(
        TemplateError, match=f"unsupported function: {name} at Resources/Model/Properties/ExecutionRoleArn"
    ):
        parse_template(body)


def test_condition_functions_belong_in_conditions() -> None:
    body = MINIMAL + "      ExecutionRoleArn: !Equals [a, b]\n"
    with pytest.raises(
        TemplateError, match=r"Fn::Equals cannot be used in resource properties .*use it in Conditions"
    ):
        parse_template(body)


def test_transform_and_rules_are_refused_by_name() -> None:
    with pytest.raises(TemplateError, match="does not process Transform \\(AWS::Serverless-2016-10-31\\)"):
        parse_template("Transform: AWS::Serverless-2016-10-31\n" + MINIMAL)
    with pytest.raises(TemplateError, match="does not evaluate Rules"):
        parse_template("Rules: {}\n" + MINIMAL)


def test_undefined_names() -> None:
    with pytest.raises(TemplateError, match=r"Unresolved resource dependencies \[Nowhere\]"):
        parse_template(MINIMAL + "      ExecutionRoleArn: !Ref Nowhere\n")
    with pytest.raises(TemplateError, match="references undefined resource Nowhere"):
        parse_template(MINIMAL + "      ExecutionRoleArn: !GetAtt Nowhere.ModelName\n")
    with pytest.raises(TemplateError, match="does not support attribute type Arn in Fn::GetAtt"):
        parse_template(
            MINIMAL
            + "  Other:\n    Type: AWS::SageMaker::Model\n    Properties:\n"
            + "      ExecutionRoleArn: !GetAtt Model.Arn\n"
        )
    with pytest.raises(TemplateError, match="Unresolved condition dependency IsProd in Fn::If"):
        parse_template(MINIMAL + "      ExecutionRoleArn: !If [IsProd, a, b]\n")
    with pytest.raises(TemplateError, match=r"Unresolved resource dependencies \[Ghost\]"):
        parse_template(MINIMAL + "    DependsOn: Ghost\n")
    with pytest.raises(TemplateError, match="Cannot reference resources in the Conditions block"):
        parse_template("Conditions:\n  C: !Equals [!Ref Model, x]\n" + MINIMAL)


def test_a_dependency_cycle_is_named() -> None:
    body = """
Resources:
  A:
    Type: AWS::SageMaker::Model
    Properties: {ModelName: !GetAtt B.ModelName}
  B:
    Type: AWS::SageMaker::Model
    DependsOn: A
"""
    with pytest.raises(TemplateError, match=r"Circular dependency between resources: \[A, B, A\]"):
        parse_template(body)


def test_structure_errors() -> None:
    with pytest.raises(TemplateError, match="At least one Resources member must be defined"):
        parse_template("Description: nothing\n")
    with pytest.raises(TemplateError, match=r"Invalid template property or properties \[Resource\]"):
        parse_template("Resource: {}\n" + MINIMAL)
    with pytest.raises(TemplateError, match="Resource name my-model is non alphanumeric"):
        parse_template("Resources:\n  my-model:\n    Type: AWS::SageMaker::Model\n")
    with pytest.raises(TemplateError, match="Unsupported template version 2011-01-01"):
        parse_template("AWSTemplateFormatVersion: '2011-01-01'\n" + MINIMAL)
    with pytest.raises(TemplateError, match="DeletionPolicy of Model is Snapshot"):
        parse_template(MINIMAL + "    DeletionPolicy: Snapshot\n")
    assert parse_template("AWSTemplateFormatVersion: 2010-09-09\n" + MINIMAL).resources


def test_malformed_documents_say_which_format() -> None:
    with pytest.raises(TemplateError, match="YAML not well-formed"):
        parse_template("Resources: [unclosed\n")
    with pytest.raises(TemplateError, match="JSON not well-formed"):
        parse_template('{"Resources": ')


def test_size_limits() -> None:
    with pytest.raises(ValidationError, match="less than or equal to 51200"):
        parse_template(MINIMAL + "#" * MAX_BODY_BYTES)
    # Aliases can make a small YAML document expand exponentially: it is refused, not expanded.
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for level in "bcdefgh":
        previous = chr(ord(level) - 1)
        bomb += f"{level}: &{level} [" + ", ".join([f"*{previous}"] * 6) + "]\n"
    with pytest.raises(TemplateError, match="more than 200,000 values"):
        parse_template(bomb + MINIMAL)


def test_deep_nesting_is_refused() -> None:
    deep = "[" * 150 + "]" * 150
    with pytest.raises(TemplateError, match="nests values more than 100 deep"):
        parse_template(MINIMAL + f"      Environment: {{X: {deep}}}\n")
