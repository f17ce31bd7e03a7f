"""The transform-job operations of the control API: CreateTransformJob, DescribeTransformJob,
ListTransformJobs and StopTransformJob (tags go through the shared AddTags/ListTags/DeleteTags).

The jobs themselves run in ``transform.jobs``; this module records what was asked and answers in
the shapes of botocore's service model. The composition root adds these operations to the control
plane's (the control package knows nothing of transform jobs but their table, for tags).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Protocol

from coldbrew.control import arns
from coldbrew.control.paging import ListQuery, list_rows
from coldbrew.control.store import dumps, loads
from coldbrew.errors import ValidationException
from coldbrew.transform.jobstore import IN_PROGRESS, STOPPING, JobStore
from coldbrew.transform.pipeline import validate_data_processing
from coldbrew.transform.spec import (
    DEFAULT_INVOCATION_TIMEOUT_S,
    DEFAULT_MAX_PAYLOAD_MB,
    DEFAULT_MAX_RETRIES,
    TransformJobSpec,
)

if TYPE_CHECKING:
    from coldbrew.control.service import ControlPlane, RequestContext


class JobRunner(Protocol):
    """What runs the jobs (``coldbrew.transform.jobs.TransformJobs``)."""

    def submit(self, name: str) -> None: ...

    def stop(self, name: str) -> None: ...


def _not_found(name: str) -> ValidationException:
    return ValidationException(f"Could not find requested job with name {name[:63]}")


class TransformJobsApi:
    def __init__(self, control: ControlPlane, runner: JobRunner | None) -> None:
        self.control = control
        self.runner = runner
        self.operations = {
            "CreateTransformJob": self.create_transform_job,
            "DescribeTransformJob": self.describe_transform_job,
            "ListTransformJobs": self.list_transform_jobs,
            "StopTransformJob": self.stop_transform_job,
        }

    def create_transform_job(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        spec = TransformJobSpec.from_request(request)
        _check_data_processing(spec)
        self.control.quotas.check_instances(
            "", spec.instance_type, spec.instance_count, subject=f"Transform job '{spec.name}'"
        )
        model = loads(self.control._row(ctx, arns.MODEL, spec.model_name)["spec"])
        now = time.time()
        arn = self.control._insert(
            ctx,
            arns.TRANSFORM_JOB,
            spec.name,
            {
                "modified_at": now,
                "status": IN_PROGRESS,
                "spec": dumps({"Request": request, "Model": model}),
                "model_name": spec.model_name,
                "instance_type": spec.instance_type,
                "instance_count": spec.instance_count,
            },
            request.get("Tags") or [],
        )
        if self.runner is not None:
            self.runner.submit(spec.name)
        return {"TransformJobArn": arn}

    def _job(self, name: str) -> Any:
        row = self.control.store.query_one("SELECT * FROM transform_jobs WHERE name_key = ?", [name.lower()])
        if row is None:
            raise _not_found(name)
        return row

    def describe_transform_job(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self._job(request["TransformJobName"])
        asked = loads(row["spec"])["Request"]
        answer: dict[str, Any] = {
            "TransformJobName": row["name"],
            "TransformJobArn": row["arn"],
            "TransformJobStatus": row["status"],
            "ModelName": asked["ModelName"],
            "MaxPayloadInMB": asked.get("MaxPayloadInMB", DEFAULT_MAX_PAYLOAD_MB),
            "ModelClientConfig": {
                "InvocationsTimeoutInSeconds": DEFAULT_INVOCATION_TIMEOUT_S,
                "InvocationsMaxRetries": DEFAULT_MAX_RETRIES,
                **(asked.get("ModelClientConfig") or {}),
            },
            "TransformInput": {
                "CompressionType": "None",
                "SplitType": "None",
                **asked["TransformInput"],
            },
            "TransformOutput": {"AssembleWith": "None", **asked["TransformOutput"]},
            "TransformResources": asked["TransformResources"],
            "CreationTime": row["created_at"],
        }
        for member in (
            "MaxConcurrentTransforms",
            "BatchStrategy",
            "Environment",
            "DataProcessing",
            "DataCaptureConfig",
            "ExperimentConfig",
        ):
            if asked.get(member) is not None:
                answer[member] = asked[member]
        if row["failure_reason"]:
            answer["FailureReason"] = row["failure_reason"]
        if row["started_at"] is not None:
            answer["TransformStartTime"] = row["started_at"]
        if row["ended_at"] is not None:
            answer["TransformEndTime"] = row["ended_at"]
        return answer

    def list_transform_jobs(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        query = ListQuery.from_request("transform_jobs", request)
        query.time_filter("modified_at", "<", request.get("LastModifiedTimeBefore"))
        query.time_filter("modified_at", ">", request.get("LastModifiedTimeAfter"))
        query.equals("status", request.get("StatusEquals"))
        rows, token = list_rows(self.control.store, query)

        def summary(row: Any) -> dict[str, Any]:
            item: dict[str, Any] = {
                "TransformJobName": row["name"],
                "TransformJobArn": row["arn"],
                "CreationTime": row["created_at"],
                "LastModifiedTime": row["modified_at"],
                "TransformJobStatus": row["status"],
            }
            if row["ended_at"] is not None:
                item["TransformEndTime"] = row["ended_at"]
            if row["failure_reason"]:
                item["FailureReason"] = row["failure_reason"]
            return item

        return self.control._page(rows, token, "TransformJobSummaries", summary)

    def stop_transform_job(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        name = request["TransformJobName"]
        row = self._job(name)
        if row["status"] == STOPPING:
            return {}
        if not JobStore(self.control.store).request_stop(name):
            raise ValidationException(
                f"Transform job {row['name']} is {row['status']}: only a job in progress can be stopped."
            )
        if self.runner is not None:
            self.runner.stop(name)
        return {}


def _check_data_processing(spec: TransformJobSpec) -> None:
    try:
        validate_data_processing(spec)
    except ValueError as e:
        raise ValidationException(str(e)) from None
