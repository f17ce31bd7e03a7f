"""Why an invocation of an endpoint that serving does not hold is refused, as the control plane says."""

from __future__ import annotations

import time
from pathlib import Path
from typing import cast

import pytest

from coldbrew.control.reconciler import Reconciler
from coldbrew.control.service import ControlPlane
from coldbrew.control.store import Store
from coldbrew.errors import ModelNotReadyException, ValidationError


@pytest.fixture
def control(tmp_path: Path) -> ControlPlane:
    store = Store(tmp_path / "coldbrew.db")
    now = time.time()
    with store.transaction() as conn:
        rows = [
            ("Starting", "Creating", None),
            ("Broken", "Failed", "no model.joblib"),
            ("Back", "InService", None),
        ]
        for name, status, reason in rows:
            conn.execute(
                "INSERT INTO endpoints (name_key, name, arn, created_at, modified_at, status, "
                "failure_reason, config_name, deployment) VALUES (?, ?, ?, ?, ?, ?, ?, 'c', '{}')",
                [name.lower(), name, f"arn:{name}", now, now, status, reason],
            )
    # Refusals only read the store; nothing here is reconciled.
    return ControlPlane(store, cast(Reconciler, None))


def test_refusals_say_what_to_do(control: ControlPlane) -> None:
    names = ("nobody", "Starting", "Broken", "starting")
    refusals = {name: control.refusal_for(name, "123456789012") for name in names}
    assert all(isinstance(r, ValidationError) for r in refusals.values())
    assert refusals["nobody"].message == "Endpoint nobody of account 123456789012 not found."
    assert refusals["Starting"].message == (
        "Endpoint Starting of account 123456789012 is Creating; invoke it once it is InService."
    )
    assert refusals["Broken"].message == (
        "Endpoint Broken of account 123456789012 is Failed and takes no invocations: no model.joblib"
    )
    # Invocations match the name's case, as on SageMaker (CreateEndpoint's uniqueness check does not).
    assert refusals["starting"].message == "Endpoint starting of account 123456789012 not found."


def test_an_endpoint_being_restored_after_a_restart_is_not_ready_yet(control: ControlPlane) -> None:
    # InService in the store, not yet deployed again by the reconciler: a 429 to retry, not a 400.
    refusal = control.refusal_for("Back", "123456789012")
    assert isinstance(refusal, ModelNotReadyException)
    assert refusal.message == (
        "Endpoint Back of account 123456789012 is being brought back after a restart of the server; "
        "retry the request in a moment."
    )
