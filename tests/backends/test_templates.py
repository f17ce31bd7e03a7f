"""Model templates (issue 18, point 3): a cold start after the first forks from a process that has
the model loaded already, and every way that must not change what a worker sees or reports.

Real ``coldbrew serve`` processes on loopback; the worker's own report (pid, parent, randomness)
comes from the model's code, and the process tree is read with psutil.
"""

from __future__ import annotations

import io
import json
import os
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import psutil
import pytest

from coldbrew.worker.messages import SPARE_NAME, TEMPLATE_NAME
from tests.support import (
    ColdbrewServer,
    deploy_serverless,
    sklearn_archive,
    tar_gz,
    wait_for_status,
    worker_pids,
)

REPORT = textwrap.dedent("""
    import json, os
    import joblib
    import numpy as np

    def model_fn(model_dir):
        {load}
        return joblib.load(os.path.join(model_dir, "model.joblib"))

    def input_fn(body, content_type):
        return np.array(json.loads(body))

    def _memory_limit():
        for line in open("/proc/self/cgroup"):
            _, controllers, path = line.strip().split(":", 2)
            if "memory" in controllers.split(","):
                try:
                    return int(open(f"/sys/fs/cgroup/memory{{path}}/memory.limit_in_bytes").read())
                except OSError:
                    return None
            if controllers == "":
                try:
                    return int(open(f"/sys/fs/cgroup{{path}}/memory.max").read())
                except (OSError, ValueError):
                    return None
        return None

    def _cgroup():
        return open("/proc/self/cgroup").read()

    def predict_fn(rows, model):
        return {{
            "predictions": model.predict(rows).tolist(),
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "random": float(np.random.random()),
            "threads": len(os.listdir("/proc/self/task")),
            "memory_limit": _memory_limit(),
            "omp": os.environ.get("OMP_NUM_THREADS"),
            "cgroup": _cgroup(),
        }}

    def output_fn(prediction, accept):
        return json.dumps(prediction), "application/json"
""")

ROWS = [[0.01 * i for i in range(10)], [-0.02 * i for i in range(10)]]


def archive(path: Path, model: Any, load: str = "pass") -> Path:
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    code = REPORT.format(load=load).encode()
    path.write_bytes(tar_gz({"model.joblib": buffer.getvalue(), "code/inference.py": code}))
    return path


def invoke(server: ColdbrewServer, name: str) -> dict[str, Any]:
    response = server.client("sagemaker-runtime").invoke_endpoint(
        EndpointName=name, Body=json.dumps(ROWS), ContentType="application/json"
    )
    answer: dict[str, Any] = json.loads(response["Body"].read())
    return answer


def scaled_to_zero(server: ColdbrewServer, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while worker_pids(server):
        assert time.monotonic() < deadline, "the endpoint did not scale to zero"
        time.sleep(0.02)


def templates(server: ColdbrewServer) -> dict[int, psutil.Process]:
    assert server.process is not None
    found = {}
    for child in psutil.Process(server.process.pid).children(recursive=True):
        try:
            if child.name() == TEMPLATE_NAME and child.status() != psutil.STATUS_ZOMBIE:
                found[child.pid] = child
        except psutil.Error:
            pass
    return found


def stopped(process: psutil.Process, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def zygotes(server: ColdbrewServer) -> set[int]:
    assert server.process is not None
    return {
        c.pid
        for c in psutil.Process(server.process.pid).children()
        if "coldbrew.worker.zygote" in " ".join(c.cmdline())
    }


def deploy(server: ColdbrewServer, name: str, path: Path, memory: int = 1024) -> None:
    sm = server.client()
    deploy_serverless(sm, name, path.as_uri(), memory=memory)
    wait_for_status(sm, name, "InService")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ColdbrewServer]:
    running = ColdbrewServer(
        tmp_path_factory.mktemp("templates") / "data", env={"COLDBREW_IDLE_TIMEOUT_S": "0.3"}
    ).start()
    yield running
    running.stop()


def test_later_cold_starts_fork_from_the_template_and_do_not_load_the_model(
    server: ColdbrewServer, tmp_path: Path, model_archive: tuple[Path, Any]
) -> None:
    model = model_archive[1]
    deploy(server, "reused", archive(tmp_path / "model.tar.gz", model))
    answers = []
    for _ in range(3):
        scaled_to_zero(server)
        answers.append(invoke(server, "reused"))
    expected = model.predict(ROWS).tolist()
    assert all(answer["predictions"] == expected for answer in answers)
    # Three workers, one parent: the template, itself a child of the runtime's zygote.
    assert len({answer["pid"] for answer in answers}) == 3
    [parent] = {answer["ppid"] for answer in answers}
    template = templates(server)[parent]
    assert template.ppid() in zygotes(server)
    assert len({answer["random"] for answer in answers}) == 3, "each worker draws its own numbers"
    assert all(answer["threads"] == 1 for answer in answers)
    # Each in a memory cgroup of its own, of the endpoint's MemorySizeInMB (deploy's 1024), the
    # one started from the template's spare (moved there before it was anyone's) as the others.
    if answers[0]["memory_limit"] is not None:
        assert all(answer["memory_limit"] == 1024 * 1024 * 1024 for answer in answers)
        assert len({answer["cgroup"] for answer in answers}) == 3
    log = server.log()
    # The model was loaded once, by the template (its log line goes to the first environment's
    # stream, labelled with the endpoint); the later cold starts logged no model load.
    loads = [
        line for line in log.splitlines() if line.startswith("reused ") and "coldbrew.worker: loaded" in line
    ]
    assert len(loads) == 1, loads
    starts = [line for line in log.splitlines() if "cold start of reused/" in line]
    assert len(starts) >= 2
    assert all("model_load=0.000" in line for line in starts[-2:]), starts


def test_a_model_whose_load_starts_a_thread_is_served_without_a_template(
    server: ColdbrewServer, tmp_path: Path, model_archive: tuple[Path, Any]
) -> None:
    # A forked copy of a process with another thread could inherit a lock that thread holds.
    load = "import threading, time; threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()"
    deploy(server, "threaded", archive(tmp_path / "model.tar.gz", model_archive[1], load))
    first = invoke(server, "threaded")
    assert first["threads"] == 2
    assert "cannot be a template" in server.log()
    assert first["ppid"] in zygotes(server), "the process that loaded it serves it itself"
    scaled_to_zero(server)
    second = invoke(server, "threaded")
    assert second["pid"] != first["pid"]
    assert second["ppid"] in zygotes(server), "later workers fork from the zygote, as without templates"
    assert second["predictions"] == first["predictions"]
    assert all(t.pid != first["pid"] for t in templates(server).values())


def test_a_model_that_fails_to_load_fails_its_endpoint_with_the_loaders_error(
    server: ColdbrewServer, tmp_path: Path, model_archive: tuple[Path, Any]
) -> None:
    load = "raise RuntimeError('weights.bin is not in the archive')"
    sm = server.client()
    deploy_serverless(sm, "broken", archive(tmp_path / "model.tar.gz", model_archive[1], load).as_uri())
    failed = wait_for_status(sm, "broken", "Failed")
    assert "weights.bin is not in the archive" in failed["FailureReason"]
    assert not any("broken" in " ".join(t.cmdline()) for t in templates(server).values())


def test_a_template_is_stopped_when_idle_but_never_while_a_worker_of_it_runs(
    tmp_path: Path, model_archive: tuple[Path, Any]
) -> None:
    env = {"COLDBREW_IDLE_TIMEOUT_S": "4", "COLDBREW_TEMPLATE_IDLE_S": "1"}
    server = ColdbrewServer(tmp_path / "data", env=env).start()
    try:
        deploy(server, "idle", archive(tmp_path / "model.tar.gz", model_archive[1]))
        scaled_to_zero(server)
        first = invoke(server, "idle")
        template = templates(server)[first["ppid"]]
        time.sleep(2.5)  # past the template's idle time, within its worker's keep-alive
        assert template.is_running(), "stopped while its worker ran (which would have ended it)"
        assert invoke(server, "idle")["pid"] == first["pid"]
        scaled_to_zero(server)
        stopped(template, "the idle template was not stopped", timeout=10)
        assert "stopping template" in server.log()
        again = invoke(server, "idle")
        assert again["ppid"] != first["ppid"], "a new template for the next cold start"
        assert again["predictions"] == first["predictions"]
    finally:
        server.stop()


def test_templates_can_be_switched_off(tmp_path: Path, model_archive: tuple[Path, Any]) -> None:
    env = {"COLDBREW_IDLE_TIMEOUT_S": "0.3", "COLDBREW_TEMPLATES": "false"}
    server = ColdbrewServer(tmp_path / "data", env=env).start()
    try:
        deploy(server, "plain", archive(tmp_path / "model.tar.gz", model_archive[1]))
        answers = []
        for _ in range(2):
            scaled_to_zero(server)
            answers.append(invoke(server, "plain"))
        assert all(answer["ppid"] in zygotes(server) for answer in answers)
        assert not templates(server)
    finally:
        server.stop()


def test_the_next_cold_start_is_the_templates_spare_already_in_its_cgroup(
    server: ColdbrewServer, tmp_path: Path, model_archive: tuple[Path, Any]
) -> None:
    deploy(server, "spared", archive(tmp_path / "model.tar.gz", model_archive[1]))
    scaled_to_zero(server)
    first = invoke(server, "spared")
    template = templates(server)[first["ppid"]]
    # The template forks its next spare a moment after a cold start; it is nobody's worker yet.
    deadline = time.monotonic() + 10
    while not (spares := [c for c in template.children() if c.name() == SPARE_NAME]):
        assert time.monotonic() < deadline, "no spare forked"
        time.sleep(0.05)
    [spare] = spares
    assert spare.pid not in worker_pids(server)
    scaled_to_zero(server)
    second = invoke(server, "spared")
    assert second["pid"] == spare.pid, "the cold start took the spare"
    assert second["ppid"] == template.pid
    assert second["predictions"] == first["predictions"]
    assert second["random"] != first["random"]
    if first["memory_limit"] is not None:
        assert second["memory_limit"] == first["memory_limit"] == 1024 * 1024 * 1024
    starts = [line for line in server.log().splitlines() if "cold start of spared/" in line]
    # No fork and no cgroup move while the client waited.
    assert "limit=0.0" in starts[-1], starts[-1]
    # The model's functions are the user's: the spare sent itself no warm-up request.
    assert "warmed-up" not in starts[-1], starts[-1]


def test_a_plain_models_spare_answers_its_warm_up_request_before_it_serves(
    server: ColdbrewServer, tmp_path: Path
) -> None:
    path, model = sklearn_archive(tmp_path / "plain.tar.gz")
    deploy(server, "rehearsed", path)
    runtime = server.client("sagemaker-runtime")
    body = "\n".join(",".join(str(v) for v in row) for row in ROWS)
    answers = []
    for _ in range(2):  # the template's first worker, then its spare
        scaled_to_zero(server)
        if answers:
            template = next(iter(templates(server).values()))
            deadline = time.monotonic() + 10
            while not any(c.name() == SPARE_NAME for c in template.children()):
                assert time.monotonic() < deadline, "no spare forked"
                time.sleep(0.05)
        response = runtime.invoke_endpoint(EndpointName="rehearsed", Body=body, ContentType="text/csv")
        answers.append(json.loads(response["Body"].read()))
    assert answers == [model.predict(ROWS).tolist()] * 2
    starts = [line for line in server.log().splitlines() if "cold start of rehearsed/" in line]
    assert "(a warmed-up spare)" in starts[-1], starts[-1]


def test_templates_over_their_memory_cap_are_stopped_once_idle(
    tmp_path: Path, model_archive: tuple[Path, Any]
) -> None:
    # A cap every template exceeds: each is stopped as soon as no worker of it runs, not later.
    env = {"COLDBREW_IDLE_TIMEOUT_S": "2", "COLDBREW_TEMPLATE_MEMORY_MB": "1"}
    server = ColdbrewServer(tmp_path / "data", env=env).start()
    try:
        deploy(server, "capped", archive(tmp_path / "model.tar.gz", model_archive[1]))
        scaled_to_zero(server)
        first = invoke(server, "capped")
        # (The load check's template was stopped once its worker went; this start made a new one.)
        template = templates(server)[first["ppid"]]
        time.sleep(0.5)
        assert template.is_running(), "stopped while its worker ran"
        scaled_to_zero(server)
        stopped(template, "the template over the cap was not stopped", timeout=5)
        assert "the templates hold more than 1 MB" in server.log()
    finally:
        server.stop()


def test_a_model_with_more_than_one_vcpu_still_has_a_template(
    server: ColdbrewServer, tmp_path: Path, model_archive: tuple[Path, Any]
) -> None:
    # 4,096 MB buys two vCPUs' threads; a BLAS pool of two started before the load would keep the
    # template from forking, so the template loads with one and each worker sizes its own.
    deploy(server, "wide", archive(tmp_path / "model.tar.gz", model_archive[1]), memory=4096)
    answers = []
    for _ in range(2):
        scaled_to_zero(server)
        answers.append(invoke(server, "wide"))
    [parent] = {answer["ppid"] for answer in answers}
    assert parent in templates(server)
    assert all(answer["omp"] == str(min(2, psutil.cpu_count() or 1)) for answer in answers)


# A model that, once loaded in its template, forges the template's answers on the channel to the
# gateway: "ready", then "forked" with the gateway's own pid (to have it moved into a cgroup and
# later killed as a worker).
FORGER = """
import json, os, socket

def _gateway():
    with open(f"/proc/{os.getppid()}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("PPid:"))

for fd in map(int, os.listdir("/proc/self/fd")):
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        continue
    if sock.type == socket.SOCK_SEQPACKET:
        sock.send(json.dumps({"ready": True}).encode())
        sock.send(json.dumps({"pid": _gateway()}).encode())
    sock.detach()
"""


def test_a_pid_the_models_code_forges_is_never_taken_for_a_worker(
    server: ColdbrewServer, tmp_path: Path, model_archive: tuple[Path, Any]
) -> None:
    assert server.process is not None
    gateway = psutil.Process(server.process.pid)
    cgroups_before = Path(f"/proc/{gateway.pid}/cgroup").read_text()
    load = "exec(" + repr(FORGER) + ")"
    sm = server.client()
    deploy_serverless(sm, "forger", archive(tmp_path / "model.tar.gz", model_archive[1], load).as_uri())
    failed = wait_for_status(sm, "forger", "Failed")
    assert "not a child of it" in failed["FailureReason"], failed["FailureReason"]
    assert gateway.is_running() and gateway.status() != psutil.STATUS_ZOMBIE
    assert Path(f"/proc/{gateway.pid}/cgroup").read_text() == cgroups_before
    # Other endpoints are served as before.
    deploy(server, "after-forger", archive(tmp_path / "plain.tar.gz", model_archive[1]))
    assert invoke(server, "after-forger")["predictions"]


def test_cold_starts_from_spares_leak_no_descriptor_and_templates_write_to_no_log(
    server: ColdbrewServer, tmp_path: Path, model_archive: tuple[Path, Any]
) -> None:
    assert server.process is not None
    gateway = psutil.Process(server.process.pid)
    deploy(server, "leaks", archive(tmp_path / "model.tar.gz", model_archive[1]))
    scaled_to_zero(server)
    invoke(server, "leaks")
    time.sleep(0.3)  # its spare forked
    scaled_to_zero(server)
    before = gateway.num_fds()
    for _ in range(6):
        invoke(server, "leaks")
        time.sleep(0.3)
        scaled_to_zero(server)
    assert gateway.num_fds() <= before + 2, (before, gateway.num_fds())
    # Its stdout and stderr are neither the gateway's nor any environment's log stream.
    log = server.log_path.resolve()
    for template in templates(server).values():
        for fd in (1, 2):
            assert Path(os.readlink(f"/proc/{template.pid}/fd/{fd}")) == Path(os.devnull)
    assert log.exists()


def test_one_model_can_switch_templates_off_in_its_environment(
    server: ColdbrewServer, tmp_path: Path, model_archive: tuple[Path, Any]
) -> None:
    sm = server.client()
    path = archive(tmp_path / "model.tar.gz", model_archive[1])
    deploy_serverless(sm, "untemplated", path.as_uri(), environment={"COLDBREW_TEMPLATES": "false"})
    wait_for_status(sm, "untemplated", "InService")
    answers = []
    for _ in range(2):
        scaled_to_zero(server)
        answers.append(invoke(server, "untemplated"))
    assert all(answer["ppid"] in zygotes(server) for answer in answers)
    loads = [
        line for line in server.log().splitlines() if line.startswith("untemplated ") and "loaded" in line
    ]
    assert len(loads) >= 3, "the load check and each cold start loaded the model"
