"""Batch transform through the real server: boto3's CreateTransformJob over the embedded S3, real
workers, botocore's waiter, a SIGKILL mid-job."""

from __future__ import annotations

import gzip
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from botocore.exceptions import ClientError
from sklearn.datasets import load_diabetes

from tests.support import ColdbrewServer, deploy_serverless, sklearn_archive, tar_gz, wait_for_status

BUCKET = "transform-tests"
ROLE = "arn:aws:iam::123456789012:role/coldbrew"

# A model whose behaviour each line picks: "reject" answers 400, "sleep:S" sleeps S seconds, any
# other line is answered with its first field doubled. Every request is appended to CALLS_FILE.
SCRIPTED = """
import os
import time


def model_fn(model_dir):
    return None


def transform_fn(model, body, content_type, accept):
    text = body.decode() if isinstance(body, bytes) else body
    with open(os.environ["CALLS_FILE"], "a") as f:
        f.write(text.replace("\\n", "|") + "\\n")
    out = []
    for line in text.splitlines():
        if line == "reject":
            raise ValueError("this record is rejected")
        if line.startswith("sleep:"):
            time.sleep(float(line[6:]))
            out.append("slept")
            continue
        out.append(str(2 * float(line.split(",")[0])))
    return "\\n".join(out), "text/csv"
"""

# A model server of the user's own (an exec: image) that answers SageMaker's
# GET /execution-parameters and logs each request's method and path.
BYO_SERVER = """
import http.server, json, os, sys

LOG = os.environ["REQUESTS_FILE"]


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _answer(self, status, body, content_type="application/json"):
        with open(LOG, "a") as f:
            f.write(f"{self.command} {self.path}\\n")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/ping":
            self._answer(200, b"{}")
        elif self.path == "/execution-parameters":
            answer = {"MaxConcurrentTransforms": 2, "BatchStrategy": "SingleRecord", "MaxPayloadInMB": 1}
            self._answer(200, json.dumps(answer).encode())
        else:
            self._answer(404, b"{}")

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self._answer(200, body.upper(), "text/plain")


PORT = int(os.environ["SAGEMAKER_BIND_TO_PORT"])
http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ColdbrewServer]:
    srv = ColdbrewServer(
        tmp_path_factory.mktemp("transform") / "data", env={"COLDBREW_IDLE_TIMEOUT_S": "2"}
    ).start()
    srv.client("s3").create_bucket(Bucket=BUCKET)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def forest(server: ColdbrewServer, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Model ``forest`` (a random forest on load_diabetes) and the fitted model."""
    path, model = sklearn_archive(tmp_path_factory.mktemp("forest") / "model.tar.gz")
    server.client("s3").put_object(Bucket=BUCKET, Key="models/forest.tar.gz", Body=path.read_bytes())
    server.client("sagemaker").create_model(
        ModelName="forest",
        PrimaryContainer={"Image": "coldbrew/sklearn", "ModelDataUrl": f"s3://{BUCKET}/models/forest.tar.gz"},
        ExecutionRoleArn=ROLE,
    )
    return model


@pytest.fixture(scope="module")
def calls(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("calls") / "calls.txt"


def create_scripted_model(server: ColdbrewServer, calls: Path) -> str:
    """Model ``scripted`` (SCRIPTED, logging its requests to ``calls``) in the server's S3."""
    server.client("s3").put_object(
        Bucket=BUCKET, Key="models/scripted.tar.gz", Body=tar_gz({"code/inference.py": SCRIPTED.encode()})
    )
    server.client("sagemaker").create_model(
        ModelName="scripted",
        PrimaryContainer={
            "Image": "coldbrew/sklearn",
            "ModelDataUrl": f"s3://{BUCKET}/models/scripted.tar.gz",
            "Environment": {"CALLS_FILE": str(calls)},
        },
        ExecutionRoleArn=ROLE,
    )
    return "scripted"


@pytest.fixture(scope="module")
def scripted(server: ColdbrewServer, calls: Path) -> str:
    return create_scripted_model(server, calls)


def rows() -> np.ndarray:
    features, _ = load_diabetes(return_X_y=True)
    return features


def csv_lines(features: np.ndarray) -> bytes:
    return "".join(",".join(repr(float(v)) for v in row) + "\n" for row in features).encode()


def put(server: ColdbrewServer, key: str, body: bytes) -> None:
    server.client("s3").put_object(Bucket=BUCKET, Key=key, Body=body)


def get(server: ColdbrewServer, key: str) -> bytes:
    body: bytes = server.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return body


def exists(server: ColdbrewServer, key: str) -> bool:
    try:
        server.client("s3").head_object(Bucket=BUCKET, Key=key)
        return True
    except ClientError:
        return False


def create_job(server: ColdbrewServer, name: str, model: str, input_uri: str, **extra: Any) -> None:
    source = {"S3DataType": extra.pop("data_type", "S3Prefix"), "S3Uri": input_uri}
    transform_input: dict[str, Any] = {"DataSource": {"S3DataSource": source}, "ContentType": "text/csv"}
    transform_input.update(extra.pop("input", {}))
    server.client("sagemaker").create_transform_job(
        TransformJobName=name,
        ModelName=model,
        TransformInput=transform_input,
        TransformOutput={"S3OutputPath": f"s3://{BUCKET}/{name}/out", **extra.pop("output", {})},
        TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": extra.pop("instances", 1)},
        **extra,
    )


def wait(server: ColdbrewServer, name: str, timeout: float = 120) -> dict[str, Any]:
    sm = server.client("sagemaker")
    waiter = sm.get_waiter("transform_job_completed_or_stopped")
    try:
        waiter.wait(TransformJobName=name, WaiterConfig={"Delay": 1, "MaxAttempts": int(timeout)})
    except Exception:  # the waiter's failure on Failed: the caller checks the status
        pass
    job: dict[str, Any] = sm.describe_transform_job(TransformJobName=name)
    return job


def predictions(body: bytes) -> np.ndarray:
    return np.array([float(line) for line in body.decode().split()])


# --- the data paths ---------------------------------------------------------------------------


def test_line_split_multi_record_job_writes_each_objects_predictions_in_order(
    server: ColdbrewServer, forest: Any
) -> None:
    features = rows()
    parts = {"lines/in/a.csv": features[:150], "lines/in/sub/b.csv": features[150:]}
    for key, part in parts.items():
        put(server, key, csv_lines(part))
    create_job(
        server,
        "lines",
        "forest",
        f"s3://{BUCKET}/lines/in/",
        input={"SplitType": "Line"},
        output={"AssembleWith": "Line", "Accept": "text/csv"},
        BatchStrategy="MultiRecord",
        MaxPayloadInMB=1,
        MaxConcurrentTransforms=2,
        instances=2,
    )
    job = wait(server, "lines")
    assert job["TransformJobStatus"] == "Completed", job.get("FailureReason")
    assert job["TransformStartTime"] <= job["TransformEndTime"]
    assert job["TransformInput"]["CompressionType"] == "None"
    assert job["ModelClientConfig"] == {"InvocationsTimeoutInSeconds": 600, "InvocationsMaxRetries": 3}
    for key, part in parts.items():
        out = key.replace("lines/in/", "lines/out/") + ".out"
        np.testing.assert_allclose(predictions(get(server, out)), forest.predict(part), rtol=1e-6)


def test_single_record_gzip_input(server: ColdbrewServer, forest: Any) -> None:
    features = rows()[:20]
    put(server, "gz/in/part.csv.gz", gzip.compress(csv_lines(features)))
    create_job(
        server,
        "gz",
        "forest",
        f"s3://{BUCKET}/gz/in/part",
        input={"SplitType": "Line", "CompressionType": "Gzip"},
        output={"AssembleWith": "Line", "Accept": "text/csv"},
        BatchStrategy="SingleRecord",
    )
    job = wait(server, "gz")
    assert job["TransformJobStatus"] == "Completed", job.get("FailureReason")
    np.testing.assert_allclose(
        predictions(get(server, "gz/out/part.csv.gz.out")), forest.predict(features), rtol=1e-6
    )


def test_manifest_input_names_the_objects(server: ColdbrewServer, forest: Any) -> None:
    features = rows()
    put(server, "manifest/data/x.csv", csv_lines(features[:5]))
    put(server, "manifest/data/y.csv", csv_lines(features[5:9]))
    put(server, "manifest/data/ignored.csv", b"not,a,number\n")
    manifest = [{"prefix": f"s3://{BUCKET}/manifest/data/"}, "y.csv", "x.csv"]
    put(server, "manifest/list.json", json.dumps(manifest).encode())
    create_job(
        server,
        "manifest",
        "forest",
        f"s3://{BUCKET}/manifest/list.json",
        data_type="ManifestFile",
        input={"SplitType": "Line"},
        output={"AssembleWith": "Line", "Accept": "text/csv"},
    )
    job = wait(server, "manifest")
    assert job["TransformJobStatus"] == "Completed", job.get("FailureReason")
    np.testing.assert_allclose(
        predictions(get(server, "manifest/out/x.csv.out")), forest.predict(features[:5])
    )
    np.testing.assert_allclose(
        predictions(get(server, "manifest/out/y.csv.out")), forest.predict(features[5:9])
    )
    assert not exists(server, "manifest/out/ignored.csv.out")


def test_input_filter_join_and_output_filter(server: ColdbrewServer, forest: Any) -> None:
    features = rows()[:10]
    # An id column the model must not see; the output keeps the id and the prediction only.
    lines = "".join(f"{i}," + ",".join(repr(float(v)) for v in row) + "\n" for i, row in enumerate(features))
    put(server, "join/in/ids.csv", lines.encode())
    create_job(
        server,
        "join",
        "forest",
        f"s3://{BUCKET}/join/in/",
        input={"SplitType": "Line"},
        output={"AssembleWith": "Line", "Accept": "text/csv"},
        BatchStrategy="MultiRecord",
        DataProcessing={"InputFilter": "$[1:]", "JoinSource": "Input", "OutputFilter": "$[0,-1]"},
    )
    job = wait(server, "join")
    assert job["TransformJobStatus"] == "Completed", job.get("FailureReason")
    out = [line.split(",") for line in get(server, "join/out/ids.csv.out").decode().split()]
    assert [int(float(row[0])) for row in out] == list(range(10))
    np.testing.assert_allclose([float(row[1]) for row in out], forest.predict(features), rtol=1e-6)


def test_byo_server_gets_execution_parameters(server: ColdbrewServer, tmp_path: Path) -> None:
    script = tmp_path / "server.py"
    script.write_text(BYO_SERVER)
    requests = tmp_path / "requests.txt"
    server.client("sagemaker").create_model(
        ModelName="byo",
        PrimaryContainer={
            "Image": f"exec:{sys.executable} {script}",
            "Environment": {"REQUESTS_FILE": str(requests)},
        },
        ExecutionRoleArn=ROLE,
    )
    put(server, "byo/in/words.txt", b"alpha\nbeta\ngamma\n")
    create_job(
        server,
        "byo",
        "byo",
        f"s3://{BUCKET}/byo/in/",
        input={"SplitType": "Line", "ContentType": "text/plain"},
        output={"AssembleWith": "Line"},
    )
    job = wait(server, "byo")
    assert job["TransformJobStatus"] == "Completed", job.get("FailureReason")
    assert get(server, "byo/out/words.txt.out") == b"ALPHA\nBETA\nGAMMA\n"
    seen = requests.read_text().splitlines()
    assert "GET /execution-parameters" in seen
    # The server asked for SingleRecord: one invocation per line.
    assert seen.count("POST /invocations") == 3


# --- faults -------------------------------------------------------------------------------------


def test_a_rejected_record_fails_the_job_after_its_retries(
    server: ColdbrewServer, scripted: str, calls: Path
) -> None:
    put(server, "reject/in/a.csv", b"1\n2\n")
    put(server, "reject/in/b.csv", b"3\nreject\n4\n")
    create_job(
        server,
        "reject",
        scripted,
        f"s3://{BUCKET}/reject/in/",
        input={"SplitType": "Line"},
        BatchStrategy="SingleRecord",
        ModelClientConfig={"InvocationsMaxRetries": 2},
    )
    job = wait(server, "reject")
    assert job["TransformJobStatus"] == "Failed"
    reason = job["FailureReason"]
    assert "record 2" in reason and "reject/in/b.csv" in reason and "this record is rejected" in reason
    assert calls.read_text().splitlines().count("reject|") == 3  # the first try and two retries
    assert exists(server, "reject/out/a.csv.out")  # finished before the failure, kept
    assert not exists(server, "reject/out/b.csv.out")


def test_stop_ends_the_job_within_seconds_and_keeps_finished_outputs(
    server: ColdbrewServer, scripted: str
) -> None:
    put(server, "stop/in/0-fast.csv", b"1\n")
    put(server, "stop/in/1-slow.csv", b"".join(b"sleep:0.5\n" for _ in range(60)))
    create_job(
        server,
        "stop",
        scripted,
        f"s3://{BUCKET}/stop/in/",
        input={"SplitType": "Line"},
        BatchStrategy="SingleRecord",
    )
    sm = server.client("sagemaker")
    deadline = time.monotonic() + 60
    while not exists(server, "stop/out/0-fast.csv.out"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    sm.stop_transform_job(TransformJobName="stop")
    assert sm.describe_transform_job(TransformJobName="stop")["TransformJobStatus"] in ("Stopping", "Stopped")
    job = wait(server, "stop", timeout=20)
    assert job["TransformJobStatus"] == "Stopped"
    assert get(server, "stop/out/0-fast.csv.out") == b"2.0"
    assert not exists(server, "stop/out/1-slow.csv.out")
    with pytest.raises(ClientError, match="only a job in progress can be stopped"):
        sm.stop_transform_job(TransformJobName="stop")
    listed = sm.list_transform_jobs(StatusEquals="Stopped")["TransformJobSummaries"]
    assert [j["TransformJobName"] for j in listed] == ["stop"]


def test_sigkill_mid_job_resumes_and_completes_with_every_output(tmp_path: Path) -> None:
    srv = ColdbrewServer(tmp_path / "data").start()
    try:
        srv.client("s3").create_bucket(Bucket=BUCKET)
        create_scripted_model(srv, tmp_path / "calls.txt")
        for i in range(8):
            put(srv, f"kill/in/{i}.csv", f"{i}\nsleep:0.2\n".encode())
        create_job(
            srv,
            "kill",
            "scripted",
            f"s3://{BUCKET}/kill/in/",
            input={"SplitType": "Line"},
            BatchStrategy="SingleRecord",
        )
        deadline = time.monotonic() + 60
        while not exists(srv, "kill/out/1.csv.out"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        srv.kill()
        srv.start()
        job = wait(srv, "kill")
        assert job["TransformJobStatus"] == "Completed", job.get("FailureReason")
        for i in range(8):
            assert get(srv, f"kill/out/{i}.csv.out") == f"{2.0 * i}slept".encode()
    finally:
        srv.stop()


def test_a_job_next_to_a_live_endpoint_leaves_it_serving(
    server: ColdbrewServer, forest: Any, scripted: str
) -> None:
    sm, runtime = server.client("sagemaker"), server.client("sagemaker-runtime")
    model_data = f"s3://{BUCKET}/models/forest.tar.gz"
    deploy_serverless(sm, "live-next-to-job", model_data, memory=1024, max_concurrency=2)
    wait_for_status(sm, "live-next-to-job", "InService")
    put(server, "busy/in/a.csv", b"".join(b"sleep:0.05\n" for _ in range(100)))
    create_job(
        server,
        "busy",
        scripted,
        f"s3://{BUCKET}/busy/in/",
        input={"SplitType": "Line"},
        BatchStrategy="SingleRecord",
        MaxConcurrentTransforms=2,
        instances=2,
    )
    row = ",".join(repr(float(v)) for v in rows()[0])
    answered = 0
    while sm.describe_transform_job(TransformJobName="busy")["TransformJobStatus"] == "InProgress":
        response = runtime.invoke_endpoint(EndpointName="live-next-to-job", ContentType="text/csv", Body=row)
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
        answered += 1
    assert answered > 0
    assert wait(server, "busy")["TransformJobStatus"] == "Completed"


# --- the API's answers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ModelName": "no-such-model"}, "Could not find model"),
        ({"MaxPayloadInMB": 101}, "MaxPayloadInMB 101"),
        ({"split": "TFRecord"}, "SplitType TFRecord is not supported"),
        ({"uri": "https://example.com/data"}, "is not an S3 URI"),
        ({"DataProcessing": {"InputFilter": "$[1:"}}, "InputFilter"),
    ],
)
def test_invalid_jobs_are_refused_with_a_validation_error(
    server: ColdbrewServer, forest: Any, change: dict[str, Any], message: str
) -> None:
    sm = server.client("sagemaker")
    request: dict[str, Any] = {
        "TransformJobName": "invalid",
        "ModelName": "forest",
        "TransformInput": {
            "DataSource": {
                "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": change.pop("uri", f"s3://{BUCKET}/x")}
            },
            "SplitType": change.pop("split", "Line"),
        },
        "TransformOutput": {"S3OutputPath": f"s3://{BUCKET}/invalid"},
        "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
        **change,
    }
    with pytest.raises(ClientError) as raised:
        sm.create_transform_job(**request)
    assert raised.value.response["Error"]["Code"] == "ValidationException"
    assert message in raised.value.response["Error"]["Message"]
    with pytest.raises(ClientError, match="Could not find requested job with name invalid"):
        sm.describe_transform_job(TransformJobName="invalid")


def test_more_instances_than_the_machine_holds_are_refused(server: ColdbrewServer, forest: Any) -> None:
    with pytest.raises(ClientError) as raised:
        create_job(server, "too-many", "forest", f"s3://{BUCKET}/x", instances=1_000_000)
    assert raised.value.response["Error"]["Code"] == "ResourceLimitExceeded"
    message = raised.value.response["Error"]["Message"]
    assert message.startswith("Transform job 'too-many' asks for 1,000,000 instances of ml.m5.large")
    assert "COLDBREW_MAX_INSTANCES_PER_VARIANT" in message
    with pytest.raises(ClientError, match="Could not find requested job with name too-many"):
        server.client("sagemaker").describe_transform_job(TransformJobName="too-many")


def test_duplicate_names_tags_and_listing(server: ColdbrewServer, forest: Any) -> None:
    sm = server.client("sagemaker")
    put(server, "tags/in/a.csv", csv_lines(rows()[:2]))
    create_job(
        server,
        "tagged",
        "forest",
        f"s3://{BUCKET}/tags/in/",
        input={"SplitType": "Line"},
        Tags=[{"Key": "team", "Value": "ml"}],
    )
    with pytest.raises(ClientError, match="Cannot create already existing transform job"):
        create_job(server, "tagged", "forest", f"s3://{BUCKET}/tags/in/")
    arn = sm.describe_transform_job(TransformJobName="tagged")["TransformJobArn"]
    assert arn.endswith(":transform-job/tagged")
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "team", "Value": "ml"}]
    assert wait(server, "tagged")["TransformJobStatus"] == "Completed"
    names = []
    paginator = sm.get_paginator("list_transform_jobs")
    for page in paginator.paginate(SortBy="Name", SortOrder="Ascending", PaginationConfig={"PageSize": 2}):
        names += [j["TransformJobName"] for j in page["TransformJobSummaries"]]
    assert names == sorted(names) and "tagged" in names
