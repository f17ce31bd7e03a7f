"""The Ray backend: serving's environments on the nodes of a Ray cluster.

The gateway is a Ray driver. On every alive node it starts one :class:`~.agent.NodeAgent` actor,
pinned there (node affinity, no CPU of its own), as nodes appear; the agent forks workers from its
zygotes. :func:`~.placement.place` picks the node of each new environment from the book kept here
(memory and vCPUs placed per node, which models each node's cache holds). A model reaches a node
once, through Ray's object store, and is verified there by hash. The worker listens on TCP on its
node's address and the gateway connects to it directly: Ray carries the control messages (start,
stop, poll), never an invocation.

A node's agent is polled a few times a second: for its workers' memory and exits, and to learn
that the node is gone (the poll fails). Its workers are then not alive, serving replaces them
elsewhere on demand, and the requests that were in flight on them fail with the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import itertools
import logging
import os
import re
import tarfile
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coldbrew.backends.base import NodeShortfall, RoomWanted, WorkerSpec, WorkerStartError
from coldbrew.backends.ray.agent import NodeAgent
from coldbrew.backends.ray.messages import (
    AgentInfo,
    ModelBundle,
    NodeReport,
    S3Fetch,
    StartReply,
    StartRequest,
)
from coldbrew.backends.ray.placement import (
    NodeState,
    PlacementRequest,
    cpus_for,
    explain_full,
    place,
    shortfalls,
)
from coldbrew.backends.start_trace import StartTrace
from coldbrew.backends.zygotes import ZYGOTE_IDLE_S, Zygotes
from coldbrew.worker.container import INSTALLED_REQUIREMENTS

SUBMIT_DIRECTORY = "SAGEMAKER_SUBMIT_DIRECTORY"

log = logging.getLogger("coldbrew.backends.ray")

POLL_INTERVAL_S = 0.25
"""How often each agent is asked for its workers' state: bounds how long serving may route to a
worker of a node that is gone (the connection fails sooner, when it is refused)."""
UNAVAILABLE_POLLS = 3
"""Polls in a row that find the agent unavailable before its node is taken for lost."""
DISCOVERY_INTERVAL_S = 2.0
"""How often the cluster's node list is read for nodes that joined or left."""
STOP_PATIENCE_S = 5.0
"""How long past its grace a stop waits for the agent's answer."""
ROOM_PATIENCE_S = 60.0
"""How long a start that fits some node's memory, but finds no node with that much free, waits
for room on one (an environment stopped, a node joined) before it fails: as long as an invocation
may take (``COLDBREW_INVOCATION_TIMEOUT_S``'s default)."""
NODE_S3_ENV = "COLDBREW_RAY_NODE_S3"
"""Where nodes fetch ``s3://`` model data from themselves (``RayBackend``'s ``node_s3``) when
the server does not say: the embedded S3's URL as the nodes reach the gateway, or ``external``."""
RESERVE_PATIENCE_S = 10.0
"""How long a start waits for Ray to place the placement group that reserves its memory and
vCPUs on the chosen node. In free room it takes milliseconds; in the room of a group just removed
about a second (Ray retries a pending group then); longer means other Ray work holds it."""
PARK_S = 5.0
"""How long a stopped environment's reservation is kept for the next start of its size on its
node: past the second in which a new group in that room would wait for Ray."""
ROOM_RECHECK_S = 1.0
"""A waiting start looks again at least this often (the zygotes' memory changes without a
signal)."""
_HEX64 = re.compile(r"[0-9a-f]{64}")
OUTPUT_PENDING_BYTES = 4 << 20
"""At most this much of one worker's output waits on the gateway for its log pipe to have room;
past it the newest is dropped (the log collector reads the pipe continuously, so only a stalled
collector gets here)."""


class _OutputPipe:
    """The gateway's end of a node worker's output: the write end of its environment's log pipe
    (``WorkerSpec.output_fd``, the backend's own copy), fed with what the agent's polls bring.
    Never blocks the event loop: what the pipe has no room for waits for the next poll."""

    def __init__(self, fd: int) -> None:
        self.fd: int | None = os.dup(fd)
        os.set_blocking(self.fd, False)
        self.pending = bytearray()

    def write(self, data: bytes) -> None:
        if self.fd is None:
            return
        if len(self.pending) + len(data) <= OUTPUT_PENDING_BYTES:
            self.pending += data
        while self.pending:
            try:
                written = os.write(self.fd, self.pending)
            except BlockingIOError:
                return
            except OSError:  # the collector closed its end: nothing more to send
                self.pending.clear()
                return
            del self.pending[:written]

    def close(self) -> None:
        if self.fd is not None:
            self.write(b"")
            os.close(self.fd)
            self.fd = None


@dataclass
class _Booking:
    """A start in progress on a node: counted by placement as the environment it will be."""

    tenant: str
    memory_mb: int


@dataclass
class _Node:
    node_id: str
    host: str
    memory_mb: int
    cpus: float
    agent: Any
    """The agent's Ray actor handle."""
    ready: asyncio.Future[AgentInfo]
    dead: bool = False
    models: set[str] = field(default_factory=set)
    workers: dict[str, RayWorker | _Booking] = field(default_factory=dict)
    """Its environments, and the starts in progress (booked before they are placed)."""
    receiving: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    fetching: dict[str, asyncio.Future[str | None]] = field(default_factory=dict)
    """Models the node is fetching from S3 itself, by digest: why not, or None once it has."""
    outputs: dict[str, _OutputPipe] = field(default_factory=dict)
    """Where each worker's output goes, until the agent reports its end."""
    zygote_rss_bytes: int = 0
    poller: asyncio.Task[None] | None = None
    parked: list[tuple[int, Any]] = field(default_factory=list)
    """Reservations of environments that stopped a moment ago (MemorySizeInMB, placement group),
    kept for the next start of that size here (``RayBackend._park``)."""

    def state(self) -> NodeState:
        environments: dict[str, int] = {}
        for worker in self.workers.values():
            environments[worker.tenant] = environments.get(worker.tenant, 0) + 1
        zygotes_mb = self.zygote_rss_bytes // (1024 * 1024)
        return NodeState(
            node_id=self.node_id,
            memory_mb=self.memory_mb,
            cpus=self.cpus,
            # The agent's zygotes hold memory of the node too: what they hold is not placed.
            used_memory_mb=sum(w.memory_mb for w in self.workers.values()) + zygotes_mb,
            used_cpus=sum(cpus_for(w.memory_mb) for w in self.workers.values()),
            models=frozenset(self.models),
            environments=environments,
            alive=not self.dead and _succeeded(self.ready),
            helpers_mb=zygotes_mb,
        )


class RayWorker:
    """An environment on a node, as serving sees it (``WorkerProcess`` and ``Retiring``)."""

    def __init__(
        self, backend: RayBackend, node: _Node, worker_id: str, spec: WorkerSpec, reply: StartReply
    ) -> None:
        self.backend = backend
        self.node = node
        self.worker_id = worker_id
        self.tenant = spec.tenant
        self.memory_mb = spec.memory_mb
        self.environment = spec.environment
        self.pid = reply.pid
        """The worker's pid on its node (not this machine's, unless the node runs here)."""
        self.address = f"http://{node.host}:{reply.port}"
        self.setup_ms = reply.setup_ms
        self._memory_enforced = reply.memory_enforced
        self.reservation: Any = None
        """The Ray placement group that holds its memory and vCPUs on its node (``_reserve``)."""
        self.start_trace: StartTrace | None = None
        """The start's trace on the gateway's clock (``_on_gateway_clock``), for the cold-start
        breakdown serving logs."""
        self._rss = 0
        self._exited = False
        self._oom = False
        self._stopping = False

    @property
    def node_id(self) -> str:
        return self.node.node_id

    def rss_bytes(self) -> int:
        return 0 if self._exited else self._rss

    @property
    def memory_enforced(self) -> bool:
        return self._memory_enforced

    def oom_killed(self) -> bool:
        return self._oom

    def is_alive(self) -> bool:
        return not (self._exited or self.node.dead)

    def retiring(self) -> bool:
        return self._stopping or self.node.dead

    def _exit(self, oom_killed: bool) -> None:
        self._exited = True
        self._oom = self._oom or oom_killed
        self._unreserve()
        if self.node.workers.pop(self.worker_id, None) is not None:
            self.backend._room_freed()

    def _unreserve(self) -> None:
        reservation, self.reservation = self.reservation, None
        if reservation is not None:
            self.backend._park(self.node, self.memory_mb, reservation)

    async def stop(self, grace_s: float = 2.0) -> None:
        self._stopping = True
        # Its memory is free for placement at once, in coldbrew's book and in Ray's (the group's
        # removal takes a while to reach the node: it overlaps the worker's exit).
        self._unreserve()
        if self.node.workers.pop(self.worker_id, None) is not None:
            self.backend._room_freed()
        if not self.node.dead and not self._exited:
            with contextlib.suppress(Exception):  # the node may die meanwhile: nothing left to stop
                # Bounded: an agent that does not answer must not hold serving's stop up.
                await asyncio.wait_for(
                    self.backend._await(self.node.agent.stop_worker.remote(self.worker_id, grace_s)),
                    grace_s + STOP_PATIENCE_S,
                )
        self._exited = True


class RayBackend:
    zygote_supervisor: Zygotes | None = None
    """The zygotes live on the nodes, in their agents: the dashboard's machine page shows none."""

    def __init__(
        self,
        address: str | None = None,
        startup_timeout_s: float = 120.0,
        zygote: bool = True,
        memory_cgroups: bool = True,
        namespace: str = "coldbrew",
        zygote_idle_s: float = ZYGOTE_IDLE_S,
        room_wait_s: float = ROOM_PATIENCE_S,
        node_s3: str | None = None,
    ) -> None:
        """``node_s3``: where nodes fetch ``s3://`` model data from themselves (the embedded S3's
        URL, as the nodes reach the gateway, or ``"external"`` for boto3's own configuration on
        the head); the head signs each GET, so nodes need no credentials. None: every model is
        shipped from the head's cache. Unset, ``COLDBREW_RAY_NODE_S3`` says."""
        try:
            import ray  # the optional extra: only a server started with --backend ray imports it
        except ImportError:
            raise SystemExit("coldbrew: --backend ray needs Ray: pip install 'coldbrew[ray]'") from None

        self._ray = ray
        self.startup_timeout_s = startup_timeout_s
        self.zygote = zygote
        self.memory_cgroups = memory_cgroups
        self.zygote_idle_s = zygote_idle_s
        self._runtimes: tuple[str, ...] | None = None
        """The runtimes serving's pools use (``use_runtimes``), told to every agent on its poll."""
        # The gateway is a driver of the cluster ("auto": the one this machine's `ray start`
        # joined; None: RAY_ADDRESS, else a Ray of its own on this machine). Its output stays in
        # Ray's logs: coldbrew's own logging is not to be interleaved with every actor's.
        try:
            ray.init(
                address=address,
                namespace=namespace,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
                configure_logging=False,
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            # One line at start-up, as for any other setting the server cannot use.
            where = f"at {address}" if address else "(RAY_ADDRESS, or a new local one)"
            raise SystemExit(
                f"coldbrew: cannot join the Ray cluster {where}: {_reason(exc)}; "
                "check --ray-address (COLDBREW_RAY_ADDRESS)"
            ) from None
        self.nodes: dict[str, _Node] = {}
        # Serving's budget until the first discovery has given every node its agent: the memory
        # of the nodes Ray lists now.
        self._listed_memory_mb = _listed_memory_mb(ray.nodes())
        self._discovered = False
        self._bundles: dict[str, tuple[ModelBundle, Any]] = {}
        self._ids = itertools.count()
        self._discovery: asyncio.Task[None] | None = None
        self._last_discovery = 0.0
        self._closed = False
        self._lost: set[str] = set()
        """Nodes taken for lost: Ray may list one as alive a while longer, but it gets no agent
        again (a node that restarts joins with a new id)."""
        self.room_wait_s = room_wait_s
        self.node_s3 = node_s3 if node_s3 is not None else os.environ.get(NODE_S3_ENV) or None
        self._s3_client: Any = None
        self._releases: set[asyncio.Future[None]] = set()
        """Reservations being removed (``_release``): waited for on close."""
        self._room_waiters: set[asyncio.Future[None]] = set()
        """Starts waiting for room on a node: woken when some may have appeared."""
        self._wanting: dict[int, tuple[int, int]] = {}
        """The same starts (those serving named), by a number of their own: the environment's id
        and its MemorySizeInMB, for ``room_wanted``."""

    # --- nodes ---------------------------------------------------------------------------------

    def maintain(self) -> None:
        """Reads the node list now and then (off the loop: it asks Ray's GCS) for new nodes."""
        if self._closed:
            return
        busy = self._discovery is not None and not self._discovery.done()
        if not busy and time.monotonic() - self._last_discovery >= DISCOVERY_INTERVAL_S:
            self._discovery = asyncio.create_task(self._discover())

    async def _discover(self) -> None:
        self._last_discovery = time.monotonic()
        try:
            listed = await asyncio.to_thread(self._ray.nodes)
        except Exception as exc:  # the GCS may be briefly unreachable; the next look retries
            log.warning("could not list the Ray cluster's nodes: %s", exc)
            return
        alive = {n["NodeID"]: n for n in listed if n.get("Alive")}
        self._discovered = True
        for node_id, node in list(self.nodes.items()):
            if node_id not in alive and not node.dead:
                self._node_lost(node, "it left the Ray cluster")
        for node_id, info in alive.items():
            if node_id not in self.nodes and node_id not in self._lost and not self._closed:
                self._add_node(node_id, info)

    def _add_node(self, node_id: str, info: dict[str, Any]) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        resources = info.get("Resources", {})
        memory_mb = _memory_mb(resources)
        cpus = float(resources.get("CPU", 0.0))
        host = str(info.get("NodeManagerAddress", "127.0.0.1"))
        actor = (
            self._ray.remote(NodeAgent)
            .options(
                # Pinned to its node, and never moved: if the node goes, so do its environments.
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
                num_cpus=0,
                max_restarts=0,
                max_concurrency=1000,
                name=f"coldbrew-agent-{os.getpid()}-{next(self._ids)}-{node_id[:16]}",
            )
            .remote(
                node_id,
                host,
                self.startup_timeout_s,
                self.zygote,
                self.memory_cgroups,
                zygote_idle_s=self.zygote_idle_s,
            )
        )
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[AgentInfo] = asyncio.ensure_future(self._await(actor.ready.remote()))  # type: ignore[attr-defined]
        node = _Node(node_id, host, memory_mb, cpus, actor, ready)
        self.nodes[node_id] = node
        node.poller = loop.create_task(self._poll(node))
        log.info("Ray node %s (%s): %d MB, %.1f vCPU; starting its agent", node_id[:8], host, memory_mb, cpus)

    @staticmethod
    async def _await(ref: Any) -> Any:
        return await ref

    async def _poll(self, node: _Node) -> None:
        try:
            info = await asyncio.wait_for(asyncio.shield(node.ready), self.startup_timeout_s)
            node.models.update(info.models)
            log.info("coldbrew agent ready on node %s (pid %d)", node.node_id[:8], info.pid)
            self._room_freed()  # a node with room for a waiting start, perhaps
            failures = 0
            while not self._closed and not node.dead:
                try:
                    report: NodeReport = await node.agent.poll.remote(self._runtimes)
                except self._ray.exceptions.ActorUnavailableError:
                    # Possibly a hiccup (the actor is not restarted, but its connection may be):
                    # a few in a row, or Ray's word that it died, and the node is lost.
                    failures += 1
                    if failures >= UNAVAILABLE_POLLS:
                        raise
                    await asyncio.sleep(POLL_INTERVAL_S)
                    continue
                failures = 0
                if report.zygote_rss_bytes < node.zygote_rss_bytes:
                    self._room_freed()  # a zygote stopped, or shrank
                node.zygote_rss_bytes = report.zygote_rss_bytes
                for worker_id, state in report.alive.items():
                    worker = node.workers.get(worker_id)
                    if isinstance(worker, RayWorker):
                        worker._rss = state.rss_bytes
                for worker_id, state in report.exited.items():
                    worker = node.workers.get(worker_id)
                    if isinstance(worker, RayWorker):
                        worker._exit(state.oom_killed)
                for worker_id, pipe in node.outputs.items():
                    # New output, or what the pipe had no room for last time.
                    data = report.output.get(worker_id, b"")
                    if data or pipe.pending:
                        pipe.write(data)
                for worker_id in report.output_closed:
                    _end_output(node, worker_id)
                await asyncio.sleep(POLL_INTERVAL_S)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the actor died with its node (RayActorError and kin)
            if not self._closed:
                self._node_lost(node, f"its agent is gone ({type(exc).__name__})")

    def _node_lost(self, node: _Node, why: str) -> None:
        if node.dead:
            return
        node.dead = True
        while node.parked:
            self._release(node.parked.pop()[1])
        lost = [w for w in node.workers.values() if isinstance(w, RayWorker)]
        log.warning(
            "Ray node %s lost: %s; %d environment(s) on it are gone", node.node_id[:8], why, len(lost)
        )
        for worker in lost:
            worker._exit(False)
        # Their output ends with them: end of file on each environment's log pipe.
        for pipe in node.outputs.values():
            pipe.close()
        node.outputs.clear()
        if not node.ready.done():
            node.ready.cancel()
        self.nodes.pop(node.node_id, None)
        self._lost.add(node.node_id)
        with contextlib.suppress(Exception):
            self._ray.kill(node.agent)

    async def _ready_nodes(self) -> list[_Node]:
        if not self.nodes:
            await self._discover()
        return [n for n in self.nodes.values() if n.state().alive]

    async def _agents_starting(self) -> bool:
        """Wait for the agents still starting (a node that just joined); whether there were any."""
        pending = [n.ready for n in self.nodes.values() if not n.ready.done()]
        if pending:
            await asyncio.wait(pending, timeout=self.startup_timeout_s)
        return bool(pending)

    def use_runtimes(self, runtimes: Collection[str]) -> None:
        """The runtimes the deployed pools use (``RuntimeHelpers``): each agent stops the other
        runtimes' zygotes after the idle period (``COLDBREW_ZYGOTE_IDLE_S``), as on one machine."""
        self._runtimes = tuple(sorted(runtimes))

    def helper_rss_bytes(self) -> int:
        """Memory held by the agents' zygotes, on every node (serving takes it from its budget;
        placement from each node's)."""
        return sum(n.zygote_rss_bytes for n in self.nodes.values() if not n.dead)

    def memory_capacity_mb(self) -> int:
        """Serving's memory budget (``ClusterMemory``): the Ray ``memory`` of every node coldbrew
        places on, those whose agent is still starting included (a start waits for it), those
        lost not; serving takes the zygotes' memory (``helper_rss_bytes``) out of it. Read again
        on every housekeeping pass, so it grows when a node joins and shrinks when one leaves."""
        if not self._discovered:
            return self._listed_memory_mb
        return _capacity_mb(self.nodes.values())

    # --- artifacts -----------------------------------------------------------------------------

    async def _bundle(self, model_dir: str) -> tuple[ModelBundle, Any]:
        path = Path(model_dir)
        digest = path.name if _HEX64.fullmatch(path.name) else ""
        cached = self._bundles.get(model_dir)
        if cached is not None:
            return cached
        data = await asyncio.to_thread(_tar_directory, path)
        sha256 = hashlib.sha256(data).hexdigest()
        # A directory outside the content-addressed cache is named by its content.
        bundle = ModelBundle(digest or sha256, sha256)
        # In the object store once; each node that needs it pulls it from there.
        entry = (bundle, self._ray.put(data))
        self._bundles[model_dir] = entry
        return entry

    async def _ship(self, node: _Node, bundle: ModelBundle, ref: Any) -> None:
        if bundle.digest in node.models:
            return
        receiving = node.receiving.get(bundle.digest)
        if receiving is None or receiving.done() and receiving.exception() is not None:
            receiving = asyncio.ensure_future(self._await(node.agent.receive_model.remote(bundle, ref)))
            node.receiving[bundle.digest] = receiving
        await asyncio.shield(receiving)
        node.models.add(bundle.digest)
        node.receiving.pop(bundle.digest, None)
        if all(bundle.digest in n.models for n in self.nodes.values() if not n.dead):
            # Every node has it: the object store's copy is freed (no reference left), and made
            # again for a node that joins later. Models are not pinned there for good.
            for model_dir, (cached, _) in list(self._bundles.items()):
                if cached == bundle:
                    del self._bundles[model_dir]

    async def _reserve(self, node: _Node, memory_mb: int) -> Any:
        """Reserve an environment's MemorySizeInMB and vCPUs on its node as Ray resources: a
        placement group of one bundle ``{"memory", "CPU"}`` pinned to the node (its
        ``ray.io/node-id`` label), so Ray schedules no other work into that room. Removed when
        the environment stops or exits, after a few seconds parked for the next start of its size
        on the node (``_park``); Ray removes it with the gateway's job."""
        from ray.util.placement_group import placement_group

        for index, (size, parked) in enumerate(node.parked):
            if size == memory_mb:
                del node.parked[index]
                return parked  # granted already: no wait for Ray to place a new group
        # Parked groups of other sizes hold room this one may need: given back first.
        while node.parked:
            self._release(node.parked.pop()[1])
        bundle = {"memory": float(memory_mb * 1024 * 1024), "CPU": round(cpus_for(memory_mb), 4)}
        group = await asyncio.to_thread(
            placement_group,
            [bundle],
            strategy="STRICT_PACK",
            bundle_label_selector=[{"ray.io/node-id": node.node_id}],
        )
        try:
            await asyncio.wait_for(self._await(group.ready()), RESERVE_PATIENCE_S)
        except TimeoutError:
            self._release(group)
            raise WorkerStartError(
                f"Ray did not grant {memory_mb} MB and {bundle['CPU']} vCPU on node {node.node_id[:8]} "
                f"within {RESERVE_PATIENCE_S:.0f} s, though coldbrew placed nothing in that room: other "
                "Ray work holds it. Give coldbrew nodes of its own, or add one."
            ) from None
        except BaseException:
            self._release(group)
            raise
        return group

    def _park(self, node: _Node, memory_mb: int, group: Any) -> None:
        """Keep a stopped environment's reservation on its node for ``PARK_S`` for the next start
        of the same size there, then remove it. A group created in the room of one just removed
        waits for Ray's retry of pending groups (996 ms median, bench/ray_backend.py
        --placement-groups), which made every scale-to-zero-and-back within a second pay it."""
        if node.dead or self._closed:
            self._release(group)
            return
        node.parked.append((memory_mb, group))

        def expire() -> None:
            for index, (_, parked) in enumerate(node.parked):
                if parked is group:
                    del node.parked[index]
                    self._release(group)
                    return

        asyncio.get_running_loop().call_later(PARK_S, expire)

    def _release(self, group: Any) -> None:
        """Remove a reservation (off the loop: it is a call to Ray's GCS)."""
        if group is None or self._closed and not self._ray.is_initialized():
            return
        from ray.util.placement_group import remove_placement_group

        def remove() -> None:
            with contextlib.suppress(Exception):  # gone with its node, or with the cluster
                remove_placement_group(group)

        task = asyncio.get_running_loop().run_in_executor(None, remove)
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _model_to(self, node: _Node, spec: WorkerSpec, digest: str, s3: str | None) -> None:
        """The model on ``node``: fetched there from S3 (``s3``: its ``s3://`` object) when the
        node can and what it fetched hashes to ``digest``, else shipped from the head's cache."""
        if digest in node.models:
            return
        if s3 is not None:
            fetching = node.fetching.get(digest)
            if fetching is None:  # one fetch per model and node at a time; a failed one is retried
                fetching = asyncio.ensure_future(self._fetch_on(node, spec.model_dir, digest, s3))
                node.fetching[digest] = fetching
                fetching.add_done_callback(lambda _: node.fetching.pop(digest, None))
            why = await asyncio.shield(fetching)
            if why is None:
                node.models.add(digest)
                log.info("model %s (%s) fetched from S3 by node %s", digest[:12], s3, node.node_id[:8])
                return
            log.warning("%s: %s; shipping it from the head's cache instead", spec.tenant or "-", why)
        bundle, ref = await self._bundle(spec.model_dir)
        await self._ship(node, bundle, ref)

    async def _fetch_on(self, node: _Node, model_dir: str, digest: str, s3: str) -> str | None:
        try:
            url, size = await asyncio.to_thread(self._presign, s3, model_dir)
        except Exception as exc:  # no credentials, a bad configuration: the head ships it
            return f"could not sign a GET of {s3} for node {node.node_id[:8]}: {_reason(exc)}"
        # The download and the extracted tree are bounded by the head's copy (and a little more:
        # tar headers, gzip's framing).
        fetch = S3Fetch(digest, s3, url, size + size // 10 + (1 << 20))
        why: str | None = await node.agent.fetch_model.remote(fetch)
        return why

    def _presign(self, s3: str, model_dir: str) -> tuple[str, int]:
        if self._s3_client is None:
            from coldbrew.artifacts.s3 import make_client

            self._s3_client = make_client(None if self.node_s3 == "external" else self.node_s3)
        bucket, _, key = s3.removeprefix("s3://").partition("/")
        url = self._s3_client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=900
        )
        size = sum(f.stat().st_size for f in Path(model_dir).rglob("*") if f.is_file())
        return str(url), size

    # --- workers -------------------------------------------------------------------------------

    async def start(self, spec: WorkerSpec) -> RayWorker:
        if spec.command is not None:
            raise WorkerStartError(
                "A model's own server (exec: images) is not supported on the Ray backend yet."
            )
        if spec.network_isolation:
            raise WorkerStartError(
                "EnableNetworkIsolation is not supported on the Ray backend yet: its workers are "
                "reached over the network."
            )
        digest = _cache_digest(spec.model_dir)
        s3 = _s3_object(spec) if self.node_s3 is not None and digest else None
        if digest is None or s3 is None:
            # Shipped from the head whatever the node: made now (a directory outside the cache
            # is named by the tar's hash).
            digest = (await self._bundle(spec.model_dir))[0].digest
        extras = [(d, *await self._bundle(d)) for d in _other_directories(spec)]
        try:
            return await self._start_on_a_node(spec, digest, s3, extras)
        except _NodeFailed as failed:
            # The node was lost under the start (its agent is gone): once more, on another.
            self._node_lost(failed.node, failed.reason)
            try:
                return await self._start_on_a_node(spec, digest, s3, extras)
            except _NodeFailed as again:
                self._node_lost(again.node, again.reason)
                node = again.node.node_id[:8]
                raise WorkerStartError(
                    f"The environment could not be started on Ray node {node}: {again.reason}"
                ) from None

    async def _start_on_a_node(
        self, spec: WorkerSpec, digest: str, s3: str | None, extras: list[tuple[str, ModelBundle, Any]]
    ) -> RayWorker:
        node = self.nodes[await self._room_for(spec, digest)]
        worker_id = f"{os.getpid()}-{next(self._ids)}"
        # Booked before the first await: starts that run meanwhile see the memory as taken.
        booking = _Booking(spec.tenant, spec.memory_mb)
        node.workers[worker_id] = booking
        # Its output's way to its log stream, open before the agent is asked: a poll may bring
        # the worker's first lines (or their end) before the start's answer does.
        pipe = _OutputPipe(spec.output_fd) if spec.output_fd is not None else None
        if pipe is not None:
            node.outputs[worker_id] = pipe
        reservation: Any = None
        try:
            reservation = await self._reserve(node, spec.memory_mb)
            await self._model_to(node, spec, digest, s3)
            for _, extra, extra_ref in extras:
                await self._ship(node, extra, extra_ref)
            request = StartRequest(
                worker_id=worker_id,
                digest=digest,
                head_model_dir=spec.model_dir,
                memory_mb=spec.memory_mb,
                environment_concurrency=spec.environment_concurrency,
                env=dict(spec.env),
                runtime=spec.runtime,
                nice=spec.nice,
                fresh=spec.fresh,
                directories={directory: extra.digest for directory, extra, _ in extras},
            )
            reply: StartReply = await asyncio.wait_for(
                self._await(node.agent.start_worker.remote(request)), self.startup_timeout_s + 10
            )
            received = time.monotonic()
        except (asyncio.CancelledError, WorkerStartError):
            node.workers.pop(worker_id, None)
            self._release(reservation)
            self._room_freed()
            _end_output(node, worker_id)
            raise
        except (self._ray.exceptions.RayActorError, self._ray.exceptions.ActorUnavailableError) as exc:
            node.workers.pop(worker_id, None)
            self._release(reservation)
            self._room_freed()
            _end_output(node, worker_id)
            raise _NodeFailed(node, _reason(exc)) from None
        except Exception as exc:
            node.workers.pop(worker_id, None)
            self._release(reservation)
            self._room_freed()
            _end_output(node, worker_id)
            raise WorkerStartError(
                f"The environment could not be started on Ray node {node.node_id[:8]}: {_reason(exc)}"
            ) from None
        node.workers.pop(worker_id, None)
        if reply.error is not None or node.dead:
            self._release(reservation)
        if reply.error is not None:
            self._room_freed()
            # What the worker wrote before it failed (its traceback) is in its stream too.
            if pipe is not None:
                pipe.write(reply.output)
            _end_output(node, worker_id)
            error = reply.error
            for path, label in sorted(spec.labels.items(), key=lambda pl: -len(pl[0])):
                error = error.replace(path, label)
            raise WorkerStartError(error)
        if node.dead:
            raise _NodeFailed(node, "the node was lost while the environment started")
        worker = RayWorker(self, node, worker_id, spec, reply)
        worker.reservation = reservation
        worker.start_trace = _on_gateway_clock(reply, received)
        node.workers[worker_id] = worker
        log.info(
            "%s: environment %s on node %s at %s (%.0f ms)",
            spec.tenant or "-",
            worker_id,
            node.node_id[:8],
            worker.address,
            reply.setup_ms,
        )
        return worker

    async def _room_for(self, spec: WorkerSpec, digest: str) -> str:
        """The node for a new environment: placed now if some node has room; else, if it fits
        some node's memory at all, once one has (the memory budget, the cluster's sum, had room
        for it: a node's is held by other environments, which stop when idle, or a node joins),
        waiting at most ``room_wait_s``. One that fits no node fails at once, saying so."""
        wanted = PlacementRequest(spec.memory_mb, digest, spec.tenant)
        states = [n.state() for n in await self._ready_nodes()]
        chosen = place(states, wanted)
        if chosen is None and await self._agents_starting():
            # Only when no ready node has room does a start wait for the agents of nodes that
            # are joining: waiting always would hold every cold start up behind a slow node.
            states = [n.state() for n in await self._ready_nodes()]
            chosen = place(states, wanted)
        began, waiting = time.monotonic(), False
        wanting: int | None = None
        try:
            while chosen is None:
                waited = time.monotonic() - began
                alive = [n for n in states if n.alive]
                # One that no node could hold even empty (its memory, or its vCPUs) never will.
                cpus = cpus_for(spec.memory_mb)
                never = not any(n.memory_mb >= spec.memory_mb and n.cpus + 1e-9 >= cpus for n in alive)
                if never or self._closed:
                    raise WorkerStartError(explain_full(states, spec.memory_mb) + ".")
                if waited >= self.room_wait_s:
                    raise WorkerStartError(
                        f"{explain_full(states, spec.memory_mb)}; waited {waited:.0f} s for room on a node."
                    )
                if not waiting:
                    waiting = True
                    if spec.environment is not None:
                        wanting = next(self._ids)
                        self._wanting[wanting] = (spec.environment, spec.memory_mb)
                    log.info(
                        "%s: no node has %d MB free (%s); waiting for room on one",
                        spec.tenant or "-",
                        spec.memory_mb,
                        ", ".join(f"{n.node_id[:8]}: {n.memory_mb - n.used_memory_mb} MB" for n in alive),
                    )
                woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._room_waiters.add(woken)
                try:
                    await asyncio.wait_for(woken, min(ROOM_RECHECK_S, self.room_wait_s - waited))
                except TimeoutError:
                    pass
                finally:
                    self._room_waiters.discard(woken)
                states = [n.state() for n in await self._ready_nodes()]
                chosen = place(states, wanted)
        finally:
            if wanting is not None:
                del self._wanting[wanting]
        if waiting:
            log.info(
                "%s: room for %d MB on node %s after %.1f s",
                spec.tenant or "-",
                spec.memory_mb,
                chosen[:8],
                time.monotonic() - began,
            )
        return chosen

    def room_wanted(self) -> list[RoomWanted]:
        """The starts waiting for room on a node, each with the nodes that could make it by
        releasing environments (``SplitMemory``): serving's core picks which."""
        if not self._wanting:
            return []
        states = [n.state() for n in self.nodes.values()]
        wanted = []
        for environment, memory_mb in self._wanting.values():
            nodes = []
            for node_id, short_mb in shortfalls(states, memory_mb):
                on_node = tuple(
                    w.environment
                    for w in self.nodes[node_id].workers.values()
                    if isinstance(w, RayWorker) and w.environment is not None
                )
                if on_node:
                    nodes.append(NodeShortfall(on_node, short_mb))
            if nodes:
                wanted.append(RoomWanted(environment, tuple(nodes)))
        return wanted

    def _room_freed(self) -> None:
        """Memory on some node may have been freed (or a node became ready): waiting starts look."""
        for woken in self._room_waiters:
            if not woken.done():
                woken.set_result(None)

    async def close(self) -> None:
        self._closed = True
        self._room_freed()
        if self._discovery is not None:
            self._discovery.cancel()
        nodes = list(self.nodes.values())
        for node in nodes:
            if node.poller is not None:
                node.poller.cancel()

        async def shut(node: _Node) -> None:
            if _succeeded(node.ready):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._await(node.agent.shutdown.remote()), 15)
            with contextlib.suppress(Exception):
                self._ray.kill(node.agent)

        await asyncio.gather(*(shut(n) for n in nodes), return_exceptions=True)
        for node in nodes:
            while node.parked:
                self._release(node.parked.pop()[1])
        await asyncio.gather(*self._releases, return_exceptions=True)
        for node in nodes:
            for pipe in node.outputs.values():
                pipe.close()
            node.outputs.clear()
        self.nodes.clear()
        self._bundles.clear()
        await asyncio.to_thread(self._ray.shutdown)


class _NodeFailed(Exception):
    def __init__(self, node: _Node, reason: str) -> None:
        super().__init__(reason)
        self.node = node
        self.reason = reason


def _other_directories(spec: WorkerSpec) -> list[str]:
    """The head's directories other than the model's that the worker is pointed at and must find
    on its node: a downloaded source directory (``SAGEMAKER_SUBMIT_DIRECTORY``, materialized into
    the cache at deploy) and the requirements' installed packages."""
    found: list[str] = []
    for name in (SUBMIT_DIRECTORY, INSTALLED_REQUIREMENTS):
        value = spec.env.get(name, "")
        inside_model = value == spec.model_dir or value.startswith(spec.model_dir + os.sep)
        if os.path.isabs(value) and not inside_model and os.path.isdir(value) and value not in found:
            found.append(value)
    return found


def _on_gateway_clock(reply: StartReply, received: float) -> StartTrace | None:
    """The node's start trace on the gateway's ``time.monotonic()``: each node reading shifted by
    ``received - reply.replied``, as if the reply had taken no time to arrive (it is read on
    arrival; what its way back took, a Ray message, lands in ``report``), and ``reported`` the
    reply's arrival: the gateway has the worker's ready status then. The admit stage so includes
    the start's way to the node and a model's first shipment to it."""
    trace = reply.trace
    if trace is None:
        return None
    shift = received - reply.replied
    stages = trace.worker
    if stages is not None:
        stages = stages.model_copy(
            update={
                "running": stages.running + shift,
                "loading": stages.loading + shift,
                "loaded": stages.loaded + shift,
                "listening": stages.listening + shift,
            }
        )
    return StartTrace(
        requested=trace.requested + shift,
        launched=trace.launched + shift,
        limited=trace.limited + shift,
        reported=received,
        worker=stages,
    )


def _cache_digest(model_dir: str) -> str | None:
    """The digest a directory of the head's content-addressed cache is named by, else None."""
    name = Path(model_dir).name
    return name if _HEX64.fullmatch(name) else None


def _s3_object(spec: WorkerSpec) -> str | None:
    """The model's ``s3://bucket/key`` object, if its data came from one (its label: the user's
    ModelDataUrl); None for a prefix, a local file, or no model data."""
    label = spec.labels.get(spec.model_dir, "")
    bucket, _, key = label.removeprefix("s3://").partition("/")
    if label.startswith("s3://") and bucket and key and not key.endswith("/"):
        return label
    return None


def _end_output(node: _Node, worker_id: str) -> None:
    pipe = node.outputs.pop(worker_id, None)
    if pipe is not None:
        pipe.close()


def _capacity_mb(nodes: Collection[_Node]) -> int:
    return sum(n.memory_mb for n in nodes if not n.dead)


def _listed_memory_mb(listed: list[dict[str, Any]]) -> int:
    """The memory of the alive nodes in a ``ray.nodes()`` listing."""
    return sum(_memory_mb(n.get("Resources", {})) for n in listed if n.get("Alive"))


def _memory_mb(resources: dict[str, Any]) -> int:
    return int(resources.get("memory", 0) // (1024 * 1024))


def _succeeded(future: asyncio.Future[Any]) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None


def _tar_directory(path: Path) -> bytes:
    """The model directory as an uncompressed tar, in name order with fixed metadata, so the same
    content always makes the same bytes (and hash)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for file in sorted(path.rglob("*")):
            info = tar.gettarinfo(str(file), arcname=str(file.relative_to(path)))
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if info.isfile():
                with open(file, "rb") as f:
                    tar.addfile(info, f)
            elif info.isdir() or info.issym():
                tar.addfile(info)
    return buffer.getvalue()


def _reason(exc: BaseException) -> str:
    """A Ray error's first line: its full text carries the remote traceback. An error raised by
    an agent's method is its own (a ``RayTaskError``'s cause), not the task's name."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException) and cause is not exc:
        exc = cause
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
