"""Stack operations carried out against a fake SageMaker (in process, no server): the order of
steps, replacement with the old resource deleted after the update, rollbacks of a create and of
an update, deletion, and an operation a killed server left in progress."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from coldbrew.control.store import Store
from coldbrew.stacks.execution import RESTARTED, StackRun
from coldbrew.stacks.resources import ResourceFailure
from coldbrew.stacks.service import Caller, StackService
from coldbrew.stacks.store import StackRecord, StackStore

SEED = (Path(__file__).resolve().parents[2] / "examples" / "mlops-endpoint-template.yml").read_text()
CALLER = Caller("us-east-1", "123456789012")
PARAMETERS = {
    "SageMakerProjectName": "rf",
    "ModelExecutionRoleArn": "arn:aws:iam::123456789012:role/any",
    "ModelDataUrl": "s3://models/good.tar.gz",
    "StageName": "staging",
    "EndpointInstanceCount": "1",
    "EndpointInstanceType": "ml.m5.large",
    "DataCaptureUploadPath": "s3://capture/rf",
    "SamplingPercentage": "100",
}


class FakeSageMaker:
    """Models, configs and endpoints in dicts; an endpoint whose model's data URL has "bad" in it
    fails to deploy (Failed on create; on update it keeps its configuration, as coldbrew's does)."""

    def __init__(self) -> None:
        self.models: dict[str, dict[str, Any]] = {}
        self.configs: dict[str, dict[str, Any]] = {}
        self.endpoints: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []

    def _bad(self, config: str) -> bool:
        models = [v["ModelName"] for v in self.configs[config]["ProductionVariants"]]
        return any("bad" in self.models[m]["PrimaryContainer"]["ModelDataUrl"] for m in models)

    def call(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        noun = operation.removeprefix("Create").removeprefix("Delete").removeprefix("Update")
        noun = noun.removeprefix("Describe")
        name = request.get(f"{noun}Name", "")
        if not operation.startswith("Describe"):
            self.calls.append((operation, name))
        if operation == "CreateModel":
            self.models[name] = request
        elif operation == "CreateEndpointConfig":
            for variant in request["ProductionVariants"]:
                if variant["ModelName"] not in self.models:
                    raise ResourceFailure(f"Could not find model {variant['ModelName']}", not_found=True)
            self.configs[name] = request
        elif operation == "CreateEndpoint":
            config = request["EndpointConfigName"]
            failed = self._bad(config)
            self.endpoints[name] = {
                "EndpointName": name,
                "EndpointConfigName": config,
                "EndpointStatus": "Failed" if failed else "InService",
                **({"FailureReason": "the model did not load"} if failed else {}),
            }
        elif operation == "UpdateEndpoint":
            endpoint = self.endpoints[name]
            if self._bad(request["EndpointConfigName"]):
                endpoint["FailureReason"] = "Update failed: the model did not load"
            else:
                endpoint["EndpointConfigName"] = request["EndpointConfigName"]
                endpoint.pop("FailureReason", None)
        elif operation == "DescribeEndpoint":
            if name not in self.endpoints:
                raise ResourceFailure(f"Could not find endpoint {name}", not_found=True)
            return dict(self.endpoints[name])
        elif operation.startswith("Delete") and operation != "DeleteTags":
            table = {"DeleteModel": self.models, "DeleteEndpointConfig": self.configs}.get(
                operation, self.endpoints
            )
            if table.pop(name, None) is None:
                raise ResourceFailure(f"Could not find {name}", not_found=True)
        return {}


@pytest.fixture
def stacks(tmp_path: Path) -> StackStore:
    return StackStore(Store(tmp_path / "coldbrew.db"))


async def _io(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


def run(stacks: StackStore, api: FakeSageMaker, stack_id: str, recovering: bool = False) -> StackRecord:
    asyncio.run(StackRun(stack_id, stacks, api, CALLER.account, _io, poll_interval_s=0).run(recovering))
    record = stacks.find(stack_id)
    assert record is not None
    return record


def params(**overrides: str) -> list[dict[str, str]]:
    return [{"ParameterKey": k, "ParameterValue": v} for k, v in {**PARAMETERS, **overrides}.items()]


def statuses(stacks: StackStore, record: StackRecord) -> list[tuple[str, str]]:
    return [(e.logical_id, e.status) for e in reversed(stacks.events(record, None, 1000))]


def create(stacks: StackStore, api: FakeSageMaker, **overrides: str) -> StackRecord:
    service = StackService(stacks, CALLER.account)
    reply = service.create_stack(
        CALLER, {"StackName": "rf", "TemplateBody": SEED, "Parameters": params(**overrides)}
    )
    assert reply.run is not None
    return run(stacks, api, reply.run)


def update(stacks: StackStore, api: FakeSageMaker, record: StackRecord, **overrides: str) -> StackRecord:
    service = StackService(stacks, CALLER.account)
    reply = service.update_stack(
        CALLER, {"StackName": record.stack_id, "TemplateBody": SEED, "Parameters": params(**overrides)}
    )
    assert reply.run is not None
    return run(stacks, api, reply.run)


def test_create_in_dependency_order_with_outputs(stacks: StackStore) -> None:
    api = FakeSageMaker()
    record = create(stacks, api)
    assert record.status == "CREATE_COMPLETE" and record.operation is None
    assert [c[0] for c in api.calls] == ["CreateModel", "CreateEndpointConfig", "CreateEndpoint"]
    config = record.resources["EndpointConfig"].physical_id
    assert config is not None and config.startswith("EndpointConfig-")
    assert api.endpoints["rf-staging"]["EndpointConfigName"] == config
    assert {o["OutputKey"]: o["OutputValue"] for o in record.outputs} == {
        "EndpointName": "rf-staging",
        "EndpointConfigName": config,
    }
    model = api.models[record.resources["Model"].physical_id or ""]
    assert {"Key": "aws:cloudformation:logical-id", "Value": "Model"} in model["Tags"]
    assert statuses(stacks, record)[-2:] == [("Endpoint", "CREATE_COMPLETE"), ("rf", "CREATE_COMPLETE")]


def test_update_replaces_the_config_then_deletes_the_old_one(stacks: StackStore) -> None:
    api = FakeSageMaker()
    record = create(stacks, api)
    old_config = record.resources["EndpointConfig"].physical_id
    api.calls.clear()
    record = update(stacks, api, record, MemorySizeInMB="1024")
    assert record.status == "UPDATE_COMPLETE"
    new_config = record.resources["EndpointConfig"].physical_id
    assert new_config != old_config
    assert api.calls == [
        ("CreateEndpointConfig", new_config),
        ("UpdateEndpoint", "rf-staging"),
        ("DeleteEndpointConfig", old_config),  # only once the endpoint serves the new one
    ]
    assert set(api.configs) == {new_config}
    assert ("rf", "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS") in statuses(stacks, record)


def test_a_failed_create_rolls_back(stacks: StackStore) -> None:
    api = FakeSageMaker()
    record = create(stacks, api, ModelDataUrl="s3://models/bad.tar.gz")
    assert record.status == "ROLLBACK_COMPLETE"
    assert record.status_reason == (
        "The following resource(s) failed to create: [Endpoint]. Rollback requested by user."
    )
    assert api.models == {} and api.configs == {} and api.endpoints == {}
    events = stacks.events(record, None, 1000)
    failed = next(e for e in events if e.status == "CREATE_FAILED")
    assert failed.logical_id == "Endpoint" and "the model did not load" in (failed.reason or "")
    assert [c[0] for c in api.calls][-3:] == ["DeleteEndpoint", "DeleteEndpointConfig", "DeleteModel"]


def test_a_failed_update_rolls_back_to_what_served(stacks: StackStore) -> None:
    api = FakeSageMaker()
    record = create(stacks, api)
    before = {lid: s.physical_id for lid, s in record.resources.items()}
    record = update(stacks, api, record, ModelDataUrl="s3://models/bad.tar.gz")
    assert record.status == "UPDATE_ROLLBACK_COMPLETE"
    assert record.status_reason == "The following resource(s) failed to update: [Endpoint]."
    assert {lid: s.physical_id for lid, s in record.resources.items()} == before
    assert set(api.models) == {before["Model"]} and set(api.configs) == {before["EndpointConfig"]}
    assert api.endpoints["rf-staging"]["EndpointConfigName"] == before["EndpointConfig"]
    assert record.parameters["ModelDataUrl"] == "s3://models/good.tar.gz"
    assert {lid: s.status for lid, s in record.resources.items()} == {
        "Model": "UPDATE_COMPLETE",
        "EndpointConfig": "UPDATE_COMPLETE",
        "Endpoint": "UPDATE_COMPLETE",
    }
    # It can be updated again.
    assert update(stacks, api, record, MemorySizeInMB="3072").status == "UPDATE_COMPLETE"


def test_a_custom_named_resource_cannot_be_replaced(stacks: StackStore) -> None:
    api = FakeSageMaker()
    record = create(stacks, api)
    service = StackService(stacks, CALLER.account)
    named = SEED.replace(
        "  Model:\n    Type: AWS::SageMaker::Model\n    Properties:\n",
        "  Model:\n    Type: AWS::SageMaker::Model\n    Properties:\n      ModelName: fixed\n",
    )
    for body, data in ((named, "s3://models/good.tar.gz"), (named, "s3://models/other.tar.gz")):
        reply = service.update_stack(
            CALLER, {"StackName": "rf", "TemplateBody": body, "Parameters": params(ModelDataUrl=data)}
        )
        assert reply.run is not None
        record = run(stacks, api, reply.run)
    assert record.status == "UPDATE_ROLLBACK_COMPLETE"
    failed = next(e for e in stacks.events(record, None, 1000) if e.status == "UPDATE_FAILED")
    assert "cannot update a stack when a custom-named resource requires replacing" in (failed.reason or "")


def test_delete_removes_everything_in_reverse_order(stacks: StackStore) -> None:
    api = FakeSageMaker()
    record = create(stacks, api)
    api.calls.clear()
    reply = StackService(stacks, CALLER.account).delete_stack(CALLER, {"StackName": "rf"})
    assert reply.run is not None
    record = run(stacks, api, reply.run)
    assert record.status == "DELETE_COMPLETE" and record.deleted_at is not None
    assert [c[0] for c in api.calls] == ["DeleteEndpoint", "DeleteEndpointConfig", "DeleteModel"]
    assert stacks.find("rf") is None and stacks.find(record.stack_id) is not None


def test_an_interrupted_create_is_rolled_back_with_the_reason(stacks: StackStore) -> None:
    api = FakeSageMaker()
    service = StackService(stacks, CALLER.account)
    reply = service.create_stack(CALLER, {"StackName": "rf", "TemplateBody": SEED, "Parameters": params()})
    assert reply.run is not None

    class Killed(Exception):
        pass

    class DiesAtEndpoint(FakeSageMaker):
        def call(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
            result = api.call(operation, request)
            if operation == "CreateEndpoint":
                raise Killed  # the server dies right after the endpoint was asked for
            return result

    with pytest.raises(Killed):
        run(stacks, DiesAtEndpoint(), reply.run)
    assert stacks.running() and api.endpoints
    record = run(stacks, api, reply.run, recovering=True)  # the next start
    assert record.status == "ROLLBACK_COMPLETE"
    assert RESTARTED in (record.status_reason or "")
    assert api.models == {} and api.configs == {} and api.endpoints == {}
    assert ("Endpoint", "CREATE_FAILED") in statuses(stacks, record)


def test_an_interrupted_update_is_rolled_back(stacks: StackStore) -> None:
    api = FakeSageMaker()
    record = create(stacks, api)
    before = record.resources["EndpointConfig"].physical_id
    reply = StackService(stacks, CALLER.account).update_stack(
        CALLER, {"StackName": "rf", "TemplateBody": SEED, "Parameters": params(MemorySizeInMB="1024")}
    )
    assert reply.run is not None

    class Killed(Exception):
        pass

    class DiesAfterUpdate(FakeSageMaker):
        def call(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
            result = api.call(operation, request)
            if operation == "UpdateEndpoint":
                raise Killed
            return result

    with pytest.raises(Killed):
        run(stacks, DiesAfterUpdate(), reply.run)
    record = run(stacks, api, reply.run, recovering=True)
    assert record.status == "UPDATE_ROLLBACK_COMPLETE"
    assert api.endpoints["rf-staging"]["EndpointConfigName"] == before
    assert set(api.configs) == {before}


def test_on_failure_do_nothing_and_delete(stacks: StackStore) -> None:
    api = FakeSageMaker()
    service = StackService(stacks, CALLER.account)
    bad = params(ModelDataUrl="s3://models/bad.tar.gz")
    kept = service.create_stack(
        CALLER, {"StackName": "kept", "TemplateBody": SEED, "Parameters": bad, "OnFailure": "DO_NOTHING"}
    )
    assert kept.run is not None
    record = run(stacks, api, kept.run)
    assert record.status == "CREATE_FAILED" and "rf-staging" in api.endpoints  # left as it failed
    api = FakeSageMaker()
    gone = service.create_stack(
        CALLER, {"StackName": "gone", "TemplateBody": SEED, "Parameters": bad, "OnFailure": "DELETE"}
    )
    assert gone.run is not None
    record = run(stacks, api, gone.run)
    assert record.status == "DELETE_COMPLETE" and stacks.find("gone") is None
    assert api.models == {} and api.endpoints == {}


def test_retained_resources_outlive_the_stack(stacks: StackStore) -> None:
    api = FakeSageMaker()
    service = StackService(stacks, CALLER.account)
    body = SEED.replace(
        "  Model:\n    Type: AWS::SageMaker::Model\n",
        "  Model:\n    Type: AWS::SageMaker::Model\n    DeletionPolicy: Retain\n",
    )
    reply = service.create_stack(CALLER, {"StackName": "rf", "TemplateBody": body, "Parameters": params()})
    assert reply.run is not None
    record = run(stacks, api, reply.run)
    model = record.resources["Model"].physical_id
    reply = service.delete_stack(CALLER, {"StackName": "rf"})
    assert reply.run is not None
    record = run(stacks, api, reply.run)
    assert record.status == "DELETE_COMPLETE"
    assert set(api.models) == {model} and api.endpoints == {} and api.configs == {}
    assert ("Model", "DELETE_SKIPPED") in statuses(stacks, record)


def test_no_echo_parameters_are_masked(stacks: StackStore) -> None:
    service = StackService(stacks, CALLER.account)
    body = SEED.replace(
        "  ModelExecutionRoleArn:\n    Type: String\n",
        "  ModelExecutionRoleArn:\n    Type: String\n    NoEcho: true\n",
    )
    service.create_stack(CALLER, {"StackName": "rf", "TemplateBody": body, "Parameters": params()})
    described = service.describe_stacks(CALLER, {"StackName": "rf"}).body["Stacks"][0]
    shown = {p["ParameterKey"]: p["ParameterValue"] for p in described["Parameters"]}
    assert shown["ModelExecutionRoleArn"] == "****" and shown["StageName"] == "staging"


def test_change_sets(stacks: StackStore) -> None:
    from coldbrew.stacks.errors import ChangeSetNotFound, InvalidChangeSetStatus

    api = FakeSageMaker()
    service = StackService(stacks, CALLER.account)
    request = {"StackName": "rf", "TemplateBody": SEED, "Parameters": params(), "ChangeSetName": "first"}
    created = service.create_change_set(CALLER, {**request, "ChangeSetType": "CREATE"}).body
    assert service.describe_stacks(CALLER, {"StackName": "rf"}).body["Stacks"][0]["StackStatus"] == (
        "REVIEW_IN_PROGRESS"
    )
    described = service.describe_change_set(CALLER, {"ChangeSetName": created["Id"]}).body
    assert described["Status"] == "CREATE_COMPLETE" and described["ExecutionStatus"] == "AVAILABLE"
    assert [c["ResourceChange"]["Action"] for c in described["Changes"]] == ["Add", "Add", "Add"]
    reply = service.execute_change_set(CALLER, {"ChangeSetName": "first", "StackName": "rf"})
    assert reply.run is not None
    assert run(stacks, api, reply.run).status == "CREATE_COMPLETE"
    with pytest.raises(InvalidChangeSetStatus):
        service.execute_change_set(CALLER, {"ChangeSetName": created["Id"]})
    same = service.create_change_set(CALLER, {**request, "ChangeSetName": "same"}).body
    empty = service.describe_change_set(CALLER, {"ChangeSetName": same["Id"]}).body
    assert empty["Status"] == "FAILED" and "didn't contain changes" in empty["StatusReason"]
    other = service.create_change_set(
        CALLER, {**request, "ChangeSetName": "bigger", "Parameters": params(MemorySizeInMB="4096")}
    ).body
    changes = service.describe_change_set(CALLER, {"ChangeSetName": other["Id"]}).body["Changes"]
    assert [
        (c["ResourceChange"]["LogicalResourceId"], c["ResourceChange"]["Replacement"]) for c in changes
    ] == [
        ("EndpointConfig", "True"),
        ("Endpoint", "False"),
    ]
    names = [
        s["ChangeSetName"] for s in service.list_change_sets(CALLER, {"StackName": "rf"}).body["Summaries"]
    ]
    assert names == ["first", "same", "bigger"]
    service.delete_change_set(CALLER, {"ChangeSetName": "bigger", "StackName": "rf"})
    with pytest.raises(ChangeSetNotFound):
        service.describe_change_set(CALLER, {"ChangeSetName": "bigger", "StackName": "rf"})


def test_stack_operations_need_their_sagemaker_actions_too() -> None:
    from coldbrew.auth.actions import Need, RequestFacts, needs_for

    def facts(body: bytes) -> RequestFacts:
        return RequestFacts("cloudformation", "POST", "/", {}, {}, body, "us-east-1", "123456789012")

    described = needs_for(facts(b"Action=DescribeStacks&Version=2010-05-15&StackName=rf"))
    assert described == [
        Need("cloudformation:DescribeStacks", "arn:aws:cloudformation:us-east-1:123456789012:stack/rf/*")
    ]
    created = needs_for(facts(b"Action=CreateStack&StackName=rf&TemplateBody=x"))
    assert created[0].action == "cloudformation:CreateStack"
    assert (
        Need("sagemaker:CreateEndpoint", None) in created and Need("sagemaker:DeleteModel", None) in created
    )
