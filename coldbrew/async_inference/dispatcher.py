"""Drains each endpoint's async queue through serving, at the endpoint's concurrency.

One drain task per endpoint with work, on the gateway's event loop. It keeps at most the
variants' concurrency (MaxConcurrency, or instances × MaxConcurrentInvocationsPerInstance) in
flight, so the scaling core starts environments as work arrives and, once the queue is empty,
releases them after the idle timeout like any other idle environment. Requests are claimed from
the queue in batches a little ahead of need, with their small inputs read in the same trip to a
worker thread, and finished in batches (``outcomes.OutcomeWriter``), so the queue's fsyncs and the
thread hops are shared by many requests: the event loop does little more per request than it
does for a real-time invocation.

A request ends with exactly one visible outcome: its result object, or its failure object. A
request started before (``attempts > 0``: the server stopped, or a worker crashed under it)
is first checked for a result an earlier run already wrote, identified by the request id in the
object's metadata, and only processed again if there is none. A start is committed to the queue
before the request's outcome is written or it is put back, so an outcome on S3 always belongs to a
counted attempt, and a worker crash always counts. A SIGKILL of the server between handing a
request to a worker and that commit (its batch lingers up to LINGER_S for company, and may wait
for an I/O thread behind result writes) leaves that attempt uncounted: the request is still
checked for an earlier result, as every request the earlier run had claimed is, but a request
that kills the whole server inside that window each time is retried across restarts without the
MAX_ATTEMPTS bound (model code runs in workers, so that takes the machine's OOM killer choosing
the gateway).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from coldbrew.async_inference.commits import GroupCommit
from coldbrew.async_inference.notifications import Notifier
from coldbrew.async_inference.objects import ObjectError, Objects, TooLarge
from coldbrew.async_inference.outcomes import Completion, OutcomeWriter
from coldbrew.async_inference.queue import AsyncQueue, Backlog, Started, Update
from coldbrew.async_inference.requests import MAX_INPUT_BYTES, AsyncRequest, location
from coldbrew.errors import ColdbrewError, ModelError, ModelNotReadyException, ThrottlingException
from coldbrew.metering.meter import Meter
from coldbrew.metering.records import MeterRecord
from coldbrew.serving.errors import EnvironmentLost, InvocationTimedOut, ModelAnswered
from coldbrew.serving.invocation import Invocation
from coldbrew.serving.router import LiveEndpoint, RoutedVariant
from coldbrew.serving.service import Serving

log = logging.getLogger("coldbrew.async")

T = TypeVar("T")

MAX_ATTEMPTS = 3
"""Times a request is handed to a worker before it is failed (a worker crash or a server stop
under it each count one)."""
SWEEP_INTERVAL_S = 1.0
"""How often expired requests are failed and endpoints without a drain are looked at."""
LOOK_AHEAD = 64
"""Requests a drain claims ahead of its workers (at least twice its concurrency)."""
PREFETCH_MAX = 256 * 1024
"""Inputs up to this size are read when they are claimed; larger ones when they start."""
PREFETCH_BUDGET = 8 * 1024 * 1024
"""Most input bytes one claim reads ahead, so a drain's look-ahead holds little memory."""
UNTYPED = (None, "binary/octet-stream")
"""Content types an S3 object has when whoever stored it named none."""
BACKOFF_S = 0.5
"""Pause of a drain whose requests were refused for capacity (memory budget, an update)."""
LINGER_S = 0.02
"""How long a batch of starts or of outcomes waits for more before it is written."""


Input = tuple[bytes, str | None] | ObjectError | None
"""A claimed request's input read ahead: body and content type, why it cannot be read, or None
(not read yet)."""


@dataclass
class _Drain:
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    buffer: deque[tuple[AsyncRequest, Input]] = field(default_factory=deque)
    """Claimed from the queue (``running`` there) but not started yet."""
    in_flight: dict[str, int] = field(default_factory=dict)
    """By variant name."""
    task: asyncio.Task[None] | None = None

    @property
    def busy(self) -> int:
        return sum(self.in_flight.values())


class Dispatcher:
    def __init__(
        self,
        queue: AsyncQueue,
        objects: Objects,
        serving: Serving,
        *,
        endpoint_exists: Callable[[str], bool],
        region: str,
        meter: Meter | None = None,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.queue = queue
        self.objects = objects
        self.serving = serving
        self.endpoint_exists = endpoint_exists
        self.region = region
        self.meter = meter
        self.notifier = notifier or Notifier()
        self.clock = clock
        # Two threads: one can wait on a large input or an fsync while the other serves the rest;
        # more only contend for the GIL (measured: 8 threads cost the drain 45% more gateway CPU per
        # request than 2, and 1 thread drained 6% slower than 2).
        self.io = ThreadPoolExecutor(max_workers=2, thread_name_prefix="coldbrew-async")
        # The intake does not linger: a client waits for its 202. Starts and outcomes do (nobody
        # waits on a start's record; a result visible 20 ms later is nothing to a queue), which
        # cut the gateway's CPU per async request by a quarter (bench/async_queue.py).
        self._intake: GroupCommit[AsyncRequest, str | None] = GroupCommit(self._enqueue, self.io)
        self._updates: GroupCommit[Update, None] = GroupCommit(self._update, self.io, linger_s=LINGER_S)
        writer = OutcomeWriter(queue, objects, self.notifier, region, clock)
        self._outcomes: GroupCommit[Completion, None] = GroupCommit(writer.write, self.io, linger_s=LINGER_S)
        self._drains: dict[str, _Drain] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._closing = False
        self._resumed: set[str] = set()
        """Requests an earlier run had claimed: each may have its outcome written already."""
        self.backlog: dict[str, Backlog] = {}
        """By lower-cased endpoint name, as of the last sweep."""

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        recovered = await self.run_io(self.queue.recover)
        if recovered:
            log.info("async: %d request(s) an earlier run had claimed are queued again", len(recovered))
        self._resumed = set(recovered)
        for key in await self.run_io(self.queue.endpoints_with_work):
            self.wake(key)
        self._sweeper = asyncio.create_task(self._sweep())

    async def close(self, grace_s: float = 10.0) -> None:
        """Stop taking work; let what runs finish for ``grace_s``; put what never started back."""
        self._closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        for drain in self._drains.values():
            drain.wake.set()
        running = [t for t in self._tasks if not t.done()]
        if running:
            _, late = await asyncio.wait(running, timeout=grace_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        # Each drain puts what it claimed but never started back in the queue as it ends.
        await asyncio.gather(*(d.task for d in self._drains.values() if d.task), return_exceptions=True)
        await self._updates.drain()
        await self._outcomes.drain()
        self.io.shutdown(wait=True)

    # --- accepting -------------------------------------------------------------------------------

    async def accept(self, request: AsyncRequest) -> str | None:
        """Queue ``request`` once its input is found: returns once it is durable in the queue
        (None), or why it was refused (its input cannot be read or is too large)."""
        refusal = await self._intake.submit(request)
        if refusal is None:
            self.wake(request.endpoint_key)
        return refusal

    def _enqueue(self, requests: list[AsyncRequest]) -> list[str | None]:
        """Blocking, for a batch: each input checked, the ones found queued in one commit."""
        refusals: list[str | None] = []
        for request in requests:
            try:
                size = self.objects.size(location(request.input_location))
            except ObjectError as e:
                refusals.append(str(e))
                continue
            if size is None:
                refusals.append("the object does not exist.")
            elif size > MAX_INPUT_BYTES:
                refusals.append(
                    f"it is {size:,} bytes; asynchronous inference takes at most {MAX_INPUT_BYTES:,}."
                )
            else:
                refusals.append(None)
        self.queue.enqueue(r for r, refusal in zip(requests, refusals, strict=True) if refusal is None)
        return refusals

    def _update(self, updates: list[Update]) -> list[None]:
        self.queue.update(updates, self.clock())
        return [None] * len(updates)

    def wake(self, key: str) -> None:
        if self._closing:
            return
        drain = self._drains.get(key)
        if drain is None:
            drain = self._drains[key] = _Drain()
            drain.task = asyncio.create_task(self._drain(key, drain))
        drain.wake.set()

    # --- draining --------------------------------------------------------------------------------

    async def _drain(self, key: str, drain: _Drain) -> None:
        try:
            await self._drain_loop(key, drain)
        except Exception:
            log.exception("async: the drain of endpoint %s failed; it restarts at the next sweep", key)
        finally:
            if self._drains.get(key) is drain:
                del self._drains[key]
            if drain.buffer:
                await self.run_io(self.queue.requeue, [r.id for r, _ in drain.buffer])
                drain.buffer.clear()

    async def _drain_loop(self, key: str, drain: _Drain) -> None:
        exhausted = False
        while not self._closing:
            drain.wake.clear()
            live = self.serving.endpoint(key)
            if live is None:
                if not await self.run_io(self.endpoint_exists, key):
                    if drain.buffer:
                        await self.run_io(self.queue.requeue, [r.id for r, _ in drain.buffer])
                        drain.buffer.clear()
                    await self._fail_deleted(key)
                    if drain.busy == 0:
                        return
                # Being created or redeployed after a restart (or its last requests are ending).
                await self._sleep_or_wake(drain, SWEEP_INTERVAL_S)
                continue
            capacity = self._capacity(live)
            # Refilled in batches (down to half the look-ahead, then back up), so a busy queue pays
            # one claim for many requests rather than one per completion.
            ahead = max(2 * capacity, LOOK_AHEAD)
            want = ahead - len(drain.buffer)
            if len(drain.buffer) <= ahead // 2 and want > 0:
                claimed = await self.run_io(self._claim, key, want)
                drain.buffer.extend(claimed)
                exhausted = len(claimed) < want
            while drain.buffer:
                variant = self._pick(live, drain)
                if variant is None:
                    break
                request, fetched = drain.buffer.popleft()
                drain.in_flight[variant.name] = drain.in_flight.get(variant.name, 0) + 1
                self._spawn(self._process(request, fetched, variant, drain))
            if exhausted and not drain.buffer and drain.busy == 0 and not drain.wake.is_set():
                return  # no work: the next accept starts a new drain
            await self._sleep_or_wake(drain, SWEEP_INTERVAL_S)

    def _claim(self, key: str, want: int) -> list[tuple[AsyncRequest, Input]]:
        """Blocking: up to ``want`` of the endpoint's requests, small inputs read ahead."""
        claimed: list[tuple[AsyncRequest, Input]] = []
        budget = PREFETCH_BUDGET
        for request in self.queue.claim(key, want):
            fetched: Input = None
            if budget > 0:
                try:
                    fetched = self.objects.read(location(request.input_location), min(budget, PREFETCH_MAX))
                    budget -= len(fetched[0])
                except TooLarge:
                    fetched = None  # read when it starts
                except ObjectError as e:
                    fetched = e
            claimed.append((request, fetched))
        return claimed

    async def _sleep_or_wake(self, drain: _Drain, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(drain.wake.wait(), timeout)

    def _capacity(self, live: LiveEndpoint) -> int:
        return max(1, sum(self._limit(v) for v in live.variants.values() if v.weight > 0))

    def _limit(self, variant: RoutedVariant) -> int:
        return self.serving.pools.config(variant.pool).max_concurrency

    def _pick(self, live: LiveEndpoint, drain: _Drain) -> RoutedVariant | None:
        """A variant with room, by weight among those that have it."""
        open_ = [
            v
            for v in live.variants.values()
            if v.weight > 0 and drain.in_flight.get(v.name, 0) < self._limit(v)
        ]
        if not open_:
            return None
        if len(open_) == 1:
            return open_[0]
        return random.choices(open_, weights=[v.weight for v in open_])[0]

    # --- one request -----------------------------------------------------------------------------

    async def _process(
        self, request: AsyncRequest, fetched: Input, variant: RoutedVariant, drain: _Drain
    ) -> None:
        released = False

        def release() -> None:
            # The slot is free once the worker has answered: writing the result does not hold it.
            nonlocal released
            if not released:
                released = True
                drain.in_flight[variant.name] -= 1
                drain.wake.set()

        try:
            await self._run(request, fetched, variant, release)
        except Exception:
            log.exception(
                "async: request %s (InferenceId %s) failed unexpectedly", request.id, request.inference_id
            )
            with contextlib.suppress(Exception):
                await self._fail(
                    request, "coldbrew failed while processing this request; see the server log."
                )
        finally:
            release()

    async def _run(
        self, request: AsyncRequest, fetched: Input, variant: RoutedVariant, release: Callable[[], None]
    ) -> None:
        resumed = request.id in self._resumed
        self._resumed.discard(request.id)
        if (request.attempts > 0 or resumed) and await self._already_finished(request):
            return
        now = self.clock()
        if now > request.expires_at:
            await self._fail(request, _expired(request))
            return
        if request.attempts >= MAX_ATTEMPTS:
            await self._fail(
                request,
                f"The request was started {request.attempts} times without finishing (the model's "
                "worker exited or the server stopped while processing it); it is not retried again.",
            )
            return
        # Committed beside the invocation, not before it: waiting for it held the worker idle
        # behind the result writes' fsyncs on the I/O threads. Every path waits for it before it
        # writes an outcome or puts the request back; a commit that fails is logged, and the
        # invocation's own outcome still decides what becomes of the request.
        started = self._updates.submit_nowait(Started(request.id))
        started.add_done_callback(functools.partial(_log_start_failure, request))
        try:
            await self._attempt(request, fetched, variant, release, started)
        finally:
            await _settled(started)  # done already on every path but an unexpected error

    async def _attempt(
        self,
        request: AsyncRequest,
        fetched: Input,
        variant: RoutedVariant,
        release: Callable[[], None],
        started: asyncio.Future[None],
    ) -> None:
        try:
            if fetched is None:
                fetched = await self.run_io(
                    self.objects.read, location(request.input_location), MAX_INPUT_BYTES
                )
            if isinstance(fetched, ObjectError):
                raise fetched
        except ObjectError as e:
            await _settled(started)
            await self._fail(request, str(e))
            return
        body, stored_type = fetched
        invocation = Invocation(
            endpoint=request.endpoint,
            body=body,
            # Without a ContentType on the request (the SDK's AsyncPredictor sends none), the input
            # object's own type, unless it is S3's default for objects stored without one.
            content_type=request.content_type or (None if stored_type in UNTYPED else stored_type),
            accept=request.accept,
            custom_attributes=request.custom_attributes,
            target_variant=None,
        )
        received, t0 = self.clock(), time.perf_counter()
        try:
            try:
                result = await self.serving.invoke(
                    variant, invocation, timeout_s=request.invocation_timeout_s
                )
            finally:
                release()
                await _settled(started)
        except (ThrottlingException, ModelNotReadyException):
            # No room now (memory budget, or the variant is being replaced): back in line, not counted.
            await self.run_io(self.queue.requeue, [request.id], True)
            await asyncio.sleep(BACKOFF_S)
            return
        except EnvironmentLost as e:
            self._meter_failure(request, variant, received, t0, len(body), e)
            if request.attempts + 1 < MAX_ATTEMPTS:
                log.warning(
                    "async: request %s lost its worker (%s); it is queued again", request.id, e.message
                )
                await self.run_io(self.queue.requeue, [request.id], False)
                return
            await self._fail(request, f"{e.message} The request was tried {request.attempts + 1} times.")
            return
        except InvocationTimedOut as e:
            self._meter_failure(request, variant, received, t0, len(body), e)
            await self._fail(
                request,
                f"The model did not answer within the request's InvocationTimeoutSeconds "
                f"({request.invocation_timeout_s} s); the invocation was stopped.",
            )
            return
        except ModelAnswered as e:
            # The model's own error response is the failure object, as on SageMaker.
            self._meter_failure(request, variant, received, t0, len(body), e)
            await self._fail(request, e.message, e.response_body, e.response_content_type)
            return
        except ModelError as e:
            self._meter_failure(request, variant, received, t0, len(body), e)
            await self._fail(request, e.message)
            return
        except ColdbrewError as e:
            await self._fail(request, e.message)
            return
        if self.meter is not None:
            self.meter.record(
                MeterRecord.answered(
                    endpoint=request.endpoint_key,
                    variant=result.variant,
                    started_at=received,
                    total_us=int((time.perf_counter() - t0) * 1_000_000),
                    model_latency_us=result.model_latency_us,
                    cold_start=result.cold_start,
                    setup_ms=result.setup_ms,
                    memory_mb=variant.memory_mb,
                    serverless=variant.serverless,
                    bytes_in=len(body),
                    bytes_out=len(result.body),
                )
            )
        await self._outcomes.submit(Completion.result(request, result.body, result.content_type))

    async def _expire(self, request: AsyncRequest) -> None:
        """Fail a request whose TTL ran out while queued, unless an earlier run finished it."""
        resumed = request.id in self._resumed
        self._resumed.discard(request.id)
        if (request.attempts > 0 or resumed) and await self._already_finished(request):
            return
        await self._fail(request, _expired(request))

    async def _already_finished(self, request: AsyncRequest) -> bool:
        """An earlier run wrote this request's outcome before it could mark it finished."""
        for url, succeeded in ((request.output_location, True), (request.failure_location, False)):
            if await self.run_io(self.objects.written_by, location(url)) == request.id:
                # Its notification may not have gone out: it is published (again) rather than missed.
                await self._outcomes.submit(Completion.found(request, succeeded))
                return True
        return False

    async def _fail(
        self, request: AsyncRequest, reason: str, body: bytes | None = None, content_type: str | None = None
    ) -> None:
        await self._outcomes.submit(Completion.failure(request, reason, body, content_type))

    async def _fail_deleted(self, key: str) -> None:
        while True:
            batch = await self.run_io(self.queue.claim, key, 100)
            if not batch:
                return
            name = batch[0].endpoint
            await asyncio.gather(
                *(
                    self._fail(r, f"Endpoint {name} was deleted before this request could be processed.")
                    for r in batch
                )
            )

    def _meter_failure(
        self,
        request: AsyncRequest,
        variant: RoutedVariant,
        received: float,
        started: float,
        size: int,
        e: ModelError,
    ) -> None:
        if self.meter is None:
            return
        self.meter.record(
            MeterRecord.failed(
                endpoint=request.endpoint_key,
                variant=variant.name,
                started_at=received,
                total_us=int((time.perf_counter() - started) * 1_000_000),
                memory_mb=variant.memory_mb,
                serverless=variant.serverless,
                bytes_in=size,
                bytes_out=0,
                status=e.status,
                error_code=e.code,
            )
        )

    # --- housekeeping ----------------------------------------------------------------------------

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            try:
                await self._sweep_once()
            except Exception:
                log.exception("async: housekeeping failed; it runs again in %s s", SWEEP_INTERVAL_S)

    async def _sweep_once(self) -> None:
        now = self.clock()
        expired = await self.run_io(self.queue.claim_expired, now, 500)
        for request in expired:
            self._spawn(self._expire(request))
        for key in await self.run_io(self.queue.endpoints_with_work):
            if key not in self._drains:
                self.wake(key)
        self.backlog = await self.run_io(self.queue.backlog)
        await self.run_io(self.queue.prune, now)

    # --- plumbing --------------------------------------------------------------------------------

    async def run_io(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.io, fn, *args)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def _settled(future: asyncio.Future[Any]) -> None:
    """Wait for ``future`` without taking on its exception (``_log_start_failure`` reports it)."""
    if not future.done():
        await asyncio.wait([future])


def _log_start_failure(request: AsyncRequest, started: asyncio.Future[None]) -> None:
    if not started.cancelled() and (error := started.exception()) is not None:
        log.error(
            "async: the start of request %s could not be recorded (%s); this attempt is not counted",
            request.id, error,
        )  # fmt: skip


def _expired(request: AsyncRequest) -> str:
    return (
        f"Request expired: it waited in the queue longer than its RequestTTLSeconds ({request.ttl_s} s) "
        "before it could be processed."
    )
