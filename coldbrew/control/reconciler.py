"""Drives serving towards what the store says, in the background.

CreateEndpoint, UpdateEndpoint and DeleteEndpoint only write the desired state and ``kick`` the
endpoint; a pool thread then deploys or tears down and records the outcome. Every user mutation
bumps the row's ``generation``, and outcomes are written only if the generation is unchanged, so a
DeleteEndpoint that arrives mid-creation wins and the endpoint is reconciled again.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from coldbrew.control.deployment import Deployment, mark_current, variant_summaries
from coldbrew.control.store import Store, dumps, loads
from coldbrew.serving.errors import DeployError
from coldbrew.serving.targets import EndpointTarget

log = logging.getLogger("coldbrew.control")


class Deployer(Protocol):
    def deploy(self, target: EndpointTarget, *, verify: bool) -> None:
        """Make ``target.endpoint`` serve ``target``; raises DeployError with a FailureReason.

        Blocks until the new variants can take traffic. ``verify`` asks for proof that the models
        load (False when restoring endpoints that were already InService before a restart).
        """

    def undeploy(self, endpoint: str) -> None:
        """Stop serving ``endpoint`` and release what it holds; a no-op if it holds nothing."""


class Reconciler:
    def __init__(self, store: Store, deployer: Deployer, max_workers: int = 4) -> None:
        self.store = store
        self.deployer = deployer
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="reconcile")
        self._lock = threading.Lock()
        self._running: set[str] = set()
        self._dirty: set[str] = set()
        self._idle = threading.Condition(self._lock)
        self._stopped = False

    def resume(self) -> None:
        """After a restart, pick up every endpoint where it was left."""
        for row in self.store.query("SELECT name_key FROM endpoints WHERE status != 'Failed'"):
            self.kick(row["name_key"], restoring=True)

    def kick(self, name_key: str, restoring: bool = False) -> None:
        with self._lock:
            if self._stopped:
                return
            if name_key in self._running:
                self._dirty.add(name_key)
                return
            self._running.add(name_key)
        self._executor.submit(self._run, name_key, restoring)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no endpoint is being reconciled (for tests and orderly shutdown)."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._running:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
        self._executor.shutdown(wait=True, cancel_futures=True)

    def _run(self, name_key: str, restoring: bool) -> None:
        while True:
            generation: list[int] = []
            try:
                self._reconcile(name_key, restoring, generation)
            except Exception:
                log.exception("reconciling endpoint %s failed unexpectedly", name_key)
                # Only the generation this pass read may be failed: a newer update or a delete
                # that arrived meanwhile is reconciled on its own (the endpoint is dirty).
                if generation:
                    self._fail(
                        name_key,
                        generation[0],
                        "Internal error while deploying; see the coldbrew server log.",
                    )
            restoring = False
            with self._lock:
                if name_key in self._dirty and not self._stopped:
                    self._dirty.discard(name_key)
                    continue
                self._running.discard(name_key)
                self._dirty.discard(name_key)
                self._idle.notify_all()
                return

    def _reconcile(self, name_key: str, restoring: bool, generation_read: list[int]) -> None:
        row = self.store.query_one("SELECT * FROM endpoints WHERE name_key = ?", [name_key])
        if row is None:
            self.deployer.undeploy(name_key)
            return
        status, generation = row["status"], row["generation"]
        generation_read.append(generation)
        if status == "Deleting":
            self.deployer.undeploy(name_key)
            with self.store.transaction() as conn:
                conn.execute(
                    "DELETE FROM endpoints WHERE name_key = ? AND generation = ?", [name_key, generation]
                )
                conn.execute(
                    "DELETE FROM tags WHERE arn = ? AND NOT EXISTS "
                    "(SELECT 1 FROM endpoints WHERE name_key = ?)",
                    [row["arn"], name_key],
                )
            log.info("endpoint %s deleted", row["name"])
            return
        if status == "Failed":
            self.deployer.undeploy(name_key)
            return
        deployment = Deployment.from_json(loads(row["deployment"]))
        variants = loads(row["variants"])
        if status in ("Creating", "InService"):
            self._deploy(row, deployment, variants, verify=not (restoring and status == "InService"))
            return
        if status == "Updating" and row["pending_deployment"]:
            pending = Deployment.from_json(loads(row["pending_deployment"]))
            new_variants = variant_summaries(pending, current=False)
            try:
                self.deployer.deploy(pending.target(row["name"], new_variants), verify=True)
            except DeployError as exc:
                log.warning("update of endpoint %s failed: %s", row["name"], exc)
                reason = (
                    f"Update to endpoint configuration {pending.config_name} failed: {exc} "
                    f"The endpoint still serves {deployment.config_name}."
                )
                self._finish(name_key, generation, "InService", reason=reason, pending=None)
                return
            for summary in new_variants:
                mark_current(summary)
            self._finish(name_key, generation, "InService", variants=new_variants, pending=pending)
            return
        if status == "Updating":
            self._update_capacities(row, deployment, variants)

    def _update_capacities(self, row: Any, deployment: Deployment, variants: list[dict[str, Any]]) -> None:
        """UpdateEndpointWeightsAndCapacities: refused (the machine cannot hold the new capacities),
        the endpoint goes back to InService with what it had, as SageMaker rolls a failed update back."""
        try:
            self.deployer.deploy(deployment.target(row["name"], variants), verify=False)
        except DeployError as exc:
            log.warning("update of endpoint %s's weights and capacities failed: %s", row["name"], exc)
            previous = [_desired_as_current(summary) for summary in variants]
            reason = f"Update of weights and capacities failed: {exc} The endpoint keeps its previous ones."
            try:
                # A no-op while it runs; after a restart mid-update, what brings it back.
                self.deployer.deploy(deployment.target(row["name"], previous), verify=False)
            except DeployError as again:
                self._fail(row["name_key"], row["generation"], str(again))
                return
            self._finish(row["name_key"], row["generation"], "InService", reason=reason, variants=previous)
            return
        for summary in variants:
            mark_current(summary)
        self._finish(row["name_key"], row["generation"], "InService", variants=variants)

    def _deploy(
        self, row: Any, deployment: Deployment, variants: list[dict[str, Any]], *, verify: bool
    ) -> None:
        name_key, generation = row["name_key"], row["generation"]
        try:
            self.deployer.deploy(deployment.target(row["name"], variants), verify=verify)
        except DeployError as exc:
            log.warning("endpoint %s failed: %s", row["name"], exc)
            self._fail(name_key, generation, str(exc))
            return
        for summary in variants:
            mark_current(summary)
        self._finish(name_key, generation, "InService", variants=variants)
        log.info("endpoint %s is InService", row["name"])

    def _finish(
        self,
        name_key: str,
        generation: int,
        status: str,
        *,
        reason: str | None = None,
        variants: list[dict[str, Any]] | None = None,
        pending: Deployment | None = None,
    ) -> None:
        sets = [
            "status = ?",
            "failure_reason = ?",
            "modified_at = ?",
            "pending_config_name = NULL",
            "pending_deployment = NULL",
        ]
        params: list[Any] = [status, reason, time.time()]
        if variants is not None:
            sets.append("variants = ?")
            params.append(dumps(variants))
        if pending is not None:
            sets += ["config_name = ?", "deployment = ?"]
            params += [pending.config_name, dumps(pending.to_json())]
        with self.store.transaction() as conn:
            conn.execute(
                f"UPDATE endpoints SET {', '.join(sets)} WHERE name_key = ? AND generation = ?",
                [*params, name_key, generation],
            )

    def _fail(self, name_key: str, generation: int, reason: str) -> None:
        """Mark the endpoint Failed if it is still at ``generation``; a newer update or delete that
        arrived meanwhile is left alone (its own pass reconciles it)."""
        with self.store.transaction() as conn:
            failed = conn.execute(
                "UPDATE endpoints SET status = 'Failed', failure_reason = ?, modified_at = ? "
                "WHERE name_key = ? AND generation = ?",
                [reason, time.time(), name_key, generation],
            ).rowcount
        if failed:
            self.deployer.undeploy(name_key)


def _desired_as_current(summary: dict[str, Any]) -> dict[str, Any]:
    """A variant summary whose desired weight and capacity are back to its current ones."""
    previous = dict(summary)
    for desired, current in (
        ("DesiredWeight", "CurrentWeight"),
        ("DesiredInstanceCount", "CurrentInstanceCount"),
        ("DesiredServerlessConfig", "CurrentServerlessConfig"),
    ):
        if current in previous:
            previous[desired] = previous[current]
    return previous
