"""The reconciler's generation rules, on a real SQLite store and the real control plane.

Serving is replaced by a recording deployer here: what is tested is which outcome the reconciler
writes when deploys fail or race with the user's changes, not serving itself (the end-to-end tests
in tests/control and tests/serving run the real one).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from coldbrew.control.reconciler import Reconciler
from coldbrew.control.service import ControlPlane, RequestContext
from coldbrew.control.store import Store
from coldbrew.serving.errors import DeployError
from coldbrew.serving.targets import EndpointTarget

CTX = RequestContext("us-east-1", "123456789012")


class RecordingDeployer:
    def __init__(self) -> None:
        self.deployed: list[EndpointTarget] = []
        self.undeployed: list[str] = []
        self.on_deploy: Callable[[EndpointTarget], None] | None = None
        """Runs (once) inside the next deploy, before it returns."""

    def deploy(self, target: EndpointTarget, *, verify: bool) -> None:
        hook, self.on_deploy = self.on_deploy, None
        if hook is not None:
            hook(target)
        self.deployed.append(target)

    def undeploy(self, endpoint: str) -> None:
        self.undeployed.append(endpoint)


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[tuple[ControlPlane, Reconciler, RecordingDeployer]]:
    store = Store(tmp_path / "coldbrew.db")
    deployer = RecordingDeployer()
    reconciler = Reconciler(store, deployer)
    control = ControlPlane(store, reconciler)
    yield control, reconciler, deployer
    reconciler.stop()
    store.close()


def _config(control: ControlPlane, name: str, model: str) -> None:
    control.create_model(CTX, {"ModelName": model, "PrimaryContainer": {"Image": "coldbrew/sklearn"}})
    control.create_endpoint_config(
        CTX,
        {
            "EndpointConfigName": name,
            "ProductionVariants": [
                {
                    "VariantName": "AllTraffic",
                    "ModelName": model,
                    "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 2},
                }
            ],
        },
    )


def _status(control: ControlPlane, name: str) -> dict[str, object]:
    return control.describe_endpoint(CTX, {"EndpointName": name})


def test_unexpected_failure_does_not_fail_a_newer_update(
    plane: tuple[ControlPlane, Reconciler, RecordingDeployer],
) -> None:
    control, reconciler, deployer = plane
    _config(control, "v1-config", "v1")
    _config(control, "v2-config", "v2")
    control.create_endpoint(CTX, {"EndpointName": "ep", "EndpointConfigName": "v1-config"})
    assert reconciler.wait_idle(10)
    assert _status(control, "ep")["EndpointStatus"] == "InService"

    def update_then_crash(target: EndpointTarget) -> None:
        # The user's UpdateEndpoint is accepted while this pass (a restart's, say) is under way...
        control.update_endpoint(CTX, {"EndpointName": "ep", "EndpointConfigName": "v2-config"})
        raise RuntimeError("a bug in serving")  # ...and this pass then fails unexpectedly.

    deployer.on_deploy = update_then_crash
    reconciler.kick("ep", restoring=True)
    assert reconciler.wait_idle(10)
    described = _status(control, "ep")
    # Once, the failure marked the newer update Failed whatever its generation.
    assert described["EndpointStatus"] == "InService"
    assert described["EndpointConfigName"] == "v2-config"
    assert "FailureReason" not in described
    assert deployer.deployed[-1].config_name == "v2-config"


def test_unexpected_failure_fails_its_own_generation(
    plane: tuple[ControlPlane, Reconciler, RecordingDeployer],
) -> None:
    control, reconciler, deployer = plane
    _config(control, "c", "m")

    def crash(target: EndpointTarget) -> None:
        raise RuntimeError("a bug in serving")

    deployer.on_deploy = crash
    control.create_endpoint(CTX, {"EndpointName": "ep", "EndpointConfigName": "c"})
    assert reconciler.wait_idle(10)
    described = _status(control, "ep")
    assert described["EndpointStatus"] == "Failed"
    assert described["FailureReason"] == "Internal error while deploying; see the coldbrew server log."
    assert deployer.undeployed == ["ep"]


def test_deploy_error_becomes_the_failure_reason(
    plane: tuple[ControlPlane, Reconciler, RecordingDeployer],
) -> None:
    control, reconciler, deployer = plane
    _config(control, "c", "m")

    def refuse(target: EndpointTarget) -> None:
        raise DeployError("Variant AllTraffic: the model failed to load: no model.joblib")

    deployer.on_deploy = refuse
    control.create_endpoint(CTX, {"EndpointName": "Ep", "EndpointConfigName": "c"})
    assert reconciler.wait_idle(10)
    described = _status(control, "Ep")
    assert described["EndpointStatus"] == "Failed"
    assert described["FailureReason"] == "Variant AllTraffic: the model failed to load: no model.joblib"
