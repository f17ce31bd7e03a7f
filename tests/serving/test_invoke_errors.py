"""A model's error names the node of the environment it happened in (``--backend ray``), so its
meter record does too; on one machine it names none."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from coldbrew.serving.errors import EnvironmentLost
from coldbrew.serving.invoke import _on


def env_on(worker: object) -> Any:
    return SimpleNamespace(worker=worker)


def test_a_model_error_names_the_ray_node_of_its_environment() -> None:
    error = _on(env_on(SimpleNamespace(node_id="node-1")), EnvironmentLost("gone"))
    assert error.node == "node-1"


def test_a_model_error_on_one_machine_names_no_node() -> None:
    error = _on(env_on(SimpleNamespace()), EnvironmentLost("gone"))
    assert error.node is None
