"""Bring your own server: a model whose Image is ``exec:COMMAND`` runs that command as its worker."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.support import tar_gz, wait_for_status

# A server written with nothing but the standard library, as a user might bring one.
SERVER = textwrap.dedent("""
    import json, os, sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, status, body, content_type="application/json"):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self._send(200 if self.path == "/ping" else 404, b"{}")

        def do_POST(self):
            data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if data == b"crash":
                os._exit(3)
            if data == b"fail":
                return self._send(500, json.dumps({"message": "the model refused"}).encode())
            numbers = [float(x) for x in data.decode().split(",")]
            reply = {"sum": sum(numbers), "model_dir": os.environ["SM_MODEL_DIR"], "cwd": os.getcwd(),
                     "weights": open("weights.txt").read()}
            self._send(200, json.dumps(reply).encode())

        def log_message(self, *args):
            pass

    ThreadingHTTPServer(("127.0.0.1", int(os.environ["SAGEMAKER_BIND_TO_PORT"])), Handler).serve_forever()
""")


@pytest.fixture(scope="module")
def byo_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("byo") / "model.tar.gz"
    path.write_bytes(tar_gz({"serve.py": SERVER.encode(), "weights.txt": b"42"}))
    return path


def test_exec_image_serves_and_scales(server: Any, sm: Any, byo_archive: Path) -> None:
    runtime = server.client("sagemaker-runtime")
    sm.create_model(
        ModelName="byo",
        PrimaryContainer={
            "Image": f"exec:{sys.executable} serve.py",
            "ModelDataUrl": byo_archive.as_uri(),
            "Environment": {"COLDBREW_IDLE_TIMEOUT_S": "1"},
        },
    )
    sm.create_endpoint_config(
        EndpointConfigName="byo",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "byo",
                "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 2},
            }
        ],
    )
    sm.create_endpoint(EndpointName="byo", EndpointConfigName="byo")
    wait_for_status(sm, "byo", "InService")
    response = runtime.invoke_endpoint(EndpointName="byo", Body=b"1,2,3.5", ContentType="text/csv")
    body = json.loads(response["Body"].read())
    assert body["sum"] == 6.5
    assert body["weights"] == "42"
    assert body["cwd"] == body["model_dir"]
    with pytest.raises(runtime.exceptions.ModelError) as excinfo:
        runtime.invoke_endpoint(EndpointName="byo", Body=b"fail", ContentType="text/csv")
    assert "the model refused" in excinfo.value.response["Error"]["Message"]
    with pytest.raises(runtime.exceptions.ModelError):
        runtime.invoke_endpoint(EndpointName="byo", Body=b"crash", ContentType="text/csv")
    # Replaced after the crash.
    assert (
        json.loads(
            runtime.invoke_endpoint(EndpointName="byo", Body=b"1", ContentType="text/csv")["Body"].read()
        )["sum"]
        == 1
    )


def test_serve_command_from_environment_and_a_bad_command(server: Any, sm: Any, byo_archive: Path) -> None:
    sm.create_model(
        ModelName="byo-env",
        PrimaryContainer={
            "ModelDataUrl": byo_archive.as_uri(),
            "Environment": {"COLDBREW_SERVE_COMMAND": f"{sys.executable} serve.py"},
        },
    )
    sm.create_endpoint_config(
        EndpointConfigName="byo-env",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "byo-env",
                "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 1},
            }
        ],
    )
    sm.create_endpoint(EndpointName="byo-env", EndpointConfigName="byo-env")
    wait_for_status(sm, "byo-env", "InService")
    runtime = server.client("sagemaker-runtime")
    assert (
        json.loads(
            runtime.invoke_endpoint(EndpointName="byo-env", Body=b"2,2", ContentType="text/csv")[
                "Body"
            ].read()
        )["sum"]
        == 4
    )

    sm.create_model(
        ModelName="byo-bad",
        PrimaryContainer={
            "Image": f"exec:{sys.executable} -c 'import sys; sys.exit(7)'",
            "ModelDataUrl": byo_archive.as_uri(),
        },
    )
    sm.create_endpoint_config(
        EndpointConfigName="byo-bad",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "byo-bad",
                "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 1},
            }
        ],
    )
    sm.create_endpoint(EndpointName="byo-bad", EndpointConfigName="byo-bad")
    failed = wait_for_status(sm, "byo-bad", "Failed")
    assert "exited with status 7" in failed["FailureReason"]
