"""What one worker process is told to serve, passed from the gateway (or a zygote) to the child."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class WorkerConfig:
    """Cheap, picklable description of one execution environment.

    Nothing here is resolved or loaded: the model, the user's code and the listening socket are
    all set up inside the child by :func:`coldbrew.worker.main.run_worker`, so a config can be
    built in the gateway and shipped to a freshly forked or spawned process.
    """

    model_dir: str
    """Directory the model archive was extracted to (SageMaker's ``/opt/ml/model``)."""

    socket_path: str | None = None
    """Unix domain socket to listen on. Exactly one of ``socket_path`` and ``port`` is set."""

    port: int | None = None
    """TCP port on ``host`` to listen on; 0 lets the kernel pick (reported in the status line)."""

    host: str = "127.0.0.1"
    """Address for the TCP listener; ignored with ``socket_path``."""

    max_concurrency: int = 1
    """Requests predicted at once. 1 runs predict inline on the event loop (serverless);
    more runs it in a thread pool of that size (provisioned instances)."""

    env: dict[str, str] = field(default_factory=dict)
    """Environment of the model (CreateModel's ``Environment``), applied before user code loads."""

    def __post_init__(self) -> None:
        if (self.socket_path is None) == (self.port is None):
            raise ValueError("WorkerConfig needs exactly one of socket_path and port")
        if self.port is not None and not 0 <= self.port <= 65535:
            raise ValueError(f"WorkerConfig.port must be between 0 and 65535, got {self.port}")
        if self.max_concurrency < 1:
            raise ValueError(f"WorkerConfig.max_concurrency must be at least 1, got {self.max_concurrency}")
