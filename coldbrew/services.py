"""The composition root: builds the store, artifact cache, serving and control plane for one server."""

from __future__ import annotations

import logging

from coldbrew.artifacts import ArtifactStore
from coldbrew.control.reconciler import Reconciler
from coldbrew.control.service import ControlPlane, RequestContext
from coldbrew.control.store import Store
from coldbrew.demo import deploy_demo
from coldbrew.serving.deployer import ServingDeployer
from coldbrew.settings import Settings

log = logging.getLogger("coldbrew")


class Services:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(settings.db_path)
        self.artifacts = ArtifactStore(settings.artifact_dir, settings.max_artifact_bytes)
        self.deployer = ServingDeployer(self.artifacts)
        self.reconciler = Reconciler(self.store, self.deployer)
        self.control = ControlPlane(self.store, self.reconciler)

    def start(self) -> None:
        self.reconciler.resume()
        if self.settings.demo:
            context = RequestContext(self.settings.region, self.settings.account_id)
            deploy_demo(self.control, context, self.settings.data_dir)
        log.info("coldbrew is using %s", self.settings.data_dir)

    def close(self) -> None:
        self.reconciler.stop()
        self.deployer.close()
        self.store.close()
