"""A scikit-learn random forest on a serverless endpoint, with plain boto3 against ``coldbrew serve``.

Trains a ``RandomForestRegressor`` on ``load_diabetes``, saves it as ``model.joblib`` in a
``model.tar.gz`` (the file name the default scikit-learn handlers load), deploys it with a
``ServerlessConfig``, invokes it with JSON, and deletes everything again.

    coldbrew serve &                           # in another terminal
    python examples/sklearn_random_forest.py   # --url http://127.0.0.1:8080 by default
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import boto3
import joblib
import numpy as np
from botocore.exceptions import ClientError, WaiterError
from sklearn.datasets import load_diabetes
from sklearn.ensemble import RandomForestRegressor
from sklearn.model_selection import train_test_split

# The SageMaker scikit-learn container for us-east-1; coldbrew serves the archive as it would.
SKLEARN_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"


def clients(url: str) -> tuple[Any, Any]:
    # coldbrew accepts any credentials; the region only shows up in the ARNs it forms.
    session = boto3.Session(region_name="us-east-1", aws_access_key_id="dummy", aws_secret_access_key="dummy")
    sm = session.client("sagemaker", endpoint_url=url)
    return sm, session.client("sagemaker-runtime", endpoint_url=url)


def model_archive(model: RandomForestRegressor, directory: Path) -> Path:
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    path = directory / "model.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("model.joblib")
        info.size = buffer.tell()
        buffer.seek(0)
        tar.addfile(info, buffer)
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
    parser.add_argument("--name", default="sklearn-random-forest", help="model, config and endpoint name")
    args = parser.parse_args(argv)

    features, target = load_diabetes(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(features, target, test_size=0.2, random_state=0)
    model = RandomForestRegressor(n_estimators=50, random_state=0).fit(x_train, y_train)

    sm, runtime = clients(args.url)
    clean_up(sm, args.name)  # leftovers of an interrupted run would make the create calls fail
    with tempfile.TemporaryDirectory() as tmp:
        archive = model_archive(model, Path(tmp))
        try:
            sm.create_model(
                ModelName=args.name,
                ExecutionRoleArn="arn:aws:iam::123456789012:role/coldbrew-example",
                PrimaryContainer={"Image": SKLEARN_IMAGE, "ModelDataUrl": archive.as_uri()},
            )
            sm.create_endpoint_config(
                EndpointConfigName=args.name,
                ProductionVariants=[
                    {
                        "VariantName": "AllTraffic",
                        "ModelName": args.name,
                        "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 2},
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
            response = runtime.invoke_endpoint(
                EndpointName=args.name,
                ContentType="application/json",
                Accept="application/json",
                Body=json.dumps(rows.tolist()),
            )
            predicted = np.array(json.loads(response["Body"].read()), dtype=float)
            local = model.predict(rows)
            for p, lp, truth in zip(predicted, local, y_test[:5], strict=True):
                print(f"endpoint {p:8.2f}   in-process {lp:8.2f}   actual {truth:6.1f}")
            if not np.allclose(predicted, local, rtol=1e-9):
                print("the endpoint's predictions differ from the in-process ones", file=sys.stderr)
                return 1
        finally:
            clean_up(sm, args.name)
            print(f"deleted endpoint, endpoint config and model {args.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
