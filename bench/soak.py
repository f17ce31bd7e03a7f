"""Soak benchmark (issue 14, point 7): mixed traffic for N minutes while the gateway, workers and
zygotes are SIGKILLed at random; what was acknowledged must survive, nothing may leak.

A real ``coldbrew serve`` on a loopback port (``tests.support.ColdbrewServer``), real boto3 clients
with retries off, a scikit-learn random forest with a ``code/inference.py`` that sleeps when asked:

- **Stable endpoints**, created first and kept to the end: ``soak-a`` (serverless, MaxConcurrency
  4, a 2 s keep-alive so that cold starts keep happening), ``soak-b`` (serverless, MaxConcurrency 2,
  ProvisionedConcurrency 1) and ``soak-i`` (one ml.t2.medium instance), each invoked by as many
  client threads as its MaxConcurrency ("at MaxConcurrency": none may be throttled); and ``soak-p``
  (serverless, MaxConcurrency 2), invoked by ``--past`` threads, past its MaxConcurrency: their
  ThrottlingExceptions are expected.
- **Churn**: a thread that creates a model, two endpoint configs and an endpoint, invokes it,
  updates it (UpdateEndpoint, then UpdateEndpointWeightsAndCapacities), deletes it, and again; and
  updates of the stable endpoints under their load (``soak-a`` between two configs, ``soak-b``'s
  ProvisionedConcurrency between 1 and 2).
- **Kills**, every ``--kill-every`` seconds on average (exponential): SIGKILL of the gateway (it is
  started again on the same data dir at once), of a random worker, or of a zygote. A kill window
  runs from the kill until the server answers again and every stable endpoint is InService, plus
  ``--settle`` seconds.

At the end the load stops, every resource whose Create returned 200 and whose Delete did not is
looked up ("acknowledged resources lost" must be 0), everything is deleted, the server must hold
no worker and its memory budget must be back to 0 (``/metrics``), then it is stopped and no process
it or any earlier (killed) gateway started may be left ("leaked processes" must be 0).

    python bench/soak.py [--minutes 10] [--kill-every 20] [--seed 1] [--json]
    python bench/soak.py --minutes 3                                     # a quick run
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import random
import signal
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import joblib  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402
from botocore.exceptions import BotoCoreError, ClientError  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from tests.support import REPO, ColdbrewServer, sklearn_archive, tar_gz, worker_pids  # noqa: E402

INFERENCE_PY = textwrap.dedent("""
    import json
    import os
    import time

    import joblib
    import numpy as np

    def model_fn(model_dir):
        time.sleep(float(os.environ.get("LOAD_SLEEP_S", "0")))
        return joblib.load(os.path.join(model_dir, "model.joblib"))

    def input_fn(body, content_type):
        return json.loads(body)

    def predict_fn(data, model):
        time.sleep(data.get("sleep", 0))
        return {"predictions": model.predict(np.array(data["rows"])).tolist()}

    def output_fn(prediction, accept):
        return json.dumps(prediction), "application/json"
""")
ROLE = "arn:aws:iam::123456789012:role/soak"
STABLE = {"soak-a": 4, "soak-b": 2, "soak-i": 2}
"""Stable endpoints and the client threads that keep each at its MaxConcurrency."""
PAST = "soak-p"
"""The stable endpoint that ``--past`` client threads invoke, past its MaxConcurrency of 2."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- what the run records ------------------------------------------------------------------------


@dataclass
class Invocation:
    started: float
    ended: float
    endpoint: str
    outcome: str
    """``ok``, ``throttled``, ``connection`` (the gateway was down), or the error code."""
    past: bool
    """Sent by a client past the endpoint's MaxConcurrency."""


@dataclass
class Window:
    kind: str
    start: float
    end: float = float("inf")


@dataclass
class Record:
    invocations: list[Invocation] = field(default_factory=list)
    windows: list[Window] = field(default_factory=list)
    acknowledged: dict[tuple[str, str], str] = field(default_factory=dict)
    """(kind, name) -> "live" | "deleted" | "uncertain" (a Delete whose answer was lost)."""
    operations: Counter[str] = field(default_factory=Counter)
    churn_errors: list[str] = field(default_factory=list)
    examples: dict[str, str] = field(default_factory=dict)
    """An error message of each failed outcome, first seen."""
    seen_processes: set[tuple[int, float]] = field(default_factory=set)
    """(pid, create_time) of every process any of the run's gateways started."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, invocation: Invocation) -> None:
        with self.lock:
            self.invocations.append(invocation)

    def ack(self, kind: str, name: str, state: str = "live") -> None:
        with self.lock:
            self.acknowledged[(kind, name)] = state
            self.operations[f"{kind} {'created' if state == 'live' else state}"] += 1

    def in_window(self, started: float, ended: float) -> str | None:
        for window in self.windows:
            if started <= window.end and ended >= window.start:
                return window.kind
        return None


# --- the server and its processes ------------------------------------------------------------------


class Soak:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.rng = random.Random(args.seed)
        self.record = Record()
        self.server = ColdbrewServer(tmp / "data", repo=args.repo)
        self.stop = threading.Event()
        self.gateway_up = threading.Event()
        self.restart_lock = threading.Lock()
        self.archive = self._archive()

    def _archive(self) -> Path:
        _, model = sklearn_archive(self.tmp / "plain.tar.gz", n_estimators=20)
        buffer = io.BytesIO()
        joblib.dump(model, buffer)
        path = self.tmp / "model.tar.gz"
        path.write_bytes(
            tar_gz({"model.joblib": buffer.getvalue(), "code/inference.py": INFERENCE_PY.encode()})
        )
        return path

    def start_server(self) -> None:
        self.server.start(timeout=120)
        self.gateway_up.set()

    def sample_processes(self) -> None:
        """Every second: remember every process the current gateway runs, to find leaks later."""
        while not self.stop.is_set():
            process = self.server.process
            if process is not None and process.poll() is None:
                try:
                    for child in psutil.Process(process.pid).children(recursive=True):
                        with self.record.lock:
                            self.record.seen_processes.add((child.pid, child.create_time()))
                except psutil.Error:
                    pass
            time.sleep(1.0)

    def zygotes(self) -> list[int]:
        assert self.server.process is not None
        found = []
        try:
            for child in psutil.Process(self.server.process.pid).children():
                if "coldbrew.worker.zygote" in " ".join(child.cmdline()):
                    found.append(child.pid)
        except psutil.Error:
            pass
        return found

    def metric(self, name: str) -> float:
        text = httpx.get(f"{self.server.url}/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name:
                    return float(sample.value)
        raise RuntimeError(f"no {name} in /metrics")

    # --- control calls that survive a gateway restart ----------------------------------------------

    def call(self, client: Any, operation: str, patience_s: float = 120.0, **params: Any) -> Any:
        """``operation`` until it is answered (the gateway may be down for a while); a ClientError
        is the answer. Returns None if no answer came in ``patience_s``."""
        deadline = time.monotonic() + patience_s
        while True:
            try:
                return getattr(client, operation)(**params)
            except ClientError:
                raise
            except BotoCoreError:
                if time.monotonic() > deadline or self.stop.is_set() and operation.startswith("describe"):
                    return None
                time.sleep(0.2)

    def create(self, sm: Any, kind: str, name: str, operation: str, **params: Any) -> bool:
        """A Create that counts as acknowledged only once it returned 200."""
        try:
            sm_answer = getattr(sm, operation)(**params)
        except (ClientError, BotoCoreError) as exc:
            self.record.churn_errors.append(f"{operation} {name}: {type(exc).__name__}: {exc}"[:300])
            return False
        del sm_answer
        self.record.ack(kind, name)
        return True

    def delete(self, sm: Any, kind: str, name: str, operation: str, **params: Any) -> None:
        try:
            getattr(sm, operation)(**params)
        except ClientError as exc:
            self.record.churn_errors.append(f"{operation} {name}: {exc}"[:300])
            return
        except BotoCoreError:
            self.record.ack(kind, name, "uncertain")  # it may have been done before the kill
            return
        self.record.ack(kind, name, "deleted")

    def wait_status(
        self, sm: Any, name: str, statuses: tuple[str, ...], timeout: float = 180.0
    ) -> str | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                status = str(sm.describe_endpoint(EndpointName=name)["EndpointStatus"])
            except ClientError as exc:
                return f"error: {exc}"
            except BotoCoreError:
                time.sleep(0.3)
                continue
            if status in statuses:
                return status
            time.sleep(0.2)
        return None

    # --- setup -------------------------------------------------------------------------------------

    def model(self, sm: Any, name: str, **environment: str) -> bool:
        return self.create(
            sm,
            "model",
            name,
            "create_model",
            ModelName=name,
            ExecutionRoleArn=ROLE,
            PrimaryContainer={
                "Image": "coldbrew/sklearn",
                "ModelDataUrl": self.archive.as_uri(),
                "Environment": {"LOAD_SLEEP_S": "0.2", **environment},
            },
        )

    def config(self, sm: Any, name: str, variant: dict[str, Any]) -> bool:
        return self.create(
            sm,
            "config",
            name,
            "create_endpoint_config",
            EndpointConfigName=name,
            ProductionVariants=[variant],
        )

    def setup(self) -> None:
        sm = self.server.client()
        self.model(sm, "soak-a", COLDBREW_IDLE_TIMEOUT_S="2")
        self.model(sm, "soak-a2", COLDBREW_IDLE_TIMEOUT_S="2", GENERATION="2")
        self.model(sm, "soak-b")
        self.model(sm, "soak-i")
        self.model(sm, PAST)
        self.config(sm, PAST, serverless("P", PAST, 2))
        self.config(sm, "soak-a-1", serverless("A", "soak-a", 4))
        self.config(sm, "soak-a-2", serverless("A2", "soak-a2", 4))
        self.config(sm, "soak-b", serverless("B", "soak-b", 2, provisioned=1))
        self.config(
            sm,
            "soak-i",
            {
                "VariantName": "I",
                "ModelName": "soak-i",
                "InstanceType": "ml.t2.medium",
                "InitialInstanceCount": 1,
            },
        )
        stable = (("soak-a", "soak-a-1"), ("soak-b", "soak-b"), ("soak-i", "soak-i"), (PAST, PAST))
        for endpoint, config in stable:
            self.create(
                sm, "endpoint", endpoint, "create_endpoint", EndpointName=endpoint, EndpointConfigName=config
            )
        for endpoint in [*STABLE, PAST]:
            if self.wait_status(sm, endpoint, ("InService",)) != "InService":
                raise RuntimeError(f"{endpoint} did not come InService:\n{self.server.log()[-4000:]}")

    # --- load --------------------------------------------------------------------------------------

    def client_loop(self, endpoint: str, past: bool, seed: int) -> None:
        runtime = self.server.client("sagemaker-runtime", read_timeout=90, connect_timeout=2)
        rng = random.Random(seed)
        rows = np.random.default_rng(seed).normal(0, 0.05, (1, 10)).tolist()
        while not self.stop.is_set():
            if not self.gateway_up.wait(1.0):
                continue
            if rng.random() < 0.05:
                time.sleep(rng.uniform(2.0, 4.0))  # idle past soak-a's keep-alive: cold starts follow
            payload = {"rows": rows, "sleep": rng.choice([0, 0, 0, 0.05, 0.2])}
            started = time.monotonic()
            try:
                reply = runtime.invoke_endpoint(
                    EndpointName=endpoint, Body=json.dumps(payload), ContentType="application/json"
                )
                reply["Body"].read()
                outcome = "ok"
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "?")
                outcome = "throttled" if code == "ThrottlingException" else code
                self.record.examples.setdefault(code, str(exc)[:300])
            except BotoCoreError:
                outcome = "connection"
                time.sleep(0.1)
            self.record.add(Invocation(started, time.monotonic(), endpoint, outcome, past))

    def churn_loop(self) -> None:
        sm = self.server.client()
        runtime = self.server.client("sagemaker-runtime", read_timeout=90, connect_timeout=2)
        body = json.dumps({"rows": [[0.01] * 10]})
        for n in itertools.count():
            if self.stop.is_set():
                return
            if not self.gateway_up.wait(1.0):
                continue
            name = f"soak-e{n}"
            instances = n % 3 == 2
            if not self.model(sm, name):
                continue
            if instances:
                first = {
                    "VariantName": "V",
                    "ModelName": name,
                    "InstanceType": "ml.t2.medium",
                    "InitialInstanceCount": 1,
                }
            else:
                first = serverless("V", name, 2)
            second = serverless("W", name, 3, provisioned=1)
            if not (self.config(sm, f"{name}-1", first) and self.config(sm, f"{name}-2", second)):
                continue
            if not self.create(
                sm, "endpoint", name, "create_endpoint", EndpointName=name, EndpointConfigName=f"{name}-1"
            ):
                continue
            status = self.wait_status(sm, name, ("InService", "Failed"))
            self.record.operations[f"churn endpoint {status}"] += 1
            for _ in range(5):
                try:
                    runtime.invoke_endpoint(EndpointName=name, Body=body, ContentType="application/json")[
                        "Body"
                    ].read()
                    self.record.operations["churn invocation ok"] += 1
                except (ClientError, BotoCoreError) as exc:
                    self.record.operations[f"churn invocation {type(exc).__name__}"] += 1
            if status == "InService":
                self.update(sm, name, EndpointConfigName=f"{name}-2")
                self.update(
                    sm,
                    name,
                    weights=[{"VariantName": "W", "ServerlessUpdateConfig": {"ProvisionedConcurrency": 2}}],
                )
            self.delete(sm, "endpoint", name, "delete_endpoint", EndpointName=name)
            self.wait_gone(sm, name)
            for config in (f"{name}-1", f"{name}-2"):
                self.delete(sm, "config", config, "delete_endpoint_config", EndpointConfigName=config)
            self.delete(sm, "model", name, "delete_model", ModelName=name)

    def wait_gone(self, sm: Any, name: str, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                sm.describe_endpoint(EndpointName=name)
            except ClientError:
                return
            except BotoCoreError:
                pass
            time.sleep(0.3)

    def update(self, sm: Any, name: str, weights: list[dict[str, Any]] | None = None, **params: Any) -> None:
        operation = "update_endpoint_weights_and_capacities" if weights else "update_endpoint"
        if weights:
            params["DesiredWeightsAndCapacities"] = weights
        if self.wait_status(sm, name, ("InService",)) != "InService":
            return
        try:
            getattr(sm, operation)(EndpointName=name, **params)
            self.record.operations[operation] += 1
        except ClientError as exc:
            self.record.churn_errors.append(f"{operation} {name}: {exc}"[:300])
            return
        except BotoCoreError:
            return
        status = self.wait_status(sm, name, ("InService", "Failed"))
        if status != "InService":
            self.record.churn_errors.append(f"{operation} {name}: ended {status}")
            return
        reason = self.call(sm, "describe_endpoint", EndpointName=name) or {}
        if reason.get("FailureReason"):
            self.record.churn_errors.append(f"{operation} {name}: {reason['FailureReason']}"[:300])

    def stable_updates_loop(self) -> None:
        sm = self.server.client()
        a_config, b_provisioned = "soak-a-1", 1
        while not self.stop.wait(self.rng.uniform(10.0, 25.0)):
            if not self.gateway_up.is_set():
                continue
            a_config = "soak-a-2" if a_config == "soak-a-1" else "soak-a-1"
            self.update(sm, "soak-a", EndpointConfigName=a_config)
            b_provisioned = 3 - b_provisioned
            self.update(
                sm,
                "soak-b",
                weights=[
                    {"VariantName": "B", "ServerlessUpdateConfig": {"ProvisionedConcurrency": b_provisioned}}
                ],
            )

    # --- kills -------------------------------------------------------------------------------------

    def killer_loop(self) -> None:
        sm = self.server.client()
        kinds = ["gateway", "worker", "worker", "zygote"]
        while not self.stop.wait(self.rng.expovariate(1 / self.args.kill_every)):
            kind = self.rng.choice(kinds)
            window = Window(kind, time.monotonic())
            if kind == "gateway":
                with self.restart_lock:
                    self.gateway_up.clear()
                    window.start = time.monotonic()
                    self.server.kill()
                    self.record.operations["kill gateway"] += 1
                    self.start_server()
            else:
                pids = list(worker_pids(self.server)) if kind == "worker" else self.zygotes()
                if not pids:
                    continue
                try:
                    psutil.Process(self.rng.choice(pids)).kill()
                except psutil.Error:
                    continue
                self.record.operations[f"kill {kind}"] += 1
            with self.record.lock:
                self.record.windows.append(window)
            for endpoint in [*STABLE, PAST]:
                self.wait_status(sm, endpoint, ("InService",))
            time.sleep(self.args.settle)
            window.end = time.monotonic()

    # --- the run -----------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        self.start_server()
        sampler = threading.Thread(target=self.sample_processes, daemon=True)
        sampler.start()
        log(f"server on {self.server.url}, log {self.server.log_path}")
        self.setup()
        threads = []
        seeds = itertools.count(self.args.seed * 1000)
        for endpoint, clients in STABLE.items():
            threads += [
                threading.Thread(target=self.client_loop, args=(endpoint, False, next(seeds)))
                for _ in range(clients)
            ]
        threads += [
            threading.Thread(target=self.client_loop, args=(PAST, True, next(seeds)))
            for _ in range(self.args.past)
        ]
        threads += [
            threading.Thread(target=self.churn_loop),
            threading.Thread(target=self.stable_updates_loop),
        ]
        killer = threading.Thread(target=self.killer_loop)
        started = time.monotonic()
        for thread in [*threads, killer]:
            thread.start()
        end = started + self.args.minutes * 60
        while time.monotonic() < end:
            time.sleep(min(30.0, max(0.0, end - time.monotonic())))
            log(f"{len(self.record.invocations):,} invocations, kills {dict(self.kills())}")
        self.stop.set()
        killer.join()
        for thread in threads:
            thread.join()
        duration = time.monotonic() - started
        log("load stopped; checking what was acknowledged, then deleting everything")
        lost, failed_endpoints = self.check_acknowledged()
        leftovers = self.delete_everything()
        self.server.stop()
        leaked = self.leaked_processes()
        return self.summary(duration, lost, failed_endpoints, leftovers, leaked)

    def kills(self) -> Counter[str]:
        return Counter(
            {k.removeprefix("kill "): v for k, v in self.record.operations.items() if k.startswith("kill ")}
        )

    def check_acknowledged(self) -> tuple[list[str], list[str]]:
        sm = self.server.client()
        lost, failed = [], []
        describe: dict[str, Callable[[str], Any]] = {
            "model": lambda n: sm.describe_model(ModelName=n),
            "config": lambda n: sm.describe_endpoint_config(EndpointConfigName=n),
            "endpoint": lambda n: sm.describe_endpoint(EndpointName=n),
        }
        for (kind, name), state in sorted(self.record.acknowledged.items()):
            if state != "live":
                continue
            try:
                described = describe[kind](name)
            except ClientError:
                lost.append(f"{kind} {name}")
                continue
            if kind == "endpoint" and described["EndpointStatus"] == "Failed":
                failed.append(f"{name}: {described.get('FailureReason')}")
        return lost, failed

    def delete_everything(self) -> dict[str, Any]:
        sm = self.server.client()
        for endpoint in sm.list_endpoints(MaxResults=100)["Endpoints"]:
            sm.delete_endpoint(EndpointName=endpoint["EndpointName"])
        for endpoint in sm.list_endpoints(MaxResults=100)["Endpoints"]:
            self.wait_gone(sm, endpoint["EndpointName"])
        deadline = time.monotonic() + 60
        workers, budget = worker_pids(self.server), self.metric("coldbrew_memory_budget_used_megabytes")
        while (workers or budget) and time.monotonic() < deadline:
            time.sleep(0.5)
            workers, budget = worker_pids(self.server), self.metric("coldbrew_memory_budget_used_megabytes")
        return {"workers": sorted(workers), "budget_used_mb": budget}

    def leaked_processes(self) -> list[str]:
        deadline = time.monotonic() + 30
        while True:
            alive = []
            for pid, created in sorted(self.record.seen_processes):
                try:
                    process = psutil.Process(pid)
                    if process.create_time() == created and process.status() != psutil.STATUS_ZOMBIE:
                        alive.append(f"{pid} {' '.join(process.cmdline())[:120]}")
                except psutil.Error:
                    pass
            if not alive or time.monotonic() > deadline:
                return alive
            time.sleep(0.5)

    def summary(
        self,
        duration: float,
        lost: list[str],
        failed: list[str],
        leftovers: dict[str, Any],
        leaked: list[str],
    ) -> dict[str, Any]:
        outcomes: dict[str, Counter[str]] = {}
        latencies = []
        for inv in self.record.invocations:
            where = self.record.in_window(inv.started, inv.ended) or "outside kill windows"
            who = "past MaxConcurrency" if inv.past else "at MaxConcurrency"
            outcomes.setdefault(f"{where}, {who}", Counter())[inv.outcome] += 1
            if where == "outside kill windows" and inv.outcome == "ok":
                latencies.append((inv.ended - inv.started) * 1000)
        latencies.sort()
        p = (lambda q: round(float(np.percentile(latencies, q)), 1)) if latencies else (lambda q: None)
        return {
            "minutes": round(duration / 60, 2),
            "invocations": len(self.record.invocations),
            "outcomes": {k: dict(v) for k, v in sorted(outcomes.items())},
            "latency_outside_kill_windows_ms": {
                "p50": p(50),
                "p99": p(99),
                "max": p(100),
                "n": len(latencies),
            },
            "kills": dict(self.kills()),
            "kill_window_s": round(sum(w.end - w.start for w in self.record.windows), 1),
            "operations": dict(sorted(self.record.operations.items())),
            "acknowledged": len(self.record.acknowledged),
            "acknowledged_lost": lost,
            "endpoints_failed": failed,
            "workers_after_delete": leftovers["workers"],
            "budget_used_mb_after_delete": leftovers["budget_used_mb"],
            "leaked_processes": leaked,
            "error_examples": self.record.examples,
            "churn_errors": sorted(Counter(self.record.churn_errors).items(), key=lambda kv: -kv[1])[:15],
        }


def serverless(variant: str, model: str, max_concurrency: int, provisioned: int = 0) -> dict[str, Any]:
    config: dict[str, Any] = {"MemorySizeInMB": 1024, "MaxConcurrency": max_concurrency}
    if provisioned:
        config["ProvisionedConcurrency"] = provisioned
    return {"VariantName": variant, "ModelName": model, "ServerlessConfig": config}


def render(report: dict[str, Any]) -> None:
    from rich.table import Table

    from coldbrew.terminal import console

    out = console()
    out.print(
        f"[bold]soak[/]: {report['minutes']:g} min, {report['invocations']:,} invocations, kills "
        f"{report['kills']} ({report['kill_window_s']:g} s inside kill windows)"
    )
    codes = sorted({code for counts in report["outcomes"].values() for code in counts})
    table = Table("invocations", *codes, title="Invocations by outcome")
    for where, counts in report["outcomes"].items():
        table.add_row(where, *(f"{counts.get(code, 0):,}" for code in codes))
    out.print(table)
    lat = report["latency_outside_kill_windows_ms"]
    checks = Table("check", "value", title="What must hold")
    checks.add_row(
        "acknowledged resources lost (must be 0)",
        f"{len(report['acknowledged_lost'])} of {report['acknowledged']}",
    )
    checks.add_row(
        "workers left after deleting everything (must be 0)", str(len(report["workers_after_delete"]))
    )
    checks.add_row(
        "memory budget used after deleting everything (must be 0)",
        f"{report['budget_used_mb_after_delete']:g} MB",
    )
    checks.add_row(
        "processes left after the final shutdown (must be 0)", str(len(report["leaked_processes"]))
    )
    checks.add_row("endpoints Failed", str(len(report["endpoints_failed"])))
    checks.add_row(
        "latency outside kill windows, ok invocations",
        f"p50 {lat['p50']} ms, p99 {lat['p99']} ms, max {lat['max']} ms (n={lat['n']:,})",
    )
    out.print(checks)
    ops = Table("operation", "count", title="Control operations and kills")
    for name, count in report["operations"].items():
        ops.add_row(name, f"{count:,}")
    out.print(ops)
    for title in (
        "acknowledged_lost",
        "endpoints_failed",
        "leaked_processes",
        "error_examples",
        "churn_errors",
    ):
        if report[title]:
            out.print(f"[bold]{title}[/]:", report[title])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--kill-every", type=float, default=20.0, help="mean seconds between kills")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds a kill window lasts past recovery")
    parser.add_argument("--past", type=int, default=4, help="client threads on soak-p (MaxConcurrency 2)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout whose coldbrew serves")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="coldbrew-soak-"))
    soak = Soak(args, tmp)
    try:
        report = soak.run()
    finally:
        soak.stop.set()
        if soak.server.process is not None and soak.server.process.poll() is None:
            soak.server.stop(signal.SIGTERM)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        render(report)


if __name__ == "__main__":
    main()
