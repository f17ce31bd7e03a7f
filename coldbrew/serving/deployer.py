"""Turns a control-plane Deployment into running variants."""

from __future__ import annotations

import logging
from typing import Any

from coldbrew.artifacts import ArtifactError, ArtifactStore
from coldbrew.control.deployment import Deployment
from coldbrew.control.reconciler import DeployError

log = logging.getLogger("coldbrew.serving")


class ServingDeployer:
    def __init__(self, artifacts: ArtifactStore) -> None:
        self.artifacts = artifacts

    def deploy(self, endpoint: str, deployment: Deployment, variants: list[dict[str, Any]], *, verify: bool) -> None:
        for variant in deployment.variants:
            try:
                self.artifacts.materialize(variant.container)
            except ArtifactError as exc:
                raise DeployError(str(exc)) from None

    def undeploy(self, endpoint: str) -> None:
        return None

    def close(self) -> None:
        return None
