"""The SageMaker Python SDK's ``Transformer`` against coldbrew's batch transform, in both SDK majors
the SDK tests settle on, as their documentation shows it ("Batch Transform"):
``model.transformer(...).transform(data, content_type=..., split_type=...)``.

- 2.x: ``sagemaker.model.Model(...).transformer(...)``, which creates the model first, and
  ``sagemaker.transformer.Transformer(model_name=...)`` for a model that exists, with gzip input,
  JSON Lines, the DataProcessing filters and the input joined to the output.
- 3.x: ``ModelBuilder.build()`` then ``builder.transformer(...)`` (``sagemaker.core.transformer``),
  whose ``transform()`` waits through sagemaker-core's ``TransformJob.wait``.

``transform()`` waits by default and, with ``logs=True`` (its default), 2.x re-reads the job's
status only every 30 s; these tests pass ``logs=False`` in 2.x, where the wait polls every 5 s.
3.x's default ``logs=True`` is exercised as it is: its log reader tolerates a job that wrote no
``/aws/sagemaker/TransformJobs`` stream.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_diabetes

from tests.sdk.conftest import BUCKET, SDK, s3_client
from tests.sdk.test_sdk3 import CLIENT, MODEL_BUILDER, SKLEARN_IMAGE
from tests.support import ColdbrewServer, sklearn_archive

SESSION = """
import boto3, sagemaker
boto_session = boto3.Session()
session = sagemaker.Session(boto_session=boto_session, default_bucket=BUCKET)
s3 = boto_session.client("s3")


def read_output(url):
    bucket, key = url[len("s3://"):].split("/", 1)
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
"""

ROWS = 40


@pytest.fixture(scope="module")
def forest(server: ColdbrewServer, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Any, np.ndarray]:
    """A random forest's archive in the test bucket, the model, and rows as CSV and JSON Lines input."""
    archive, model = sklearn_archive(tmp_path_factory.mktemp("transform-forest") / "model.tar.gz")
    s3 = s3_client(server)
    s3.upload_file(str(archive), BUCKET, "sdk-transform/forest/model.tar.gz")
    rows = load_diabetes(return_X_y=True)[0][:ROWS]
    for part, half in enumerate((rows[: ROWS // 2], rows[ROWS // 2 :])):
        csv = "".join(",".join(repr(float(v)) for v in row) + "\n" for row in half)
        s3.put_object(Bucket=BUCKET, Key=f"sdk-transform/csv/part-{part}.csv", Body=csv.encode())
    lines = "".join(json.dumps({"id": i, "features": row.tolist()}) + "\n" for i, row in enumerate(rows))
    s3.put_object(Bucket=BUCKET, Key="sdk-transform/jsonl/rows.jsonl.gz", Body=gzip.compress(lines.encode()))
    return f"s3://{BUCKET}/sdk-transform/forest/model.tar.gz", model, rows


def _column(text: str) -> list[float]:
    return [float(line) for line in text.splitlines() if line.strip()]


def test_sdk2_model_transformer_multirecord_csv(sdk2: SDK, forest: tuple[str, Any, np.ndarray]) -> None:
    url, model, rows = forest
    result = sdk2.run(
        SESSION
        + f"""
from sagemaker.model import Model
model = Model(image_uri={SKLEARN_IMAGE!r}, model_data={url!r}, role=ROLE, sagemaker_session=session)
transformer = model.transformer(instance_count=1, instance_type="ml.m5.large", strategy="MultiRecord",
                                assemble_with="Line", accept="text/csv",
                                output_path=f"s3://{{BUCKET}}/sdk-transform/out-sdk2")
transformer.transform(f"s3://{{BUCKET}}/sdk-transform/csv/", content_type="text/csv", split_type="Line",
                      wait=True, logs=False)
job = session.describe_transform_job(transformer.latest_transform_job.name)
outputs = [read_output(f"s3://{{BUCKET}}/sdk-transform/out-sdk2/part-{{i}}.csv.out") for i in (0, 1)]
emit({{"status": job["TransformJobStatus"], "strategy": job["BatchStrategy"],
       "model": job["ModelName"], "outputs": outputs}})
"""
    )
    assert result["status"] == "Completed" and result["strategy"] == "MultiRecord"
    assert result["model"].startswith("sagemaker-scikit-learn")  # made by transformer() from the image
    got = _column(result["outputs"][0]) + _column(result["outputs"][1])
    np.testing.assert_allclose(got, model.predict(rows), rtol=1e-6)


def test_sdk2_transformer_of_an_existing_model_with_filters_and_gzip(
    sdk2: SDK, forest: tuple[str, Any, np.ndarray]
) -> None:
    url, model, rows = forest
    sm = sdk2.server.client()
    sm.create_model(
        ModelName="sdk2-transform-existing",
        ExecutionRoleArn="arn:aws:iam::123456789012:role/SageMakerRole",
        PrimaryContainer={"Image": SKLEARN_IMAGE, "ModelDataUrl": url},
    )
    result = sdk2.run(
        SESSION
        + """
from sagemaker.transformer import Transformer
transformer = Transformer(model_name="sdk2-transform-existing", instance_count=1,
                          instance_type="ml.m5.large", strategy="SingleRecord", assemble_with="Line",
                          accept="application/jsonlines", sagemaker_session=session,
                          output_path=f"s3://{BUCKET}/sdk-transform/out-sdk2-jsonl")
transformer.transform(f"s3://{BUCKET}/sdk-transform/jsonl/rows.jsonl.gz",
                      content_type="application/jsonlines", split_type="Line", compression_type="Gzip",
                      input_filter="$.features", join_source="Input",
                      output_filter="$['id','SageMakerOutput']", job_name="sdk2-transform-filters",
                      wait=True, logs=False)
job = session.describe_transform_job(transformer.latest_transform_job.name)
emit({"status": job["TransformJobStatus"], "processing": job["DataProcessing"],
      "output": read_output(f"s3://{BUCKET}/sdk-transform/out-sdk2-jsonl/rows.jsonl.gz.out")})
"""
    )
    assert result["status"] == "Completed"
    assert result["processing"] == {
        "InputFilter": "$.features",
        "OutputFilter": "$['id','SageMakerOutput']",
        "JoinSource": "Input",
    }
    records = [json.loads(line) for line in result["output"].splitlines()]
    # In input order, each with its own id: the filter keeps the two members of the joined object.
    assert [list(r) for r in records] == [["id", "SageMakerOutput"]] * ROWS
    assert [r["id"] for r in records] == list(range(ROWS))
    got = [float(np.ravel(r["SageMakerOutput"])[0]) for r in records]
    np.testing.assert_allclose(got, model.predict(rows), rtol=1e-6)


def test_sdk3_model_builder_transformer(sdk3: SDK, forest: tuple[str, Any, np.ndarray]) -> None:
    url, model, rows = forest
    result = sdk3.run(
        CLIENT
        + MODEL_BUILDER
        + f"""
import boto3
builder = ModelBuilder(s3_model_data_url={url!r}, image_uri={SKLEARN_IMAGE!r}, role_arn=ROLE,
                       model_path=os.path.abspath("model-builder"))
builder.build(model_name="sdk3-transform")
transformer = builder.transformer(instance_count=1, instance_type="ml.m5.large", strategy="MultiRecord",
                                  assemble_with="Line", accept="text/csv",
                                  output_path=f"s3://{{BUCKET}}/sdk-transform/out-sdk3")
transformer.transform(f"s3://{{BUCKET}}/sdk-transform/csv/", content_type="text/csv", split_type="Line",
                      job_name="sdk3-transform")
job = transformer.latest_transform_job
job.refresh()
s3 = boto3.client("s3")
keys = [f"sdk-transform/out-sdk3/part-{{i}}.csv.out" for i in (0, 1)]
outputs = [s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode() for key in keys]
emit({{"status": job.transform_job_status, "model": job.model_name, "outputs": outputs, "reached": REACHED}})
"""
    )
    assert result["reached"] == []
    assert result["status"] == "Completed" and result["model"] == "sdk3-transform"
    got = _column(result["outputs"][0]) + _column(result["outputs"][1])
    np.testing.assert_allclose(got, model.predict(rows), rtol=1e-6)
