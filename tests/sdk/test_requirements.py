"""``code/requirements.txt`` installed at CreateEndpoint, as SageMaker's containers install it when
they start (aws/sagemaker-inference-toolkit ``model_server._install_requirements``): through the
real server and boto3, offline, from a local wheel directory (``COLDBREW_PIP_ARGS``)."""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil

from tests.sdk.wheels import build_wheel
from tests.support import ColdbrewServer, deploy_serverless, wait_for_status

INFERENCE = """
import json
import {module}


def model_fn(model_dir):
    return None


def input_fn(body, content_type):
    return body


def predict_fn(data, model):
    return {{"value": str({module}.{attribute})}}


def output_fn(prediction, accept):
    return json.dumps(prediction)
"""


def _model(root: Path, name: str, requirements: str, module: str, attribute: str) -> Path:
    directory = root / name
    (directory / "code").mkdir(parents=True)
    (directory / "code" / "inference.py").write_text(INFERENCE.format(module=module, attribute=attribute))
    (directory / "code" / "requirements.txt").write_text(requirements)
    return directory


def _invoke(server: ColdbrewServer, endpoint: str) -> Any:
    runtime = server.client("sagemaker-runtime")
    reply = runtime.invoke_endpoint(EndpointName=endpoint, Body=b"{}", ContentType="application/json")
    return json.loads(reply["Body"].read())


def _generic(sm: Any, name: str, directory: Path) -> None:
    # No framework image: the model is served by its own inference.py.
    sm.create_model(
        ModelName=name,
        PrimaryContainer={"ModelDataUrl": str(directory)},
        ExecutionRoleArn="arn:aws:iam::123456789012:role/coldbrew",
    )
    sm.create_endpoint_config(
        EndpointConfigName=f"{name}-config",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": name,
                "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 1},
            }
        ],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config")


def test_requirements_are_installed_once_for_every_endpoint_that_lists_them(
    server: ColdbrewServer, tmp_path: Path
) -> None:
    sm = server.client()
    requirements = "# shared\ncoldbrew-test-scaler==2.0\n"
    for name in ("req-shared-a", "req-shared-b"):
        _generic(sm, name, _model(tmp_path, name, requirements, "coldbrew_test_scaler", "FACTOR"))
        wait_for_status(sm, name, "InService", timeout=120)
    assert _invoke(server, "req-shared-a") == {"value": "2000.0"}
    assert _invoke(server, "req-shared-b") == {"value": "2000.0"}

    installs = [line for line in server.log().splitlines() if "installed code/requirements.txt in " in line]
    assert len([line for line in installs if "req-shared-a" in line]) == 1, installs
    assert not [line for line in installs if "req-shared-b" in line], installs
    # pip's progress, one line each, as it installs.
    assert "installing code/requirements.txt in " in server.log()
    assert ": Successfully installed coldbrew-test-scaler-2.0" in server.log()
    holding = [
        d
        for d in (server.data_dir / "packages").iterdir()
        if list(d.glob("lib/*/site-packages/coldbrew_test_scaler-2.0.dist-info"))
    ]
    assert len(holding) == 1


def test_a_requirement_pip_cannot_install_fails_the_endpoint_with_pips_words(
    server: ColdbrewServer, tmp_path: Path
) -> None:
    sm = server.client()
    directory = _model(tmp_path, "req-missing", "coldbrew-test-absent==9.9\n", "json", "dumps")
    _generic(sm, "req-missing", directory)
    described = wait_for_status(sm, "req-missing", "Failed", timeout=120)
    reason = described["FailureReason"]
    assert f"Installing code/requirements.txt in {directory} failed (pip exited with status 1)" in reason
    assert "No matching distribution found for coldbrew-test-absent==9.9" in reason
    assert str(server.data_dir) not in reason
    assert len(reason) <= 1024


def test_a_requirement_that_replaces_a_server_package_wins_in_a_fresh_interpreter(
    server: ColdbrewServer, tmp_path: Path, wheelhouse: Path
) -> None:
    """iniconfig is in the server's environment (pytest needs it); the model pins a build of its
    own. Its worker must see the model's version, so it is not forked from a zygote that could
    have imported the server's."""
    build_wheel(wheelhouse, "iniconfig", "0.0.1", {"iniconfig.py": "__version__ = '0.0.1-model'\n"})
    sm = server.client()
    _generic(
        sm, "req-shadow", _model(tmp_path, "req-shadow", "iniconfig==0.0.1\n", "iniconfig", "__version__")
    )
    wait_for_status(sm, "req-shadow", "InService", timeout=120)
    assert _invoke(server, "req-shadow") == {"value": "0.0.1-model"}
    assert importlib.metadata.version("iniconfig") != "0.0.1"  # the server's own is untouched

    started = re.findall(
        r"req-shadow/AllTraffic: environment \d+ started in [\d.]+ ms \(\w+, worker (\d+)\)", server.log()
    )
    assert started
    assert server.process is not None
    assert psutil.Process(int(started[-1])).ppid() == server.process.pid  # spawned, not forked


def test_requirements_in_a_framework_models_archive_are_installed(
    server: ColdbrewServer, tmp_path: Path
) -> None:
    """A scikit-learn container model whose archive carries code/ with requirements.txt."""
    import joblib
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge

    directory = _model(
        tmp_path, "req-sklearn", "coldbrew-test-scaler==1.0\n", "coldbrew_test_scaler", "FACTOR"
    )
    X, y = load_diabetes(return_X_y=True)
    joblib.dump(Ridge().fit(X, y), directory / "model.joblib")
    (directory / "code" / "inference.py").write_text(
        "import os, joblib, coldbrew_test_scaler\n"
        "def model_fn(model_dir):\n"
        "    return joblib.load(os.path.join(model_dir, 'model.joblib'))\n"
        "def predict_fn(data, model):\n"
        "    return model.predict(data) * 0 + coldbrew_test_scaler.FACTOR\n"
    )
    deploy_serverless(server.client(), "req-sklearn", str(directory))
    wait_for_status(server.client(), "req-sklearn", "InService", timeout=120)
    reply = server.client("sagemaker-runtime").invoke_endpoint(
        EndpointName="req-sklearn", Body=json.dumps(X[:2].tolist()), ContentType="application/json"
    )
    assert json.loads(reply["Body"].read()) == [1000.0, 1000.0]


def test_unsplittable_pip_args_are_one_line_at_start(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "coldbrew", "serve", "--port", "0", "--data-dir", str(tmp_path)],
        env={"PATH": "/usr/bin:/bin", "COLDBREW_PIP_ARGS": '--index-url "unclosed'},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert lines == [
        "coldbrew: invalid setting COLDBREW_PIP_ARGS='--index-url \"unclosed': "
        "cannot be split into arguments: No closing quotation"
    ], done.stderr


def test_failure_reasons_name_the_source_directorys_url_not_the_cache(
    server: ColdbrewServer, tmp_path: Path
) -> None:

    from tests.sdk.conftest import BUCKET, s3_client
    from tests.support import tar_gz

    s3 = s3_client(server)
    source = f"s3://{BUCKET}/broken/sourcedir.tar.gz"
    s3.put_object(
        Bucket=BUCKET, Key="broken/sourcedir.tar.gz", Body=tar_gz({"inference.py": b"import nowhere_42\n"})
    )
    (tmp_path / "model").mkdir()
    sm = server.client()
    for name, submit in (("src-broken", source), ("src-missing", f"s3://{BUCKET}/absent/sourcedir.tar.gz")):
        environment = {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": submit}
        deploy_serverless(sm, name, str(tmp_path / "model"), environment=environment)
    broken = wait_for_status(sm, "src-broken", "Failed", timeout=120)["FailureReason"]
    assert f"importing {source}/inference.py raised ModuleNotFoundError" in broken, broken
    missing = wait_for_status(sm, "src-missing", "Failed", timeout=120)["FailureReason"]
    assert (
        f"Could not find the source directory at s3://{BUCKET}/absent/sourcedir.tar.gz: the object does not "
        "exist. (SAGEMAKER_SUBMIT_DIRECTORY)"
    ) in missing, missing
    for reason in (broken, missing):
        assert str(server.data_dir) not in reason and "sha256" not in reason
