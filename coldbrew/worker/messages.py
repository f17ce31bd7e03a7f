"""The messages between the gateway and the worker processes it starts, validated on receipt.

- :class:`WorkerLaunch`: what one worker is to serve. The gateway sends it to a zygote over its
  socket, which forks a worker with it, or writes it to a fresh worker's stdin
  (``python -m coldbrew.worker --launch``); both run :func:`coldbrew.worker.main.run_worker`.
- :class:`ForkReply`: the zygote's answer to a launch, the forked worker's pid or why not.
- :class:`WorkerStatus`: the one JSON line a worker or zygote writes on its status pipe once it
  can serve, or before it exits.

Nothing in a launch is resolved or loaded: the model, the user's code and the listening socket
are all set up inside the child, so a launch is built in the gateway and shipped as JSON.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Message(BaseModel):
    # Both ends run the same coldbrew, so a field one end does not know is a bug, not a version.
    model_config = ConfigDict(frozen=True, extra="forbid")

    def encoded(self) -> bytes:
        """The message as sent: JSON, unset fields left out."""
        return self.model_dump_json(exclude_none=True).encode()


class Bind(_Message):
    """A directory mounted at another path in the worker's own mount namespace."""

    source: str
    target: str


class Sandbox(_Message):
    """How a worker is contained, applied by the worker itself before the model's code loads
    (:func:`coldbrew.worker.sandbox.enter`); built by the gateway
    (:mod:`coldbrew.backends.containment`).

    The environment is not here: the gateway already built it from an allow-list, and a forked
    worker starts from the zygote's, which the gateway built the same way.
    """

    uid: int | None = None
    """Run as this user (and ``gid``): set only when the gateway runs as root."""
    gid: int | None = None
    groups: list[int] = Field(default_factory=list)
    """Supplementary groups: those of the cache entries (model, code, packages) it reads."""
    hide: list[str] = Field(default_factory=list)
    """Directories covered by an empty read-only tmpfs in the worker's mount namespace: the
    private ancestors (``/root``) of what it needs, which an unprivileged user could not cross."""
    expose: list[str] = Field(default_factory=list)
    """Directories under ``hide`` bound back at their own path: the interpreter, its packages,
    coldbrew itself, the run directory."""
    binds: list[Bind] = Field(default_factory=list)
    """The cache entries it serves, on fixed mountpoints in the run directory (the data dir above
    them stays private)."""
    network: bool = True
    """False: a network namespace of its own, with no interface up (EnableNetworkIsolation)."""

    @property
    def needs_mounts(self) -> bool:
        return bool(self.hide or self.expose or self.binds)


class WorkerLaunch(_Message):
    """One execution environment for a worker process to serve."""

    model_dir: str
    """Directory the model archive was extracted to (SageMaker's ``/opt/ml/model``)."""

    socket_path: str | None = None
    """Unix domain socket to listen on. Exactly one of ``socket_path`` and ``port`` is set."""

    port: int | None = Field(default=None, ge=0, le=65535)
    """TCP port on ``host`` to listen on; 0 lets the kernel pick (reported in the status line)."""

    host: str = "127.0.0.1"
    """Address for the TCP listener; ignored with ``socket_path``."""

    environment_concurrency: int = Field(default=1, ge=1)
    """Invocations this environment serves at once. 1 runs predict inline on the event loop
    (serverless); more runs it in a thread pool of that size (provisioned instances)."""

    nice: int = Field(default=0, ge=0, le=19)
    """Niceness the worker takes before anything else (a batch transform job's yields the CPU to
    the endpoints' workers)."""

    env: dict[str, str] = Field(default_factory=dict)
    """Environment of the model (CreateModel's ``Environment``), applied before user code loads.
    A fresh worker already started with it; a forked one starts with the zygote's."""

    sandbox: Sandbox | None = None
    """How to contain the worker; None leaves it as the parent is (a worker started by hand)."""

    @model_validator(mode="after")
    def _one_listener(self) -> WorkerLaunch:
        if (self.socket_path is None) == (self.port is None):
            raise ValueError("a WorkerLaunch needs exactly one of socket_path and port")
        return self


TEMPLATE_NAME = "coldbrew-tmpl"
"""A model template's process name (/proc/PID/comm): ``ps`` and the gateway tell it from workers."""
SPARE_NAME = "coldbrew-spare"
"""A template's spare's process name, until it is given a listener and becomes a worker."""


class TemplateStart(_Message):
    """Asks a zygote for a model template (:mod:`coldbrew.worker.template`): a process that loads
    ``launch``'s model once and forks its workers, the first one for ``launch`` itself. Sent with
    the template's channel (a SOCK_SEQPACKET socket), then the first worker's status pipe and
    optionally its output pipe."""

    template: WorkerLaunch


class TemplateFork(_Message):
    """Asks a template for one more worker of its model, listening here (sent on its channel with
    the worker's status pipe and optionally its output pipe); answered with a ForkReply.

    With ``spare``, sent with the spare's channel only: fork a child that waits on that channel
    for the listener and pipes of the next cold start (a TemplateFork without ``spare``), and then
    serves as that worker without being forked then."""

    socket_path: str | None = None
    port: int | None = Field(default=None, ge=0, le=65535)
    host: str = "127.0.0.1"
    spare: bool = False


class TemplateStatus(_Message):
    """A template's first word on its channel, once its model is loaded (or not).

    ``ready``: it forks workers; its first one's ForkReply follows. Not ready and ``serving``: the
    model's load left threads behind, so it cannot fork safely and serves as the launch's worker
    itself (``error`` says which threads). Neither: the load failed, and the first worker's status
    pipe has the loader's error, as from any worker."""

    ready: bool
    serving: bool = False
    error: str | None = None
    setup_ms: float | None = None


class ForkReply(_Message):
    """The zygote's answer: the forked worker's ``pid``, or the ``error`` that stopped it."""

    pid: int | None = None
    error: str | None = None


class LeftOutModule(_Message):
    """A preload module a zygote does not import: importing it started threads, and a process
    with other threads cannot be forked safely. Its workers import it themselves."""

    module: str
    threads: list[str]
    """The names (``comm``) of the threads that appeared."""
    started_by: str | None = None
    """The module being imported when they appeared (``pyarrow.lib`` under ``sklearn.ensemble``)."""
    import_ms: float
    """What importing it took in the zygote: roughly what each of its cold starts now pays."""


class WorkerStages(_Message):
    """``time.monotonic()`` readings in the worker. Linux's CLOCK_MONOTONIC is one clock for every
    process on the machine, so the gateway can set them against its own readings."""

    running: float
    """The worker's first step (after the fork, or the fresh interpreter's imports)."""
    loading: float
    """Contained and configured: the model's load begins."""
    loaded: float
    listening: float
    """Accepting connections, about to report ready."""
    rehearsed: bool = False
    """It answered its model's warm-up request before it was assigned (a template's spare): its
    first predict is not its first."""


class WorkerStatus(_Message):
    """Whether a worker (or zygote) is ready, with what it reports about its start."""

    ready: bool
    error: str | None = None
    """Why it is not ready: the loader's message, fit for an endpoint's FailureReason."""
    pid: int | None = None
    setup_ms: float | None = None
    """Time to load the model (for a zygote: its imports)."""
    port: int | None = None
    """The TCP port a worker listens on, when it was told port 0."""
    modules: list[str] | None = None
    """What a zygote imported."""
    left_out: list[LeftOutModule] | None = None
    """What a zygote's preload left out because importing it started threads (issue 18)."""
    stages: WorkerStages | None = None
    """When a worker reached each step of its start: the gateway's cold-start breakdown."""
    template_pid: int | None = None
    """The model template this worker was forked from (it did not load the model itself)."""

    def line(self) -> bytes:
        """The status as written on the pipe: one JSON line."""
        return self.encoded() + b"\n"
