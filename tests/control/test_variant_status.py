"""DescribeEndpoint's VariantStatus, as SageMaker's endpoint deployment state events show it
(docs: "Automating Amazon SageMaker with Amazon EventBridge", endpoint deployment state change)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from coldbrew.control.deployment import with_variant_status
from tests.support import deploy_serverless, wait_for_status

INSTANCES = {"VariantName": "Blue", "DesiredWeight": 1.0, "DesiredInstanceCount": 3}
SERVERLESS = {
    "VariantName": "AllTraffic",
    "DesiredWeight": 1.0,
    "DesiredServerlessConfig": {"MemorySizeInMB": 2048},
}


def _running(summary: dict[str, Any]) -> dict[str, Any]:
    current = {**summary, "CurrentWeight": summary["DesiredWeight"]}
    if "DesiredInstanceCount" in summary:
        current["CurrentInstanceCount"] = summary["DesiredInstanceCount"]
    if "DesiredServerlessConfig" in summary:
        current["CurrentServerlessConfig"] = summary["DesiredServerlessConfig"]
    return current


def test_a_variant_being_created_launches_its_instances() -> None:
    [instances, serverless] = with_variant_status([INSTANCES, SERVERLESS], "Creating", 100.0)
    assert instances["VariantStatus"] == [
        {"Status": "Creating", "StatusMessage": "Launching 3 instance(s).", "StartTime": 100.0}
    ]
    assert serverless["VariantStatus"] == [{"Status": "Creating", "StartTime": 100.0}]


def test_a_serving_variant_has_no_status_and_a_failed_one_neither() -> None:
    running = [_running(INSTANCES), _running(SERVERLESS)]
    assert with_variant_status(running, "InService", 1.0) == running
    assert with_variant_status([INSTANCES], "Failed", 1.0) == [INSTANCES]


def test_capacity_changes_and_deletion() -> None:
    scaling_out = {**_running(INSTANCES), "DesiredInstanceCount": 6}
    scaling_in = {**_running(INSTANCES), "DesiredInstanceCount": 1}
    reweighted = {**_running(SERVERLESS), "DesiredWeight": 0.5}
    out, in_, weight, unchanged = with_variant_status(
        [scaling_out, scaling_in, reweighted, _running(SERVERLESS)], "Updating", 7.0
    )
    assert out["VariantStatus"][0]["StatusMessage"] == "Scaling out desired instance count to 6."
    assert in_["VariantStatus"][0]["StatusMessage"] == "Scaling in desired instance count to 1."
    assert weight["VariantStatus"] == [{"Status": "Updating", "StartTime": 7.0}]
    assert "VariantStatus" not in unchanged
    [deleting] = with_variant_status([_running(INSTANCES)], "Deleting", 9.0)
    assert deleting["VariantStatus"][0]["StatusMessage"] == "Terminating 3 instance(s)."


def _slow_model(root: Path) -> Path:
    """A model whose load takes a while, so the endpoint is seen while it is being created."""
    (root / "code").mkdir(parents=True)
    (root / "code" / "inference.py").write_text(
        "import time\n"
        "def model_fn(model_dir):\n"
        "    time.sleep(1.5)\n"
        "    return None\n"
        "def transform_fn(model, body, content_type, accept):\n"
        "    return b'ok', 'text/plain'\n"
    )
    return root


def test_describe_endpoint_while_creating_updating_and_serving(sm: Any, tmp_path: Path) -> None:
    deploy_serverless(sm, "vs-live", str(_slow_model(tmp_path / "slow")))
    creating = sm.describe_endpoint(EndpointName="vs-live")
    assert creating["EndpointStatus"] == "Creating"
    [variant] = creating["ProductionVariants"]
    assert [s["Status"] for s in variant["VariantStatus"]] == ["Creating"]
    assert variant["VariantStatus"][0]["StartTime"] == creating["LastModifiedTime"]

    serving = wait_for_status(sm, "vs-live", "InService")
    assert "VariantStatus" not in serving["ProductionVariants"][0]

    sm.create_endpoint_config(
        EndpointConfigName="vs-live-v2",
        ProductionVariants=[{"VariantName": "Blue", "ModelName": "vs-live", "InstanceType": "ml.m5.large",
                             "InitialInstanceCount": 2}],
    )  # fmt: skip
    sm.update_endpoint(EndpointName="vs-live", EndpointConfigName="vs-live-v2")
    updating = sm.describe_endpoint(EndpointName="vs-live")
    assert updating["EndpointStatus"] == "Updating"
    assert "VariantStatus" not in updating["ProductionVariants"][0]  # still serving the old config
    pending = updating["PendingDeploymentSummary"]
    assert pending["StartTime"] == updating["LastModifiedTime"]
    [blue] = pending["ProductionVariants"]
    assert blue["DesiredInstanceCount"] == 2
    assert blue["VariantStatus"][0]["Status"] == "Creating"
    assert blue["VariantStatus"][0]["StatusMessage"] == "Launching 2 instance(s)."
    updated = wait_for_status(sm, "vs-live", "InService")
    assert [v["VariantName"] for v in updated["ProductionVariants"]] == ["Blue"]
    assert updated["ProductionVariants"][0]["CurrentInstanceCount"] == 2
    sm.delete_endpoint(EndpointName="vs-live")
