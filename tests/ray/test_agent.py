"""The node agent without Ray (plain Python until the backend makes it an actor): models arrive
verified by hash, and a worker it starts serves on TCP. Part of the default run."""

from __future__ import annotations

import asyncio
import hashlib
import tarfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from coldbrew.backends.ray.agent import NodeAgent
from coldbrew.backends.ray.backend import _tar_directory
from coldbrew.backends.ray.messages import ModelBundle, StartRequest

DIGEST = "d" * 64


def model_dir(tmp_path: Path, model_archive: tuple[Path, Any]) -> Path:
    directory = tmp_path / "head" / DIGEST
    directory.mkdir(parents=True)
    with tarfile.open(model_archive[0]) as tar:
        tar.extractall(directory, filter="data")
    return directory


def test_the_shipped_tar_is_the_same_bytes_for_the_same_content(
    tmp_path: Path, model_archive: tuple[Path, Any]
) -> None:
    directory = model_dir(tmp_path, model_archive)
    first = _tar_directory(directory)
    (directory / "model.joblib").touch()  # a new mtime, the same content
    assert _tar_directory(directory) == first


def test_a_model_whose_bytes_differ_from_its_hash_is_refused_and_never_served(
    tmp_path: Path, model_archive: tuple[Path, Any]
) -> None:
    data = _tar_directory(model_dir(tmp_path, model_archive))

    async def scenario() -> None:
        agent = NodeAgent("node-1", "127.0.0.1", zygote=False, memory_cgroups=False)
        try:
            with pytest.raises(ValueError, match="arrived with SHA-256"):
                await agent.receive_model(ModelBundle(DIGEST, hashlib.sha256(b"other").hexdigest()), data)
            assert not agent.has_model(DIGEST)
            reply = await agent.start_worker(StartRequest("w1", DIGEST, "/head/model", 512))
            assert reply.error is not None and "is not on node" in reply.error
        finally:
            await agent.shutdown()

    asyncio.run(scenario())


def test_a_worker_started_by_the_agent_serves_on_tcp_and_is_reported_until_stopped(
    tmp_path: Path, model_archive: tuple[Path, Any]
) -> None:
    head = model_dir(tmp_path, model_archive)
    data = _tar_directory(head)

    async def scenario() -> None:
        agent = NodeAgent("node-1", "127.0.0.1", zygote=False, memory_cgroups=False)
        try:
            await agent.receive_model(ModelBundle(DIGEST, hashlib.sha256(data).hexdigest()), data)
            assert (await agent.ready()).models == (DIGEST,)
            request = StartRequest("w1", DIGEST, str(head), 512)
            reply = await agent.start_worker(request)
            assert reply.error is None and reply.port > 0
            async with httpx.AsyncClient() as client:
                ping = await client.get(f"http://127.0.0.1:{reply.port}/ping")
                assert ping.status_code == 200
                rows = ",".join(["0.01"] * 10)
                answer = await client.post(
                    f"http://127.0.0.1:{reply.port}/invocations",
                    content=rows,
                    headers={"Content-Type": "text/csv"},
                )
                assert answer.status_code == 200
            report = await agent.poll()
            assert set(report.alive) == {"w1"} and report.alive["w1"].rss_bytes > 0
            await agent.stop_worker("w1")
            assert (await agent.poll()).alive == {}
        finally:
            await agent.shutdown()

    asyncio.run(scenario())


def test_the_agent_stops_the_zygote_of_a_runtime_no_pool_uses_as_the_local_backend_does(
    tmp_path: Path, model_archive: tuple[Path, Any]
) -> None:
    head = model_dir(tmp_path, model_archive)
    data = _tar_directory(head)

    async def scenario() -> None:
        # No eager runtime (those are kept) and no idle period: the first poll that finds the
        # runtime unused, with no worker left, stops its zygote.
        agent = NodeAgent("node-1", "127.0.0.1", memory_cgroups=False, eager_runtimes=(), zygote_idle_s=0.0)
        try:
            await agent.receive_model(ModelBundle(DIGEST, hashlib.sha256(data).hexdigest()), data)
            reply = await agent.start_worker(StartRequest("w1", DIGEST, str(head), 512, runtime="sklearn"))
            assert reply.error is None
            report = await agent.poll(("sklearn",))
            assert report.zygote_rss_bytes > 0  # counted in the node's budget by the backend
            await agent.stop_worker("w1")
            # Still in use: kept.
            assert (await agent.poll(("sklearn",))).zygote_rss_bytes > 0
            assert (await agent.poll(())).zygote_rss_bytes == 0
            # The next start of the runtime starts its zygote again.
            again = await agent.start_worker(StartRequest("w2", DIGEST, str(head), 512, runtime="sklearn"))
            assert again.error is None
            assert (await agent.poll(("sklearn",))).zygote_rss_bytes > 0
        finally:
            await agent.shutdown()

    asyncio.run(scenario())


PRINTING_INFERENCE_PY = """
import os
import sys

import joblib

def model_fn(model_dir):
    print("loading on stdout", flush=True)
    print("loading on stderr", file=sys.stderr, flush=True)
    if os.environ.get("FAIL_LOAD"):
        raise RuntimeError("asked to fail the load")
    return joblib.load(os.path.join(model_dir, "model.joblib"))
"""


def test_a_workers_output_is_sent_with_the_polls_until_it_ends(
    tmp_path: Path, model_archive: tuple[Path, Any]
) -> None:
    head = model_dir(tmp_path, model_archive)
    (head / "code").mkdir(exist_ok=True)
    (head / "code" / "inference.py").write_text(PRINTING_INFERENCE_PY)
    data = _tar_directory(head)

    async def scenario() -> None:
        agent = NodeAgent("node-1", "127.0.0.1", zygote=False, memory_cgroups=False)
        try:
            await agent.receive_model(ModelBundle(DIGEST, hashlib.sha256(data).hexdigest()), data)
            reply = await agent.start_worker(StartRequest("w1", DIGEST, str(head), 512))
            assert reply.error is None
            # Written before it was ready: in the pipe by now, sent with the next polls.
            output = b""
            for _ in range(200):
                output += (await agent.poll()).output.get("w1", b"")
                if b"loading on stderr" in output:
                    break
                await asyncio.sleep(0.05)
            assert b"loading on stdout" in output and b"loading on stderr" in output
            await agent.stop_worker("w1")
            # Its end is reported once, with nothing more to send after it.
            closed: tuple[str, ...] = ()
            for _ in range(200):
                closed = (await agent.poll()).output_closed
                if closed:
                    break
                await asyncio.sleep(0.05)
            assert closed == ("w1",)
            assert (await agent.poll()).output_closed == ()
            # A worker that fails to load: what it wrote comes back with the error.
            failing = StartRequest("w2", DIGEST, str(head), 512, env={"FAIL_LOAD": "1"})
            failed = await agent.start_worker(failing)
            assert failed.error is not None and "asked to fail the load" in failed.error
            assert b"loading on stdout" in failed.output
            assert agent.outputs == {}
        finally:
            await agent.shutdown()

    asyncio.run(scenario())
