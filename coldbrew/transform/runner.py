"""One run of a transform job: plan, start its pool, push every object's records through the model,
write the outputs, and say how it ended.

Runs on the gateway's event loop; reading, splitting and writing S3 objects happen on the job's I/O
threads. Up to MaxConcurrentTransforms x InstanceCount invocations are in flight, across the
objects in input order; an object's output is written once every one of its batches has answered,
then the object is marked done, so a run that is cancelled (StopTransformJob) or killed keeps every
finished output and a later run skips them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from typing import Any, BinaryIO, TypeVar

from coldbrew.control.deployment import Deployment
from coldbrew.errors import ColdbrewError, ModelError, ModelNotReadyException, ThrottlingException
from coldbrew.serving.errors import EnvironmentLost, InvocationTimedOut, ModelAnswered
from coldbrew.serving.invocation import Invocation
from coldbrew.serving.router import RoutedVariant
from coldbrew.serving.service import Serving
from coldbrew.serving.targets import JobSizing
from coldbrew.transform.jobstore import JobRow, JobStore
from coldbrew.transform.pipeline import Batch, Pipeline, PipelineError
from coldbrew.transform.plan import PlanError, PlannedObject, plan
from coldbrew.transform.spec import ExecutionParameters, TransformJobSpec
from coldbrew.transform.storage import Storage, StorageError

log = logging.getLogger("coldbrew.transform")

T = TypeVar("T")

VARIANT = "AllTraffic"
BACKOFF_S = 0.2
"""Wait before asking again for room that the memory budget did not have (a job yields)."""
READ_AHEAD = 8
"""Batches one object reads ahead of the invocations that take them."""


class JobFailed(Exception):
    """The job cannot finish; ``str()`` is its FailureReason."""


@dataclass(frozen=True)
class RunResult:
    status: str
    reason: str | None = None


class JobRun:
    def __init__(self, job: JobRow, jobs: JobStore, serving: Serving, storage: Storage, io: Executor) -> None:
        self.job = job
        self.spec = TransformJobSpec.from_request(job.request)
        self.jobs = jobs
        self.serving = serving
        self.storage = storage
        self.io = io

    async def run(self) -> RunResult:
        """Completed or Failed; a cancellation (StopTransformJob, shutdown) propagates once the pool
        is gone."""
        name = self.spec.name
        try:
            objects = await self._plan()
            variant, parameters = await self._start()
            pending = [o for o in objects if not o.done]
            log.info(
                "transform job %s: %d of %d objects to process, %d invocations at a time, %s, "
                "payloads up to %d MB",
                name, len(pending), len(objects), self._slots(parameters), parameters.batch_strategy,
                parameters.max_payload_bytes // (1024 * 1024),
            )  # fmt: skip
            await self._process([o.planned for o in pending], variant, parameters)
        except JobFailed as e:
            return RunResult("Failed", str(e))
        except ExceptionGroup as group:
            failure = _first_failure(group)
            if failure is None:
                raise
            return RunResult("Failed", str(failure))
        finally:
            with contextlib.suppress(Exception):
                await self.serving.undeploy_job(name)
        return RunResult("Completed")

    # --- steps -----------------------------------------------------------------------------------

    async def _plan(self) -> list[Any]:
        rows = await self._io(self.jobs.plan, self.spec.name)
        if rows is None:
            try:
                planned = await self._io(plan, self.spec, self.storage)
            except PlanError as e:
                raise JobFailed(str(e)) from None
            await self._io(self.jobs.save_plan, self.spec.name, planned)
            rows = await self._io(self.jobs.plan, self.spec.name)
        assert rows is not None
        return rows

    async def _start(self) -> tuple[RoutedVariant, ExecutionParameters]:
        spec = self.spec
        model = dict(self.job.model)
        config = {
            "ProductionVariants": [
                {
                    "VariantName": VARIANT,
                    "ModelName": spec.model_name,
                    "InstanceType": spec.instance_type,
                    "InitialInstanceCount": spec.instance_count,
                }
            ]
        }
        models = {spec.model_name.lower(): _with_env(model, spec.environment)}
        deployment = Deployment(f"transform-job/{spec.name}", config, models)
        target = deployment.target(spec.name)
        # Known before the pool starts only for the request's own values; the server's answer to
        # GET /execution-parameters can only change the concurrency of the next run.
        sizing = JobSizing(concurrent_per_instance=spec.max_concurrent or 1)
        target = replace(target, job=sizing)
        try:
            live = await self.serving.deploy_job(target)
            variant = live.variants[VARIANT]
            server = await self._execution_parameters(variant) if _byo(target) else None
            parameters = ExecutionParameters.resolve(spec, server)
            if parameters.max_concurrent != sizing.concurrent_per_instance:
                # The same model: its pool is only reconfigured, not started again.
                target = replace(target, job=JobSizing(parameters.max_concurrent))
                variant = (await self.serving.deploy_job(target)).variants[VARIANT]
        except ColdbrewError as e:
            raise JobFailed(f"The model {spec.model_name} could not be started: {e.message}") from None
        return variant, parameters

    async def _execution_parameters(self, variant: RoutedVariant) -> dict[str, Any] | None:
        """SageMaker's GET /execution-parameters to a model server of the user's own; its answer
        fills in what the request left unset (a server that does not answer it is fine)."""
        try:
            response = await self.serving.get(variant, "/execution-parameters")
        except ColdbrewError:
            return None
        if response.status != 200:
            return None
        with contextlib.suppress(ValueError):
            answer = json.loads(response.body)
            if isinstance(answer, dict):
                return answer
        return None

    def _slots(self, parameters: ExecutionParameters) -> int:
        return max(1, parameters.max_concurrent * self.spec.instance_count)

    async def _process(
        self, objects: list[PlannedObject], variant: RoutedVariant, parameters: ExecutionParameters
    ) -> None:
        slots = self._slots(parameters)
        invocations = asyncio.Semaphore(slots)
        in_progress = asyncio.Semaphore(slots)  # objects open at once (many small ones keep it busy)
        pipeline = Pipeline(self.spec, parameters)
        async with asyncio.TaskGroup() as group:
            for planned in objects:
                await in_progress.acquire()
                task = group.create_task(self._object(planned, pipeline, variant, invocations))
                task.add_done_callback(lambda _: in_progress.release())

    async def _object(
        self,
        planned: PlannedObject,
        pipeline: Pipeline,
        variant: RoutedVariant,
        invocations: asyncio.Semaphore,
    ) -> None:
        try:
            stream = await self._io(self.storage.open, planned.input)
        except StorageError as e:
            raise JobFailed(str(e)) from None
        outputs: list[bytes] = []
        batches: list[Batch] = []
        content_type: list[str] = []
        try:
            source = pipeline.batches(stream, planned.input)
            async with asyncio.TaskGroup() as group:
                while True:
                    chunk = await self._io(_take, source, READ_AHEAD)
                    if not chunk:
                        break
                    for batch in chunk:
                        index = len(outputs)
                        outputs.append(b"")
                        batches.append(batch)
                        await invocations.acquire()
                        group.create_task(
                            self._batch(planned, batch, index, outputs, content_type, variant, invocations)
                        )
        except PipelineError as e:
            raise JobFailed(str(e)) from None
        finally:
            await self._io(_close, stream)
        try:
            body = pipeline.assemble(batches, outputs)
        except PipelineError as e:
            raise JobFailed(f"{planned.input}: {e}") from None
        output_type = self.spec.accept or (content_type[0] if content_type else "application/octet-stream")
        try:
            await self._io(self.storage.write, planned.output, body, output_type)
        except StorageError as e:
            raise JobFailed(str(e)) from None
        await self._io(self.jobs.mark_done, self.spec.name, planned.position, sum(b.count for b in batches))

    async def _batch(
        self,
        planned: PlannedObject,
        batch: Batch,
        index: int,
        outputs: list[bytes],
        content_type: list[str],
        variant: RoutedVariant,
        invocations: asyncio.Semaphore,
    ) -> None:
        try:
            result = await self._invoke(planned, batch, variant)
        finally:
            invocations.release()
        outputs[index] = result.body
        if not content_type:
            content_type.append(result.content_type)

    async def _invoke(self, planned: PlannedObject, batch: Batch, variant: RoutedVariant) -> Any:
        """The batch's answer, retried InvocationsMaxRetries times past the model's errors, timeouts
        and crashes; waits, not counted, while the memory budget has no room for the job."""
        spec = self.spec
        invocation = Invocation(
            endpoint=spec.name,
            body=batch.payload,
            content_type=spec.content_type,
            accept=spec.accept,
            custom_attributes=None,
            target_variant=None,
        )
        failures = 0
        while True:
            try:
                return await self.serving.invoke(variant, invocation, timeout_s=spec.invocation_timeout_s)
            except (ThrottlingException, ModelNotReadyException):
                await asyncio.sleep(BACKOFF_S)
                continue
            except EnvironmentLost as e:
                if e.message.startswith("The environment was stopped to make room"):
                    continue  # preempted for an endpoint: not the model's fault
                error: ModelError = e
            except (InvocationTimedOut, ModelAnswered, ModelError) as e:
                error = e
            failures += 1
            if failures > spec.max_retries:
                raise JobFailed(_batch_failure(planned, batch, error, failures)) from None
            log.warning(
                "transform job %s: %s (%s) failed (%s); attempt %d of %d next",
                spec.name, planned.input, batch.describe(), error.message, failures + 1, spec.max_retries + 1,
            )  # fmt: skip

    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.io, fn, *args)


def _with_env(model: dict[str, Any], environment: dict[str, str]) -> dict[str, Any]:
    """The job's Environment over the model's container's, as the transform container gets it."""
    if not environment:
        return model
    model = dict(model)
    key = "PrimaryContainer" if model.get("PrimaryContainer") is not None else "Containers"
    if key == "PrimaryContainer":
        container = dict(model[key])
        container["Environment"] = {**(container.get("Environment") or {}), **environment}
        model[key] = container
    else:
        containers = [dict(c) for c in model.get("Containers") or [{}]]
        containers[0]["Environment"] = {**(containers[0].get("Environment") or {}), **environment}
        model[key] = containers
    return model


def _byo(target: Any) -> bool:
    variant = target.variants[0]
    image = variant.container.image or ""
    return image.startswith("exec:") or variant.settings.serve_command is not None


def _batch_failure(planned: PlannedObject, batch: Batch, error: ModelError, attempts: int) -> str:
    return (
        f"The model failed {batch.describe()} of {planned.input} {attempts} times (InvocationsMaxRetries "
        f"{attempts - 1}): {error.message}"
    )


def _first_failure(group: BaseExceptionGroup[Any]) -> JobFailed | PipelineError | None:
    for error in group.exceptions:
        if isinstance(error, JobFailed | PipelineError):
            return error
        if isinstance(error, BaseExceptionGroup):
            found = _first_failure(error)
            if found is not None:
                return found
    return None


def _take(source: Iterator[T], count: int) -> list[T]:
    chunk = []
    for item in source:
        chunk.append(item)
        if len(chunk) == count:
            break
    return chunk


def _close(stream: BinaryIO) -> None:
    with contextlib.suppress(Exception):
        stream.close()
