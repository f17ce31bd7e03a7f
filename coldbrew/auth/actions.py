"""Which IAM action on which resource a request is, for its key's policy to allow or deny.

Pure: a function of what the request says. Names are IAM's: ``sagemaker:<Operation>`` (the
X-Amz-Target operation, ``sagemaker:InvokeEndpoint`` for the runtime), ``s3:GetObject`` and
friends by method, path and subresource, ``cloudwatch:<Operation>``, ``logs:<Operation>`` and
``cloudformation:<Action>``.
Resources are the ARNs AWS checks: ``arn:aws:sagemaker:<region>:<account>:endpoint/<name>``
(names lower-cased, as SageMaker forms ARNs), ``arn:aws:s3:::<bucket>`` and
``arn:aws:s3:::<bucket>/<key>``, ``arn:aws:logs:<region>:<account>:log-group:<name>:*``. An
operation on no single resource (ListEndpoints, CloudWatch's metrics, ListBuckets) has resource
None, which only ``"Resource": "*"`` covers, as IAM's ``*``-only actions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote

from coldbrew.s3.http import virtual_host_bucket

SAGEMAKER, S3, CLOUDWATCH, LOGS = "sagemaker", "s3", "monitoring", "logs"
CLOUDFORMATION = "cloudformation"
METRICS_ACTION = "coldbrew:GetMetrics"
"""``GET /metrics`` (Prometheus): no AWS service has it, so coldbrew names it."""
DASHBOARD_ACTION = "coldbrew:ViewDashboard"
"""The web dashboard under ``/ui`` (HTTP Basic from a browser, or signed)."""


@dataclass(frozen=True)
class Need:
    """One permission a request needs: ``action`` on ``resource`` (None: no single resource)."""

    action: str
    resource: str | None


@dataclass(frozen=True)
class RequestFacts:
    service: str | None  # the signing name the request is for; None: the gateway's own routes
    method: str
    path: str  # percent-decoded
    query: Mapping[str, str]
    headers: Mapping[str, str]  # lower-case names
    body: bytes | None  # None when not read (S3's, streamed)
    region: str
    account: str


_VERBS = re.compile(r"^(Create|Describe|Delete|Update|Stop|Start|Retry)(?P<type>[A-Z][A-Za-z]*)$")
# SageMaker's name fields and the resource type they name, in the order a body is searched when
# the operation's own name does not say (UpdateEndpointWeightsAndCapacities names an endpoint).
_SAGEMAKER_NAMES = (
    ("EndpointName", "endpoint"),
    ("EndpointConfigName", "endpoint-config"),
    ("ModelName", "model"),
    ("TransformJobName", "transform-job"),
    ("TrainingJobName", "training-job"),
    ("ProcessingJobName", "processing-job"),
    ("InferenceComponentName", "inference-component"),
)


def _kebab(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def _json_body(body: bytes | None) -> dict[str, Any]:
    if not body:
        return {}
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return {}  # the service refuses it with its own error; only a "*" policy lets it get there
    return document if isinstance(document, dict) else {}


def sagemaker_arn(region: str, account: str, resource_type: str, name: str) -> str:
    return f"arn:aws:sagemaker:{region}:{account}:{resource_type}/{name.lower()}"


def sagemaker_control(operation: str, body: dict[str, Any], region: str, account: str) -> Need:
    action = f"sagemaker:{operation}"
    arn = body.get("ResourceArn")
    if isinstance(arn, str) and operation in ("AddTags", "DeleteTags", "ListTags"):
        return Need(action, arn)
    verb = _VERBS.match(operation)
    if verb:
        field = f"{verb['type']}Name"
        name = body.get(field)
        if isinstance(name, str) and name:
            return Need(action, sagemaker_arn(region, account, _kebab(verb["type"]), name))
    for field, resource_type in _SAGEMAKER_NAMES:
        name = body.get(field)
        if isinstance(name, str) and name:
            return Need(action, sagemaker_arn(region, account, resource_type, name))
    return Need(action, None)


def _s3_object_needs(
    method: str, query: Mapping[str, str], headers: Mapping[str, str], arn: str
) -> list[Need]:
    upload = "uploadId" in query
    if method in ("GET", "HEAD"):
        return [Need("s3:ListMultipartUploadParts" if upload and method == "GET" else "s3:GetObject", arn)]
    if method == "DELETE":
        return [Need("s3:AbortMultipartUpload" if upload else "s3:DeleteObject", arn)]
    needs = [Need("s3:PutObject", arn)]  # PUT (object, part, copy) and POST (create, complete)
    source = headers.get("x-amz-copy-source")
    if method == "PUT" and source:
        path = unquote(source.split("?", 1)[0]).lstrip("/")
        needs.append(Need("s3:GetObject", f"arn:aws:s3:::{path}"))
    return needs


def _s3_bucket_need(method: str, query: Mapping[str, str], arn: str) -> Need:
    if method in ("GET", "HEAD"):
        if "location" in query:
            return Need("s3:GetBucketLocation", arn)
        if "versioning" in query:
            return Need("s3:GetBucketVersioning", arn)
        if "uploads" in query:
            return Need("s3:ListBucketMultipartUploads", arn)
        return Need("s3:ListBucket", arn)  # ListObjects(V2), HeadBucket
    if method == "PUT":
        return Need("s3:PutBucketVersioning" if "versioning" in query else "s3:CreateBucket", arn)
    if method == "DELETE":
        return Need("s3:DeleteBucket", arn)
    # POST ?delete (DeleteObjects): IAM checks s3:DeleteObject per key; coldbrew checks it on the
    # whole bucket rather than parse the list before the store does.
    return Need("s3:DeleteObject", f"{arn}/*")


def s3_needs(facts: RequestFacts, hosts: Iterable[str]) -> list[Need]:
    bucket = virtual_host_bucket(facts.headers.get("host", ""), hosts)
    if bucket is None:
        name, slash, rest = facts.path.lstrip("/").partition("/")
        bucket, key = name or None, (rest if slash and rest else None)
    else:
        key = facts.path[1:] or None
    if bucket is None:
        return [Need("s3:ListAllMyBuckets", None)]
    arn = f"arn:aws:s3:::{bucket}"
    if key is None:
        return [_s3_bucket_need(facts.method, facts.query, arn)]
    return _s3_object_needs(facts.method, facts.query, facts.headers, f"{arn}/{key}")


_CLOUDWATCH_TARGET = "GraniteServiceVersion20100801."
_CBOR_OPERATION = re.compile(r"^/service/GraniteServiceVersion20100801/operation/(?P<op>[A-Za-z]+)$")


def cloudwatch_operation(facts: RequestFacts) -> str:
    target = facts.headers.get("x-amz-target", "")
    if target.startswith(_CLOUDWATCH_TARGET):
        return target[len(_CLOUDWATCH_TARGET) :]
    match = _CBOR_OPERATION.match(facts.path)
    if match:
        return match["op"]
    if facts.body:  # the query protocol: Action=<Operation>&...
        try:
            form = dict(parse_qsl(facts.body.decode("utf-8"), max_num_fields=10_000))
        except (UnicodeDecodeError, ValueError):
            form = {}
        if form.get("Action"):
            return form["Action"]
    return facts.query.get("Action", "Unknown")


def logs_need(operation: str, body: dict[str, Any], region: str, account: str) -> Need:
    action = f"logs:{operation}"
    for field in ("logGroupName", "logGroupIdentifier"):
        name = body.get(field)
        if isinstance(name, str) and name:
            if name.startswith("arn:"):
                return Need(action, name if name.endswith(":*") else f"{name}:*")
            return Need(action, f"arn:aws:logs:{region}:{account}:log-group:{name}:*")
    return Need(action, None)


# A stack operation creates, updates and deletes SageMaker resources with the caller's rights, as
# CloudFormation does without a service role: these operations also need the SageMaker actions the
# stack's steps take, on every resource (the stack's resources' names are not known beforehand).
_STACK_MUTATIONS = frozenset({"CreateStack", "UpdateStack", "DeleteStack", "ExecuteChangeSet"})
_STACK_STEPS = (
    "CreateModel",
    "DeleteModel",
    "CreateEndpointConfig",
    "DeleteEndpointConfig",
    "CreateEndpoint",
    "UpdateEndpoint",
    "DeleteEndpoint",
    "AddTags",
    "DeleteTags",
)


def cloudformation_needs(facts: RequestFacts) -> list[Need]:
    """``cloudformation:<Action>`` on the stack it names (``arn:aws:cloudformation:<region>:
    <account>:stack/<name>/*``), plus the SageMaker actions of the steps a mutation takes."""
    try:
        form = dict(parse_qsl((facts.body or b"").decode("utf-8"), max_num_fields=10_000))
    except (UnicodeDecodeError, ValueError):
        form = {}
    action = form.get("Action") or facts.query.get("Action", "Unknown")
    name = form.get("StackName")
    resource = None
    if name:
        resource = (
            name
            if name.startswith("arn:")
            else (f"arn:aws:cloudformation:{facts.region}:{facts.account}:stack/{name}/*")
        )
    needs = [Need(f"cloudformation:{action}", resource)]
    if action in _STACK_MUTATIONS:
        needs += [Need(f"sagemaker:{step}", None) for step in _STACK_STEPS]
    return needs


_INVOKE = re.compile(r"^/endpoints/(?P<name>[^/]+)/(?P<kind>invocations|async-invocations)$")


def needs_for(facts: RequestFacts, s3_hosts: Iterable[str] = ()) -> list[Need]:
    """What ``facts`` needs allowed; [] for a request that needs only a valid signature (``/ping``,
    a route the gateway does not have, a service coldbrew does not serve)."""
    if facts.service == S3:
        return s3_needs(facts, s3_hosts)
    if facts.service == CLOUDWATCH:
        return [Need(f"cloudwatch:{cloudwatch_operation(facts)}", None)]
    if facts.service == CLOUDFORMATION:
        return cloudformation_needs(facts)
    if facts.service == LOGS:
        target = facts.headers.get("x-amz-target", "")
        operation = target.split(".", 1)[1] if "." in target else "Unknown"
        return [logs_need(operation, _json_body(facts.body), facts.region, facts.account)]
    if facts.service not in (None, SAGEMAKER):
        return []
    invoke = _INVOKE.match(facts.path) if facts.method == "POST" else None
    if invoke:
        action = (
            "sagemaker:InvokeEndpoint" if invoke["kind"] == "invocations" else "sagemaker:InvokeEndpointAsync"
        )
        return [Need(action, sagemaker_arn(facts.region, facts.account, "endpoint", invoke["name"]))]
    target = facts.headers.get("x-amz-target", "")
    if facts.method == "POST" and facts.path == "/" and target.startswith("SageMaker."):
        operation = target[len("SageMaker.") :]
        return [sagemaker_control(operation, _json_body(facts.body), facts.region, facts.account)]
    if facts.path == "/metrics":
        return [Need(METRICS_ACTION, None)]
    if facts.path == "/ui" or facts.path.startswith("/ui/"):
        return [Need(DASHBOARD_ACTION, None)]
    return []
