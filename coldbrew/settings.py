"""Server settings: flags override ``COLDBREW_*`` environment variables, which override defaults."""

from __future__ import annotations

import ipaddress
import shlex
from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def is_loopback(host: str) -> bool:
    """Whether listening on ``host`` serves this machine only (``localhost``, 127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: whatever it resolves to, it may be reachable from elsewhere


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("coldbrew", appauthor=False))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COLDBREW_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    """Address the gateway listens on."""

    port: int = Field(default=8080, ge=0, le=65535)
    """Port of the gateway: control API, invocations API, /ping and /metrics all share it."""

    data_dir: Path = Field(default_factory=default_data_dir)
    """Where the SQLite store and the artifact cache live."""

    account_id: str = Field(default="123456789012", pattern=r"^\d{12}$")
    """AWS account id used in the ARNs coldbrew forms."""

    region: str = "us-east-1"
    """Region used in ARNs when a request carries no SigV4 credential scope."""

    max_artifact_bytes: PositiveInt = 20 * 1024**3
    """Largest total size a model archive may expand to."""

    idle_timeout_s: PositiveFloat = 300.0
    """How long an idle serverless environment is kept before it is released."""

    invocation_timeout_s: PositiveFloat = 60.0
    """An invocation running longer than this is ended with an error (SageMaker's limit is 60 s)."""

    keepalive_policy: Literal["fixed", "adaptive"] = "fixed"
    """How long idle serverless environments are kept: a fixed idle timeout, or the adaptive
    hybrid-histogram policy (per endpoint: COLDBREW_KEEPALIVE_POLICY in the model's Environment)."""

    memory_budget_mb: PositiveInt | None = None
    """Most MemorySizeInMB all live serverless environments may hold together (default 80% of RAM)."""

    max_starts_per_variant: PositiveInt | None = None
    """At most this many environments of one serverless variant start at once; requests beyond
    wait for the first free one (default: this machine's CPU count with the local backend, where
    starts are CPU-bound; no limit with the Ray backend)."""

    cpu_slots: NonNegativeInt | None = None
    """Cores the running invocations of one serverless variant may keep busy together, by the
    cores each was measured to use; more wait for one of them to finish (default: this machine's
    CPU count plus one with the local backend; 0: no limit; no limit with the Ray backend)."""

    zygote: bool = True
    """Fork workers from a process that has pre-imported the frameworks (fast cold starts)."""

    zygote_idle_s: PositiveFloat = 300.0
    """How long the zygote of a runtime no endpoint or job uses is kept before it is stopped (the
    next cold start of that runtime starts it again); the scikit-learn zygote is always kept."""

    templates: bool = True
    """Keep a model template per model: a process that has loaded the model once and forks its
    workers, so that a cold start does not load it again (local backend; docs: README, "Cold
    starts")."""

    template_idle_s: PositiveFloat = 600.0
    """How long a model's template is kept once none of its workers runs (its memory is counted in
    the memory budget meanwhile)."""

    template_memory_mb: PositiveInt = 1024
    """Most memory the templates may hold together; beyond it the least recently used idle ones
    are stopped."""

    memory_cgroups: bool = True
    """Enforce MemorySizeInMB with a memory cgroup per worker where the host allows (else RSS watchdog)."""

    backend: Literal["local", "ray"] = "local"
    """Where execution environments run: ``local`` (forked on this machine) or ``ray`` (on the
    nodes of a Ray cluster, ``pip install 'coldbrew[ray]'``; docs/ray.md)."""

    ray_address: str | None = None
    """The Ray cluster of ``--backend ray``: ``auto`` joins the one this machine's ``ray start``
    joined, ``HOST:PORT`` a head's GCS, ``ray://HOST:PORT`` a Ray client server; unset uses
    RAY_ADDRESS, else starts a single-node Ray on this machine."""

    ray_node_s3: str | None = None
    """Where Ray nodes fetch ``s3://`` model data from themselves (docs/ray.md): the embedded S3's
    URL as the nodes reach this gateway (``http://HEAD:8080``), or ``external`` for the S3 boto3 on
    this machine is configured for. Unset: the gateway ships each node the model."""

    pip_args: str = ""
    """Extra pip options for installing models' requirements.txt (``--index-url ...``,
    ``--find-links DIR --no-index``), split as a shell would; pip's own configuration (pip.conf,
    ``PIP_*`` variables) applies too."""

    log_level: str = "info"

    auth: Literal["auto", "on", "off"] = "auto"
    """SigV4 authentication and per-key policies (``coldbrew keys``): ``auto`` is on whenever the
    server listens on a non-loopback address, off on loopback (where any credentials work)."""

    insecure: bool = False
    """Allow listening on a non-loopback address with authentication off (a loud warning)."""

    allowed_hosts: str = ""
    """Host header names clients may use besides loopback names and IP addresses, comma-separated
    (subdomains included, for virtual-hosted S3); ``*`` turns the DNS-rebinding check off."""

    tls_cert: Path | None = None
    """PEM certificate (chain) to serve HTTPS with; needs ``tls_key``."""

    tls_key: Path | None = None
    """PEM private key of ``tls_cert``."""

    demo: bool = False
    """Deploy the demo endpoint ``coldbrew-demo`` at start-up."""

    s3: Literal["embedded", "external"] = "embedded"
    """S3 for ``s3://`` model data and clients: ``embedded`` serves a durable store under the data
    dir on the gateway's port (for requests signed for ``s3``) and reads model data from it;
    ``external`` uses ``AWS_ENDPOINT_URL_S3`` or AWS's S3, as boto3 is configured."""

    meter_retention_days: PositiveFloat = 7.0
    """Days raw meter records (one per invocation) are kept; per-minute aggregates are kept for good."""

    meter_flush_interval_s: PositiveFloat = 0.5
    """How often meter records are written to the store: a crash loses at most this much."""

    meter_sample_interval_s: PositiveFloat = 0.5
    """How often live environments are sampled for MemoryUtilization and concurrency."""

    async_metrics_interval_s: PositiveFloat = 5.0
    """How often asynchronous endpoints' queues are sampled for ApproximateBacklogSize and the
    other backlog metrics CloudWatch serves (per-minute aggregates of the samples)."""

    logs: bool = True
    """Collect each environment's stdout and stderr into CloudWatch Logs (the Logs API, ``coldbrew
    logs``); false leaves them on the server's own output only."""

    logs_retention_days: PositiveFloat | None = None
    """Days log events are kept (default: as long as raw meter records, COLDBREW_METER_RETENTION_DAYS)."""

    logs_max_bytes_per_endpoint: PositiveInt = 64 * 1024**2
    """Most an endpoint's log group may hold (as CloudWatch counts: message bytes + 26 per event);
    past it, its oldest events are dropped and counted."""

    logs_echo: bool = True
    """Also copy workers' output to the server's own output, as before it was collected (at most
    50 lines a second per environment; the rest is counted there and kept in the Logs)."""

    max_models: PositiveInt = 2000
    """Most models the control plane holds (CreateModel past it: ResourceLimitExceeded)."""

    max_endpoint_configs: PositiveInt = 2000
    """Most endpoint configurations the control plane holds."""

    max_endpoints: PositiveInt = 500
    """Most endpoints, in any status."""

    max_transform_jobs: PositiveInt = 100
    """Most transform jobs in progress at once (finished ones are kept as history and do not count)."""

    max_instances_per_variant: PositiveInt | None = None
    """Most instances one provisioned variant may ask for (default: as many of its instance type
    as this machine's memory holds)."""

    model_roots: str | None = None
    """Directories ``file://`` and plain-path ModelDataUrls (and local source directories) may be
    read from, separated by ``:``; symlinks and ``..`` do not lead out of them. Unset: none when
    authentication is on, anything the server's user can read when it is off on loopback."""

    worker_env_passthrough: str = ""
    """Names of variables of the server's environment every worker (and pip) gets, comma-separated:
    besides what the interpreter needs, workers get only their model's Environment, never the
    server's credentials."""

    worker_ids: str = "auto"
    """When the server runs as root, the numeric user and group ids its workers run as (one user
    per endpoint, one group per cache entry): ``auto`` (1900000000-1901999999), ``FIRST-LAST``, or
    ``off`` (workers run as root: only for models you trust)."""

    @field_validator("pip_args")
    @classmethod
    def _shell_words(cls, value: str) -> str:
        try:
            shlex.split(value)
        except ValueError as exc:  # an unclosed quote
            raise ValueError(f"cannot be split into arguments: {exc}") from None
        return value

    @property
    def auth_enabled(self) -> bool:
        if self.auth == "auto":
            return not (is_loopback(self.host) or self.insecure)
        return self.auth == "on"

    @property
    def keys_path(self) -> Path:
        return self.data_dir / "keys.json"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "coldbrew.db"

    @property
    def s3_dir(self) -> Path:
        return self.data_dir / "s3"

    @property
    def local_url(self) -> str:
        """The gateway's URL as this machine reaches it (a wildcard address means loopback)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        scheme = "https" if self.tls_cert is not None else "http"
        return f"{scheme}://[{host}]:{self.port}" if ":" in host else f"{scheme}://{host}:{self.port}"

    @property
    def artifact_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def packages_dir(self) -> Path:
        return self.data_dir / "packages"

    @property
    def async_db_path(self) -> Path:
        return self.data_dir / "async.db"

    @property
    def logs_db_path(self) -> Path:
        return self.data_dir / "logs.db"

    @property
    def log_retention_days(self) -> float:
        return self.logs_retention_days or self.meter_retention_days

    @property
    def pip_arguments(self) -> list[str]:
        return shlex.split(self.pip_args)
