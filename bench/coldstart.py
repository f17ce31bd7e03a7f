"""Cold-start benchmark (issue 5): zygote forks against fresh interpreters, memory, and density.

Runs real ``coldbrew serve`` processes on loopback and prints one JSON document. Every latency
figure is a median over ``--trials`` trials with p99 beside it; the fresh-interpreter baseline
(``COLDBREW_ZYGOTE=false``) is measured in the same run.

    python bench/coldstart.py [--trials 20] [--endpoints 1000] [--warm 100] [--skip-embedding]

``--real-env`` also measures the zygote cold starts with a server running in a user's kind of
environment (issue 18: the SageMaker SDK, pandas and pyarrow beside torch and transformers):
``.sdk-envs/real``, built by ``python -m tests.sdk.environments``, or the interpreter given. It
runs beside a server in this environment, the two taking trials in turn (a shared machine's load
then falls on both alike): ``cold_start_zygote_side_by_side`` and ``real_env_over_clean_p50``.
``--skip-fresh`` leaves out the fresh-interpreter baseline, ``--skip-density`` the density run.
``cold_start_zygote_no_templates`` is the same zygote run with model templates off
(``COLDBREW_TEMPLATES=false``: every cold start loads its model), measured in the same run, and
``templates_speedup_p50`` the ratio of its p50 to the templated one; ``--skip-no-templates`` leaves
it out.

Each model's ``warm_p50_ms`` is the same request to a warm environment, back to back on the same
client, and ``over_warm_p50_ms`` what a cold start adds to it (the model's own predict is in both).
Each model's ``breakdown_p50_ms`` is where a cold start's time goes (issue 18, point 3): the median
of each stage over the trials, from the line the gateway logs for every cold start (admit, fork,
prepare, model_load, listen, report, first_invoke: one after another, summing to total; limit, the
move into the memory cgroup, runs beside them). Requests are sent with ``BlockingClient`` (one
keep-alive connection: httpx's own time per request is not the server's).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.http_client import BlockingClient  # noqa: E402
from tests.support import (  # noqa: E402
    ColdbrewServer,
    deploy_serverless,
    sklearn_archive,
    tar_gz,
    wait_for_status,
    worker_pids,
)

FAST_IDLE = {"COLDBREW_IDLE_TIMEOUT_S": "0.2"}
EMBEDDING_ENV = {**FAST_IDLE, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def stats_ms(samples_s: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples_s]
    return {
        "p50_ms": round(statistics.median(ms), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "n": len(ms),
    }


def onnx_archive(path: Path, model: Any) -> Path:
    from skl2onnx import to_onnx

    onnx_model = to_onnx(model, np.zeros((1, 10), dtype=np.float32), target_opset=17)
    path.write_bytes(tar_gz({"model.onnx": onnx_model.SerializeToString()}))
    return path


def embedding_archive(path: Path) -> Path:
    code = (REPO / "examples" / "embeddings_model" / "code" / "inference.py").read_bytes()
    path.write_bytes(tar_gz({"code/inference.py": code}))
    return path


def cold_starts(
    server: ColdbrewServer, name: str, body: bytes, content_type: str, trials: int
) -> list[float]:
    """First invoke after scale-to-zero, end to end, ``trials`` times."""
    samples = []
    client = BlockingClient(server.url, timeout_s=120)
    try:
        for _ in range(trials):
            deadline = time.monotonic() + 60
            while worker_pids(server) and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.05)
            samples.append(_timed_invoke(client, name, body, content_type))
    finally:
        client.close()
    return samples


def _timed_invoke(client: BlockingClient, name: str, body: bytes, content_type: str) -> float:
    """Seconds one invocation took, end to end; anything but a 200 ends the benchmark."""
    started = time.perf_counter()
    response = client.post(f"/endpoints/{name}/invocations", body, content_type)
    elapsed = time.perf_counter() - started
    if response.status != 200:
        raise RuntimeError(f"{name}: {response.status} {response.text[:200]}")
    return elapsed


def warm_invokes(
    server: ColdbrewServer, name: str, body: bytes, content_type: str, n: int = 100
) -> list[float]:
    """Invokes of a warm environment, back to back on the client cold_starts uses: what the same
    request costs without the start (issue 18: a cold start's price is its excess over this)."""
    client = BlockingClient(server.url, timeout_s=120)
    samples = []
    try:
        for index in range(n + 10):
            elapsed = _timed_invoke(client, name, body, content_type)
            if index >= 10:  # the first ones start the environment and warm it
                samples.append(elapsed)
    finally:
        client.close()
    return samples


def breakdowns(server: ColdbrewServer, name: str, last: int) -> dict[str, float]:
    """Median milliseconds per stage of the endpoint's last ``last`` cold starts, from the server's
    log (the gateway writes one line per cold start: coldbrew/backends/start_trace.py)."""
    marker = f"cold start of {name}/"
    lines = [line for line in server.log().splitlines() if marker in line][-last:]
    stages: dict[str, list[float]] = {}
    for line in lines:
        for pair in line.split(": ", 2)[-1].split():
            stage, _, ms = pair.partition("=")
            stages.setdefault(stage, []).append(float(ms))
    return {stage: round(statistics.median(values), 2) for stage, values in stages.items()}


def environment_memory(server: ColdbrewServer, name: str, body: bytes, content_type: str) -> dict[str, float]:
    """RSS and unique memory (USS) of one environment when just started and after 200 invocations."""
    url = f"{server.url}/endpoints/{name}/invocations"
    with httpx.Client(timeout=120) as client:
        client.post(url, content=body, headers={"Content-Type": content_type}).raise_for_status()
        [pid] = worker_pids(server)
        idle = psutil.Process(pid).memory_full_info()
        for _ in range(200):
            client.post(url, content=body, headers={"Content-Type": content_type}).raise_for_status()
        warm = psutil.Process(pid).memory_full_info()
    return {
        "idle_rss_mb": round(idle.rss / 2**20, 1),
        "idle_uss_mb": round(idle.uss / 2**20, 1),
        "warm_rss_mb": round(warm.rss / 2**20, 1),
        "warm_uss_mb": round(warm.uss / 2**20, 1),
    }


def models(tmp: Path, skip_embedding: bool) -> dict[str, tuple[Path, bytes, str, dict[str, str], int]]:
    archive, model = sklearn_archive(tmp / "rf.tar.gz", n_estimators=50)
    row = ",".join(repr(float(v)) for v in np.linspace(-0.05, 0.05, 10)).encode()
    result = {
        "random_forest": (archive, row, "text/csv", FAST_IDLE, 1024),
        "random_forest_onnx": (onnx_archive(tmp / "onnx.tar.gz", model), row, "text/csv", FAST_IDLE, 1024),
    }
    if not skip_embedding:
        result["embedding"] = (
            embedding_archive(tmp / "emb.tar.gz"),
            json.dumps({"inputs": ["a cold start in milliseconds"]}).encode(),
            "application/json",
            EMBEDDING_ENV,
            3072,
        )
    return result


def measure(
    tmp: Path,
    zygote: bool,
    trials: int,
    skip_embedding: bool,
    python: str = sys.executable,
    templates: bool = True,
) -> dict[str, Any]:
    env = {"COLDBREW_ZYGOTE": "true" if zygote else "false", "COLDBREW_TEMPLATES": str(templates).lower()}
    label = f"{'zygote' if zygote else 'fresh'}-{len(list(tmp.glob('data-*')))}"
    server = ColdbrewServer(tmp / f"data-{label}", env=env, python=python).start(timeout=120)
    results: dict[str, Any] = {}
    try:
        sm = server.client()
        for name, (archive, body, content_type, model_env, memory) in models(tmp, skip_embedding).items():
            deploy_serverless(
                sm, name.replace("_", "-"), archive.as_uri(), memory=memory, environment=model_env
            )
            wait_for_status(sm, name.replace("_", "-"), "InService", timeout=300)
            # One untimed round lets the runtime's zygote start (it starts on first use).
            cold_starts(server, name.replace("_", "-"), body, content_type, 1)
            time.sleep(5 if zygote else 0)
            results[name] = stats_ms(cold_starts(server, name.replace("_", "-"), body, content_type, trials))
            results[name]["breakdown_p50_ms"] = breakdowns(server, name.replace("_", "-"), trials)
            warm = stats_ms(warm_invokes(server, name.replace("_", "-"), body, content_type))
            results[name]["warm_p50_ms"] = warm["p50_ms"]
            results[name]["over_warm_p50_ms"] = round(results[name]["p50_ms"] - warm["p50_ms"], 2)
            results[name]["memory"] = environment_memory(server, name.replace("_", "-"), body, content_type)
    finally:
        server.stop()
    return results


def side_by_side(tmp: Path, trials: int, skip_embedding: bool, real_python: str) -> dict[str, Any]:
    """Zygote cold starts of a server in this environment and one in ``real_python``'s, both
    running, trial by trial in turn: the two see the same load on a shared machine."""
    env = {"COLDBREW_ZYGOTE": "true"}
    servers = {
        "clean": ColdbrewServer(tmp / "data-side-clean", env=env),
        "real_env": ColdbrewServer(tmp / "data-side-real", env=env, python=real_python),
    }
    results: dict[str, Any] = {label: {} for label in servers}
    try:
        for server in servers.values():
            server.start(timeout=120)
        for name, (archive, body, content_type, model_env, memory) in models(tmp, skip_embedding).items():
            endpoint = name.replace("_", "-")
            for server in servers.values():
                deploy_serverless(
                    server.client(), endpoint, archive.as_uri(), memory=memory, environment=model_env
                )
            for server in servers.values():
                wait_for_status(server.client(), endpoint, "InService", timeout=300)
                cold_starts(server, endpoint, body, content_type, 1)  # its runtime's zygote starts
            time.sleep(5)
            samples: dict[str, list[float]] = {label: [] for label in servers}
            for _ in range(trials):
                for label, server in servers.items():
                    samples[label] += cold_starts(server, endpoint, body, content_type, 1)
            for label in servers:
                results[label][name] = stats_ms(samples[label])
    finally:
        for server in servers.values():
            if server.process is not None:
                server.stop()
    return results


def density(tmp: Path, endpoints: int, warm: int) -> dict[str, Any]:
    archive, _ = sklearn_archive(tmp / "dense.tar.gz", n_estimators=10)
    # Nominal sizes would cap 100 warm 1 GB environments at 80% of this machine's RAM; the workers
    # really hold far less, which the figures below show, so the budget is lifted for this run.
    server = ColdbrewServer(
        tmp / "data-density", env={"COLDBREW_MEMORY_BUDGET_MB": str(1024 * (warm + 10))}
    ).start()
    try:
        sm = server.client()
        started = time.monotonic()
        sm.create_model(ModelName="dense", PrimaryContainer={"ModelDataUrl": archive.as_uri()})
        for index in range(endpoints):
            name = f"dense-{index}"
            sm.create_endpoint_config(
                EndpointConfigName=name,
                ProductionVariants=[
                    {
                        "VariantName": "AllTraffic",
                        "ModelName": "dense",
                        "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 1},
                    }
                ],
            )
            sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
        for index in range(endpoints):
            wait_for_status(sm, f"dense-{index}", "InService", timeout=600)
        registered_s = time.monotonic() - started
        assert server.process is not None
        gateway = psutil.Process(server.process.pid)
        rss_registered = gateway.memory_info().rss
        body = ",".join(["0.01"] * 10).encode()
        latencies = []
        with httpx.Client(timeout=120) as client:
            for index in range(warm):  # make `warm` of them warm
                client.post(
                    f"{server.url}/endpoints/dense-{index}/invocations",
                    content=body,
                    headers={"Content-Type": "text/csv"},
                ).raise_for_status()
            for _ in range(20):
                for index in range(warm):
                    t = time.perf_counter()
                    client.post(
                        f"{server.url}/endpoints/dense-{index}/invocations",
                        content=body,
                        headers={"Content-Type": "text/csv"},
                    ).raise_for_status()
                    latencies.append(time.perf_counter() - t)
        processes = [gateway, *gateway.children(recursive=True)]
        total_rss = sum(p.memory_info().rss for p in processes if p.is_running())
        total_uss = sum(p.memory_full_info().uss for p in processes if p.is_running())
        return {
            "endpoints": endpoints,
            "warm": warm,
            "warm_workers": len(worker_pids(server)),
            "register_seconds": round(registered_s, 1),
            "gateway_rss_mb_registered": round(rss_registered / 2**20, 1),
            "gateway_rss_mb": round(gateway.memory_info().rss / 2**20, 1),
            "total_rss_mb": round(total_rss / 2**20, 1),
            "total_uss_mb": round(total_uss / 2**20, 1),
            "invoke": stats_ms(latencies),
        }
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--warm", type=int, default=100)
    parser.add_argument("--skip-embedding", action="store_true")
    parser.add_argument("--skip-density", action="store_true")
    parser.add_argument("--skip-fresh", action="store_true")
    parser.add_argument(
        "--skip-no-templates",
        action="store_true",
        help="leave out the zygote run with model templates off (COLDBREW_TEMPLATES=false)",
    )
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument(
        "--real-env",
        nargs="?",
        const=str(REPO / ".sdk-envs" / "real" / "bin" / "python"),
        default=None,
        metavar="PYTHON",
        help="also measure with the server in this interpreter's environment (default .sdk-envs/real)",
    )
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="coldbrew-coldstart-"))
    zygote = measure(tmp, True, args.trials, args.skip_embedding)
    report: dict[str, Any] = {"trials": args.trials, "cold_start_zygote": zygote}
    if args.real_env is not None:
        both = side_by_side(tmp, args.trials, args.skip_embedding, args.real_env)
        clean, real = both["clean"], both["real_env"]
        report["real_env_python"] = args.real_env
        report["cold_start_zygote_side_by_side"] = both
        report["real_env_over_clean_p50"] = {
            k: round(real[k]["p50_ms"] / clean[k]["p50_ms"], 2) for k in clean
        }
    if not args.skip_no_templates:
        plain = measure(tmp, True, args.trials, args.skip_embedding, templates=False)
        report["cold_start_zygote_no_templates"] = plain
        report["templates_speedup_p50"] = {
            k: round(plain[k]["p50_ms"] / zygote[k]["p50_ms"], 2) for k in zygote
        }
    if not args.skip_fresh:
        fresh = measure(tmp, False, args.trials, args.skip_embedding)
        report["cold_start_fresh"] = fresh
        report["speedup_p50"] = {k: round(fresh[k]["p50_ms"] / zygote[k]["p50_ms"], 1) for k in zygote}
    if not args.skip_density:
        report["density"] = density(tmp, args.endpoints, args.warm)
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
