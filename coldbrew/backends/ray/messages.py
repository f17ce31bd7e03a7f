"""What the gateway and a node's agent send each other (through Ray, which pickles them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from coldbrew.backends.start_trace import StartTrace


@dataclass(frozen=True)
class AgentInfo:
    node_id: str
    host: str
    """The address the node's workers listen on (Ray's node IP)."""
    pid: int
    models: tuple[str, ...] = ()
    """Digests of the models already in the node's artifact cache."""


@dataclass(frozen=True)
class ModelBundle:
    """One model directory as shipped to a node: a tar of it and the tar's SHA-256."""

    digest: str
    """The model's identity in the head's content-addressed cache (its archive's SHA-256)."""
    sha256: str
    """SHA-256 of ``data``: the node extracts it only if what arrived hashes to this."""


@dataclass(frozen=True)
class S3Fetch:
    """A model for a node to fetch from S3 itself rather than be shipped from the head."""

    digest: str
    """The model's digest as the head recorded it when it fetched the same object (its cache
    directory's name): for a gzip archive, the SHA-256 of the object's bytes; for another file,
    SHA-256 of ``file\0NAME\0`` and the bytes' SHA-256 (``coldbrew.artifacts.extract.unpack_file``)."""
    label: str
    """The model's ``s3://bucket/key`` (for messages: the signed URL is not logged)."""
    url: str
    """A presigned GET of the object: the node needs no credentials of its own."""
    max_bytes: int
    """At most this much is downloaded, and extracted."""


@dataclass(frozen=True)
class StartRequest:
    worker_id: str
    digest: str
    head_model_dir: str
    """The model's directory on the head: the environment's variables that name it are rewritten
    to the node's copy, and the node's path in errors back to this one."""
    memory_mb: int
    environment_concurrency: int = 1
    env: dict[str, str] = field(default_factory=dict)
    runtime: str = "generic"
    nice: int = 0
    fresh: bool = False
    directories: dict[str, str] = field(default_factory=dict)
    """Other directories of the head's the worker needs (a downloaded SAGEMAKER_SUBMIT_DIRECTORY,
    the requirements' installed packages), each shipped like the model: head path -> digest. The
    environment's variables that name them are rewritten to the node's copies."""


@dataclass(frozen=True)
class StartReply:
    pid: int = 0
    port: int = 0
    setup_ms: float = 0.0
    memory_enforced: bool = False
    error: str | None = None
    """Why the worker did not become ready (the loader's error), else None."""
    output: bytes = b""
    """What a worker that did not become ready wrote (its stdout and stderr), for its log stream."""
    trace: StartTrace | None = None
    """Where the start's time went (``coldbrew.backends.start_trace``), on the node's
    ``time.monotonic()`` clock; None if the launch kept none."""
    replied: float = 0.0
    """The node's ``time.monotonic()`` when this reply was made: the gateway sets ``trace``
    against its own clock by it (the nodes' monotonic clocks are not the gateway's)."""


@dataclass(frozen=True)
class WorkerReport:
    rss_bytes: int
    oom_killed: bool = False


@dataclass(frozen=True)
class NodeReport:
    """A node's answer to a poll: its live workers, and those that exited since the last poll."""

    alive: dict[str, WorkerReport]
    exited: dict[str, WorkerReport]
    zygote_rss_bytes: int = 0
    output: dict[str, bytes] = field(default_factory=dict)
    """What each worker wrote to its stdout and stderr since the last poll (for the environment's
    CloudWatch Logs stream on the gateway)."""
    output_closed: tuple[str, ...] = ()
    """Workers whose output ended (they and everything they started are gone), all of it sent:
    the gateway closes their streams' pipes."""
