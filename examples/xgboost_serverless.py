"""XGBoost regression on a serverless endpoint, as in the SageMaker Serverless Inference launch post.

The post trains XGBoost, packs the Booster as ``xgboost-model`` in a ``model.tar.gz``, and deploys it
with the SageMaker XGBoost image and a ``ServerlessConfig``; the same calls run here, with plain
boto3 pointed at a local ``coldbrew serve``. The data set is scikit-learn's ``load_diabetes``
(bundled with scikit-learn, so nothing is downloaded).

    coldbrew serve &                         # in another terminal
    python examples/xgboost_serverless.py    # --url http://127.0.0.1:8080 by default

Needs ``xgboost`` and ``scikit-learn`` here, and ``xgboost`` in the server's environment.
"""

from __future__ import annotations

import argparse
import io
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import xgboost as xgb
from botocore.exceptions import ClientError, WaiterError
from sklearn.datasets import load_diabetes
from sklearn.model_selection import train_test_split

# The SageMaker XGBoost algorithm container for us-east-1. coldbrew runs no containers: the image
# tells it to serve the archive as that container would (an XGBoost Booster named xgboost-model).
XGBOOST_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"


def clients(url: str) -> tuple[Any, Any]:
    # coldbrew accepts any credentials; the region only shows up in the ARNs it forms.
    session = boto3.Session(region_name="us-east-1", aws_access_key_id="dummy", aws_secret_access_key="dummy")
    sm = session.client("sagemaker", endpoint_url=url)
    return sm, session.client("sagemaker-runtime", endpoint_url=url)


def model_archive(booster: xgb.Booster, directory: Path) -> Path:
    raw = bytes(booster.save_raw(raw_format="json"))  # JSON loads in every XGBoost version since 1.0
    path = directory / "model.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("xgboost-model")
        info.size = len(raw)
        tar.addfile(info, io.BytesIO(raw))
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
    parser.add_argument("--name", default="xgboost-serverless", help="model, config and endpoint name")
    args = parser.parse_args(argv)

    features, target = load_diabetes(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(features, target, test_size=0.2, random_state=0)
    params = {"objective": "reg:squarederror", "max_depth": 4, "eta": 0.1, "subsample": 0.8, "seed": 0}
    booster = xgb.train(params, xgb.DMatrix(x_train, label=y_train), num_boost_round=100)

    sm, runtime = clients(args.url)
    clean_up(sm, args.name)  # leftovers of an interrupted run would make the create calls fail
    with tempfile.TemporaryDirectory() as tmp:
        archive = model_archive(booster, Path(tmp))
        try:
            sm.create_model(
                ModelName=args.name,
                ExecutionRoleArn="arn:aws:iam::123456789012:role/coldbrew-example",
                PrimaryContainer={"Image": XGBOOST_IMAGE, "ModelDataUrl": archive.as_uri()},
            )
            sm.create_endpoint_config(
                EndpointConfigName=args.name,
                ProductionVariants=[
                    {
                        "VariantName": "AllTraffic",
                        "ModelName": args.name,
                        "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 5},
                    }
                ],
            )
            sm.create_endpoint(EndpointName=args.name, EndpointConfigName=args.name)
            print(f"creating endpoint {args.name} ...")
            try:
                # Delay 1 s: the waiter's default (30 s) is sized for SageMaker, not a local server.
                sm.get_waiter("endpoint_in_service").wait(
                    EndpointName=args.name, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
                )
            except WaiterError:
                reason = sm.describe_endpoint(EndpointName=args.name).get("FailureReason")
                print(f"endpoint {args.name} did not come up: {reason}", file=sys.stderr)
                return 1
            print(f"endpoint {args.name} is InService")

            rows = x_test[:5]
            payload = "\n".join(",".join(repr(float(v)) for v in row) for row in rows)
            response = runtime.invoke_endpoint(
                EndpointName=args.name, ContentType="text/csv", Accept="text/csv", Body=payload
            )
            text = response["Body"].read().decode()
            # One prediction per line (or comma-separated, as the XGBoost container writes them).
            predicted = np.array([float(v) for v in text.replace(",", "\n").split()])
            local = booster.predict(xgb.DMatrix(rows))
            for p, lp, truth in zip(predicted, local, y_test[:5], strict=True):
                print(f"endpoint {p:8.2f}   in-process {lp:8.2f}   actual {truth:6.1f}")
            if predicted.shape != local.shape or not np.allclose(predicted, local, rtol=1e-5, atol=1e-3):
                print("the endpoint's predictions differ from the in-process ones", file=sys.stderr)
                return 1
        finally:
            clean_up(sm, args.name)
            print(f"deleted endpoint, endpoint config and model {args.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
