"""PyTorch models through a real server: TorchScript by default, eager modules with a model_fn."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.datasets import load_diabetes

from coldbrew.worker.errors import ModelLoadError
from coldbrew.worker.frameworks import pytorch
from tests.support import ColdbrewServer, deploy_serverless, tar_gz, wait_for_status

FEATURES, TARGET = load_diabetes(return_X_y=True)
ROWS = FEATURES[:7]

# A user's model_fn for an eager module saved whole with torch.save: its classes are torch's own
# (nn.Sequential, nn.Linear), so unpickling needs no user code beyond this.
EAGER_INFERENCE_PY = b"""
import os
import torch

def model_fn(model_dir):
    # weights_only=False: a whole module is a pickle of classes, not only tensors.
    return torch.load(os.path.join(model_dir, "model.pt"), weights_only=False)
"""


def tiny_regressor() -> torch.nn.Module:
    """A small MLP fitted briefly on load_diabetes (seeded, so every run builds the same one)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    x = torch.tensor(FEATURES, dtype=torch.float32)
    y = torch.tensor(TARGET, dtype=torch.float32).unsqueeze(1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(100):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
    return model.eval()


def saved(obj: Any, scripted: bool) -> bytes:
    buffer = io.BytesIO()
    if scripted:
        torch.jit.save(torch.jit.script(obj), buffer)
    else:
        torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tiny_regressor()


@pytest.fixture(scope="module")
def expected(model: torch.nn.Module) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.tensor(ROWS, dtype=torch.float32)).numpy()


@pytest.fixture(scope="module")
def runtime(server: ColdbrewServer) -> Any:
    return server.client("sagemaker-runtime", read_timeout=120)


def deploy(sm: Any, tmp_path: Path, name: str, files: dict[str, bytes]) -> None:
    archive = tmp_path / f"{name}.tar.gz"
    archive.write_bytes(tar_gz(files))
    deploy_serverless(sm, name, archive.as_uri(), memory=2048)


def test_torchscript_by_default(
    sm: Any, runtime: Any, model: torch.nn.Module, expected: np.ndarray, tmp_path: Path
) -> None:
    deploy(sm, tmp_path, "torchscript", {"model.pt": saved(model, scripted=True)})
    wait_for_status(sm, "torchscript", "InService", timeout=90)
    csv_body = "\n".join(",".join(repr(float(v)) for v in row) for row in ROWS)
    response = runtime.invoke_endpoint(
        EndpointName="torchscript", Body=csv_body, ContentType="text/csv", Accept="application/json"
    )
    got = np.array(json.loads(response["Body"].read()), dtype=np.float32)
    assert got.shape == (len(ROWS), 1)
    # float32 on both sides; the worker's single BLAS thread may sum in another order.
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # NPY in, NPY out: the array comes back as float32, as the model computed it.
    body = io.BytesIO()
    np.save(body, ROWS)
    response = runtime.invoke_endpoint(
        EndpointName="torchscript",
        Body=body.getvalue(),
        ContentType="application/x-npy",
        Accept="application/x-npy",
    )
    array = np.load(io.BytesIO(response["Body"].read()))
    assert array.dtype == np.float32
    np.testing.assert_allclose(array, expected, rtol=1e-5, atol=1e-5)


def test_eager_pickle_without_model_fn_fails_the_endpoint(
    sm: Any, model: torch.nn.Module, tmp_path: Path
) -> None:
    deploy(sm, tmp_path, "eager-bare", {"model.pt": saved(model, scripted=False)})
    reason = wait_for_status(sm, "eager-bare", "Failed", timeout=90)["FailureReason"]
    assert "saved with torch.save" in reason and "not as TorchScript" in reason
    assert "model_fn" in reason and "code/inference.py" in reason


def test_eager_pickle_with_model_fn(
    sm: Any, runtime: Any, model: torch.nn.Module, expected: np.ndarray, tmp_path: Path
) -> None:
    deploy(
        sm,
        tmp_path,
        "eager-user",
        {"model.pt": saved(model, scripted=False), "code/inference.py": EAGER_INFERENCE_PY},
    )
    wait_for_status(sm, "eager-user", "InService", timeout=90)
    body = json.dumps({"instances": ROWS.tolist()})
    response = runtime.invoke_endpoint(EndpointName="eager-user", Body=body, ContentType="application/json")
    got = np.array(json.loads(response["Body"].read()), dtype=np.float32)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_missing_torch_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"anything")
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    with pytest.raises(ModelLoadError, match=r'pip install "coldbrew\[pytorch\]"'):
        pytorch.model_fn(str(tmp_path))


def test_damaged_file_is_not_called_an_eager_pickle(tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="could not load .* as TorchScript") as excinfo:
        pytorch.model_fn(str(tmp_path))
    assert "torch.save" not in str(excinfo.value)
