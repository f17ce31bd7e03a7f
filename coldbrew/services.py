"""The composition root: builds the store, artifact cache, serving and control plane for one server."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp

from coldbrew.artifacts import ArtifactStore
from coldbrew.artifacts.packages import PackageCache
from coldbrew.artifacts.permissions import ContentGroups
from coldbrew.artifacts.roots import ModelRoots
from coldbrew.async_inference.dispatcher import Dispatcher
from coldbrew.async_inference.metrics import BacklogSampler, BacklogSource
from coldbrew.async_inference.objects import BotoObjects, EmbeddedObjects, Objects
from coldbrew.async_inference.queue import AsyncQueue
from coldbrew.backends.containment import ContainmentConfig, parse_ids, parse_names
from coldbrew.backends.local import LocalBackend
from coldbrew.backends.templates import Templates
from coldbrew.capture import CaptureWriter
from coldbrew.capture.sinks import BotoSink, EmbeddedSink, Sink
from coldbrew.cloudwatch import CloudWatchApp
from coldbrew.control.quotas import Quotas
from coldbrew.control.reconciler import Reconciler
from coldbrew.control.service import ControlPlane, RequestContext
from coldbrew.control.store import Store
from coldbrew.datadir import secure_data_dir
from coldbrew.demo import deploy_demo
from coldbrew.logs.api import LogsApi
from coldbrew.logs.collector import LogCollector, default_echo
from coldbrew.metering.meter import Meter
from coldbrew.s3 import S3App, S3Store
from coldbrew.s3.http import server_hosts
from coldbrew.serving.service import Serving
from coldbrew.settings import Settings, is_loopback
from coldbrew.stacks.api import CloudFormationApp
from coldbrew.stacks.engine import StackEngine
from coldbrew.stacks.service import StackService
from coldbrew.stacks.store import StackStore
from coldbrew.transform.api import TransformJobsApi
from coldbrew.transform.jobs import TransformJobs
from coldbrew.transform.jobstore import JobStore
from coldbrew.transform.storage import BotoStorage, EmbeddedStorage, Storage

if TYPE_CHECKING:
    from coldbrew.backends.ray.backend import RayBackend

log = logging.getLogger("coldbrew")


def _cpu_slots(settings: Settings) -> int | None:
    """The scaling core's ``cpu_slots``: COLDBREW_CPU_SLOTS (0: none); by default the cores this
    process may run on, and one more (with a 2.2 ms forest on 2 cores, 8 clients, four interleaved
    runs each: 694 req/s at 3, 644 at 2, 674 with no limit); none with the Ray backend, whose
    workers run on other machines."""
    if settings.cpu_slots is not None:
        return settings.cpu_slots or None
    return len(os.sched_getaffinity(0)) + 1 if settings.backend == "local" else None


class Services:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        secure_data_dir(settings.data_dir)
        self.store = Store(settings.db_path)
        # The embedded S3 (the default): s3:// model data is read from it through the gateway's port.
        self.s3 = S3Store(settings.s3_dir) if settings.s3 == "embedded" else None
        own_s3 = settings.local_url if self.s3 is not None else None
        # Model code is contained (coldbrew.backends.containment): an allow-listed environment,
        # a user of its own per endpoint when the server runs as root, its cache entries' groups.
        containment = ContainmentConfig(
            passthrough=parse_names(settings.worker_env_passthrough), ids=parse_ids(settings.worker_ids)
        )
        groups = (
            ContentGroups(containment.ids.groups, [settings.artifact_dir / "sha256", settings.packages_dir])
            if containment.ids is not None and os.geteuid() == 0
            else None
        )
        loopback = is_loopback(settings.host)
        roots = ModelRoots.from_setting(settings.model_roots, settings.auth_enabled, loopback)
        self.artifacts = ArtifactStore(
            settings.artifact_dir, settings.max_artifact_bytes, own_s3, roots=roots, groups=groups
        )
        self.packages = PackageCache(
            settings.packages_dir, settings.pip_arguments, groups=groups, passthrough=containment.passthrough
        )
        self.backend: LocalBackend | RayBackend
        if settings.backend == "ray":
            # Imported only here: the default install has no Ray.
            from coldbrew.backends.ray.backend import RayBackend

            self.backend = RayBackend(
                settings.ray_address,
                zygote=settings.zygote,
                memory_cgroups=settings.memory_cgroups,
                zygote_idle_s=settings.zygote_idle_s,
                node_s3=settings.ray_node_s3,
            )
        else:
            self.backend = LocalBackend(
                zygote=settings.zygote,
                memory_cgroups=settings.memory_cgroups,
                containment=containment,
                zygote_idle_s=settings.zygote_idle_s,
                templates=Templates(
                    enabled=settings.templates and settings.zygote,
                    idle_s=settings.template_idle_s,
                    max_bytes=settings.template_memory_mb * 1024 * 1024,
                ),
            )
        # CloudWatch Logs: each environment's output and lifecycle, collected by a thread of its own.
        self.logs = (
            LogCollector(
                settings.logs_db_path,
                max_bytes_per_endpoint=settings.logs_max_bytes_per_endpoint,
                retention_days=settings.log_retention_days,
                echo=default_echo() if settings.logs_echo else None,
            )
            if settings.logs
            else None
        )
        self.serving = Serving(
            self.backend,
            self.artifacts,
            self.packages,
            settings.idle_timeout_s,
            settings.invocation_timeout_s,
            settings.memory_budget_mb,
            settings.keepalive_policy,
            logs=self.logs,
            max_starting=settings.max_starts_per_variant
            or (len(os.sched_getaffinity(0)) if settings.backend == "local" else None),
            cpu_slots=_cpu_slots(settings),
        )
        self.reconciler = Reconciler(self.store, self.serving)
        # Metering: its own connection and writer thread on the same database (after the store has
        # migrated it); the invoke path only appends to its buffer.
        self.meter = Meter(
            settings.db_path,
            retention_days=settings.meter_retention_days,
            flush_interval_s=settings.meter_flush_interval_s,
            sample_interval_s=settings.meter_sample_interval_s,
            snapshot=self.serving.environment_snapshot,
        )
        # Data capture: the invoke path appends to the writer's buffer; its thread writes to S3.
        sink: Sink = EmbeddedSink(self.s3) if self.s3 is not None else BotoSink()
        self.capture = CaptureWriter(sink)
        # Batch transform: jobs run on the same serving, their pools preemptible.
        storage: Storage = EmbeddedStorage(self.s3) if self.s3 is not None else BotoStorage()
        self.transform_jobs = TransformJobs(JobStore(self.store), self.serving, storage)
        quotas = Quotas(
            models=settings.max_models,
            endpoint_configs=settings.max_endpoint_configs,
            endpoints=settings.max_endpoints,
            transform_jobs=settings.max_transform_jobs,
            instances_per_variant=settings.max_instances_per_variant,
        )
        self.control = ControlPlane(self.store, self.reconciler, quotas)
        self.control.operations.update(TransformJobsApi(self.control, self.transform_jobs).operations)
        # CloudFormation stacks: their operations run on the control plane's own operations.
        stack_store = StackStore(self.store)
        self.stacks = StackService(stack_store, settings.account_id)
        self.stack_engine = StackEngine(stack_store, self.control, settings.account_id)
        # Asynchronous inference: its queue in a file of its own, so its fsyncs never wait on the
        # control store's or the meter's writes.
        objects: Objects = EmbeddedObjects(self.s3) if self.s3 is not None else BotoObjects()
        self.async_queue = AsyncQueue(settings.async_db_path)
        self.dispatcher = Dispatcher(
            self.async_queue,
            objects,
            self.serving,
            endpoint_exists=self.control.endpoint_exists,
            region=settings.region,
            meter=self.meter,
        )
        # Its backlog metrics: read at scrape time, and sampled into the metering database for CloudWatch.
        self.backlog = BacklogSource(lambda: self.dispatcher.backlog, self.serving)
        self.backlog_sampler = BacklogSampler(
            settings.db_path, self.backlog.read, interval_s=settings.async_metrics_interval_s
        )

    def aws_apis(self) -> dict[str, ASGIApp]:
        """The other AWS APIs served on the gateway's port, by SigV4 signing name."""
        apis: dict[str, ASGIApp] = {}
        apis["monitoring"] = CloudWatchApp(self.settings.db_path, flush=self.meter.flush)
        if self.s3 is not None:
            hosts = server_hosts(self.settings.host)
            apis["s3"] = S3App(self.s3, self.settings.account_id, self.settings.region, hosts)
        apis["cloudformation"] = CloudFormationApp(self.stacks, self.stack_engine, self.settings.region)
        if self.logs is not None:
            apis["logs"] = LogsApi(
                self.logs, self.settings.account_id, self.settings.region, self.settings.log_retention_days
            )
        return apis

    async def start(self) -> None:
        if self.logs is not None:
            self.logs.start()
        await self.serving.start()
        self.meter.start()
        self.capture.start()
        self.reconciler.resume()
        await self.dispatcher.start()
        await self.transform_jobs.start()
        await self.stack_engine.start()
        self.backlog_sampler.start()
        if self.settings.demo:
            context = RequestContext(self.settings.region, self.settings.account_id)
            await run_in_threadpool(deploy_demo, self.control, context, self.settings.data_dir)
        log.info("coldbrew is using %s", self.settings.data_dir)

    async def close(self) -> None:
        # First: a stack operation drives the control plane, and is taken up at the next start.
        await self.stack_engine.close()
        # The reconciler's threads may be waiting on the event loop, so stop them off the loop.
        await run_in_threadpool(self.reconciler.stop)
        await run_in_threadpool(self.backlog_sampler.close)
        # Before serving: what it is processing finishes (or is queued again) while workers exist.
        await self.dispatcher.close()
        await self.transform_jobs.close()
        await self.serving.close()
        # After serving has drained, so the last invocations' records are flushed too.
        await run_in_threadpool(self.meter.close)
        # Before the embedded S3 closes: the last records are written to it.
        await run_in_threadpool(self.capture.close)
        if self.logs is not None:
            # After serving has stopped every worker, so their last lines are in.
            await run_in_threadpool(self.logs.close)
        self.store.close()
        self.async_queue.close()
        if self.s3 is not None:
            self.s3.close()
