"""Parameters: values given, previous or default, checked with CloudFormation's messages."""

from __future__ import annotations

import pytest

from coldbrew.stacks.errors import TemplateError, ValidationError
from coldbrew.stacks.parameters import ParameterInput, parse_declarations, resolve

DECLS = parse_declarations(
    {
        "Stage": {"Type": "String", "AllowedValues": ["staging", "prod"]},
        "Memory": {"Type": "Number", "Default": 2048, "AllowedValues": [1024, 2048, 3072]},
        "Concurrency": {"Type": "Number", "Default": 20, "MinValue": 1, "MaxValue": 50},
        "Project": {
            "Type": "String",
            "Default": "rf",
            "MinLength": 1,
            "MaxLength": 8,
            "AllowedPattern": "^[a-z]+$",
        },
        "Secret": {"Type": "String", "Default": "s3cret", "NoEcho": True},
        "Subnets": {"Type": "CommaDelimitedList", "Default": "a, b,c"},
        "Weights": {"Type": "List<Number>", "Default": "1,2.5"},
    }
)


def given(**values: str) -> list[ParameterInput]:
    return [ParameterInput(k, v) for k, v in values.items()]


def test_defaults_and_given_values() -> None:
    resolved = resolve(DECLS, given(Stage="prod", Concurrency="5"))
    assert resolved.values == {
        "Stage": "prod",
        "Memory": "2048",
        "Concurrency": "5",
        "Project": "rf",
        "Secret": "s3cret",
        "Subnets": "a, b,c",
        "Weights": "1,2.5",
    }
    refs = resolved.for_template(DECLS)
    assert refs["Memory"] == "2048"  # Ref of a Number is a string, as in CloudFormation
    assert refs["Subnets"] == ["a", "b", "c"]
    assert refs["Weights"] == ["1", "2.5"]
    assert DECLS["Secret"].no_echo


def test_previous_values() -> None:
    previous = {"Stage": "staging", "Memory": "1024"}
    resolved = resolve(
        DECLS, [ParameterInput("Stage", use_previous=True), ParameterInput("Memory", "3072")], previous
    )
    assert resolved.values["Stage"] == "staging"
    assert resolved.values["Memory"] == "3072"
    with pytest.raises(
        ValidationError, match="Cannot specify usePreviousValue as true for a parameter key not in"
    ):
        resolve(DECLS, [ParameterInput("Stage", use_previous=True)], {})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, r"Parameters: \[Stage\] must have values"),
        ({"Stage": "dev"}, "Parameter 'Stage' must be one of AllowedValues"),
        ({"Stage": "prod", "Memory": "4000"}, "Parameter 'Memory' must be one of AllowedValues"),
        ({"Stage": "prod", "Memory": "lots"}, "Parameter 'Memory' must be a number."),
        ({"Stage": "prod", "Concurrency": "0"}, "Parameter 'Concurrency' must be a number not less than 1"),
        (
            {"Stage": "prod", "Concurrency": "51"},
            "Parameter 'Concurrency' must be a number not greater than 50",
        ),
        ({"Stage": "prod", "Project": ""}, "Parameter 'Project' must contain at least 1 characters"),
        ({"Stage": "prod", "Project": "abcdefghi"}, "Parameter 'Project' must contain at most 8 characters"),
        ({"Stage": "prod", "Project": "Rf"}, r"Parameter 'Project' must match pattern \^\[a-z\]\+\$"),
        ({"Stage": "prod", "Weights": "1,x"}, "Parameter 'Weights' must be a number."),
        ({"Stage": "prod", "Extra": "1"}, r"Parameters: \[Extra\] do not exist in the template"),
    ],
)
def test_values_that_break_a_constraint(values: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        resolve(DECLS, given(**values))


def test_a_number_matches_allowed_values_written_otherwise() -> None:
    decls = parse_declarations({"Weight": {"Type": "Number", "AllowedValues": [1.0, 2]}})
    assert resolve(decls, given(Weight="1")).values == {"Weight": "1"}


def test_constraint_description_replaces_the_message() -> None:
    decls = parse_declarations(
        {
            "Name": {
                "Type": "String",
                "AllowedPattern": "[a-z]+",
                "ConstraintDescription": "lower-case letters only",
            }
        }
    )
    with pytest.raises(
        ValidationError, match="Parameter 'Name' failed to satisfy constraint: lower-case letters only"
    ):
        resolve(decls, given(Name="ABC"))


@pytest.mark.parametrize(
    ("declaration", "message"),
    [
        ({"Type": "AWS::EC2::VPC::Id"}, "Unrecognized parameter type: AWS::EC2::VPC::Id"),
        ({"Default": "x"}, "must contain a Type member"),
        ({"Type": "String", "Defualt": "x"}, "Invalid template parameter property 'Defualt'"),
        ({"Type": "Number", "MinValue": "one"}, "MinValue of parameter P must be a number"),
    ],
)
def test_declarations_that_are_refused(declaration: dict[str, object], message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        parse_declarations({"P": declaration})
