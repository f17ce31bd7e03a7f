"""A server with auth on, driven by real boto3 clients signing with real keys."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import httpx
import pytest
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.auth.conftest import AuthServer, create_key, keys
from tests.auth.signing import presign_at, presign_v2, sign_at, signed_chunked_put
from tests.support import REPO, deploy_serverless, wait_for_status

ROW = "0.03,0.05,0.06,0.02,-0.04,-0.03,-0.04,-0.002,0.02,-0.01"


def _code(call: Any) -> tuple[str, int, str]:
    with pytest.raises(ClientError) as caught:
        call()
    error = caught.value.response
    return (
        error["Error"]["Code"],
        error["ResponseMetadata"]["HTTPStatusCode"],
        error["Error"].get("Message", ""),
    )


def _stamp(epoch: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(epoch))


@pytest.fixture(scope="module")
def endpoint(auth_server: AuthServer, admin: dict[str, str], model_archive: tuple[Path, Any]) -> str:
    """Endpoint 'fraud', deployed from the embedded S3 (which the server reads with its own key)."""
    s3 = auth_server.signed("s3", admin)
    s3.create_bucket(Bucket="models")
    s3.upload_file(str(model_archive[0]), "models", "forest/model.tar.gz")
    sm = auth_server.signed("sagemaker", admin)
    deploy_serverless(sm, "fraud", "s3://models/forest/model.tar.gz")
    wait_for_status(sm, "fraud", "InService")
    return "fraud"


def test_signed_requests_to_every_service_pass(auth_server: AuthServer, admin: dict[str, str]) -> None:
    assert auth_server.signed("sagemaker", admin).list_endpoints()["Endpoints"] is not None
    s3 = auth_server.signed("s3", admin)
    s3.create_bucket(Bucket="every")
    s3.put_object(Bucket="every", Key="a b+c/€.txt", Body=b"hello")
    assert s3.get_object(Bucket="every", Key="a b+c/€.txt")["Body"].read() == b"hello"
    assert s3.list_objects_v2(Bucket="every", Prefix="a b+c/")["KeyCount"] == 1
    assert "logGroups" in auth_server.signed("logs", admin).describe_log_groups()
    assert "Metrics" in auth_server.signed("cloudwatch", admin).list_metrics()


def _cloudwatch(server: AuthServer, key: dict[str, str], protocol: str, models: Path) -> Any:
    """A CloudWatch client speaking ``protocol`` with botocore's own serializer for it (see
    tests/cloudwatch/clients.py): botocore 1.43 itself picks JSON."""
    session = botocore.session.get_session()
    data = copy.deepcopy(botocore.session.get_session().get_service_data("cloudwatch"))
    data["metadata"]["protocol"] = protocol
    data["metadata"]["protocols"] = [protocol]
    version_dir = models / protocol / "cloudwatch" / data["metadata"]["apiVersion"]
    version_dir.mkdir(parents=True, exist_ok=True)
    (version_dir / "service-2.json").write_text(json.dumps(data))
    session.get_component("data_loader").search_paths.insert(0, str(models / protocol))
    return boto3.session.Session(botocore_session=session).client(
        "cloudwatch", endpoint_url=server.url, region_name="us-east-1",
        aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"],
        config=Config(retries={"total_max_attempts": 1}),
    )  # fmt: skip


@pytest.mark.parametrize("protocol", ["smithy-rpc-v2-cbor", "json", "query"])
def test_cloudwatch_get_metric_data_in_each_protocol(
    auth_server: AuthServer, admin: dict[str, str], protocol: str, tmp_path: Path
) -> None:
    query = {
        "Id": "m",
        "MetricStat": {
            "Metric": {"Namespace": "AWS/SageMaker", "MetricName": "Invocations"},
            "Period": 60,
            "Stat": "Sum",
        },
    }
    now = time.time()
    client = _cloudwatch(auth_server, admin, protocol, tmp_path)
    result = client.get_metric_data(MetricDataQueries=[query], StartTime=now - 600, EndTime=now)
    assert result["MetricDataResults"][0]["Id"] == "m"
    wrong = _cloudwatch(auth_server, {**admin, "SecretAccessKey": "wrong"}, protocol, tmp_path)
    code, status, _ = _code(
        lambda: wrong.get_metric_data(MetricDataQueries=[query], StartTime=now - 60, EndTime=now)
    )
    assert status == 403
    assert code == ("SignatureDoesNotMatch" if protocol == "query" else "InvalidSignatureException")


def test_a_wrong_secret_is_refused_in_each_services_words(
    auth_server: AuthServer, admin: dict[str, str]
) -> None:
    wrong = {**admin, "SecretAccessKey": "not-" + admin["SecretAccessKey"]}
    assert _code(auth_server.signed("sagemaker", wrong).list_endpoints)[:2] == (
        "InvalidSignatureException",
        403,
    )
    runtime = auth_server.signed("sagemaker-runtime", wrong)
    assert _code(lambda: runtime.invoke_endpoint(EndpointName="fraud", Body=ROW, ContentType="text/csv"))[
        0
    ] == ("InvalidSignatureException")
    assert _code(auth_server.signed("s3", wrong).list_buckets)[:2] == ("SignatureDoesNotMatch", 403)
    assert _code(auth_server.signed("logs", wrong).describe_log_groups)[0] == "InvalidSignatureException"
    # The secret appears nowhere in what the server wrote.
    assert admin["SecretAccessKey"] not in auth_server.log()


def test_an_unknown_key_is_refused(auth_server: AuthServer) -> None:
    stranger = {"AccessKeyId": "AKCBNOSUCHKEY0000000", "SecretAccessKey": "x" * 40}
    code, status, message = _code(auth_server.signed("sagemaker", stranger).list_endpoints)
    assert (code, status) == ("UnrecognizedClientException", 403) and "AKCBNOSUCHKEY0000000" in message
    assert _code(auth_server.signed("s3", stranger).list_buckets)[:2] == ("InvalidAccessKeyId", 403)
    assert _code(auth_server.signed("cloudwatch", stranger).list_metrics)[0] == "UnrecognizedClientException"


def test_unsigned_requests_are_refused(auth_server: AuthServer) -> None:
    response = httpx.post(
        auth_server.url + "/",
        headers={"X-Amz-Target": "SageMaker.ListEndpoints", "Content-Type": "application/x-amz-json-1.1"},
        content=b"{}",
    )
    assert response.status_code == 403
    assert response.json()["__type"] == "MissingAuthenticationTokenException"
    assert "coldbrew keys create" in response.json()["message"]
    metrics = httpx.get(auth_server.url + "/metrics")  # a scraper or browser is asked for credentials
    assert metrics.status_code == 401 and metrics.headers["www-authenticate"].startswith("Basic")
    assert httpx.get(auth_server.url + "/ping").status_code == 200  # a health check says nothing


def test_ping_signed_for_s3_is_bucket_ping_and_checked(
    auth_server: AuthServer, admin: dict[str, str]
) -> None:
    s3 = auth_server.signed("s3", admin)
    s3.create_bucket(Bucket="ping")
    s3.put_object(Bucket="ping", Key="secret.txt", Body=b"x")
    wrong = auth_server.signed("s3", {**admin, "SecretAccessKey": "wrong"})
    assert _code(lambda: wrong.list_objects(Bucket="ping"))[:2] == ("SignatureDoesNotMatch", 403)
    assert [o["Key"] for o in s3.list_objects(Bucket="ping")["Contents"]] == ["secret.txt"]


def test_metrics_with_a_signature_or_basic_credentials(
    auth_server: AuthServer, admin: dict[str, str]
) -> None:
    basic = httpx.get(auth_server.url + "/metrics", auth=(admin["AccessKeyId"], admin["SecretAccessKey"]))
    assert basic.status_code == 200 and "coldbrew" in basic.text
    assert httpx.get(auth_server.url + "/metrics", auth=(admin["AccessKeyId"], "wrong")).status_code == 403
    request = AWSRequest(method="GET", url=auth_server.url + "/metrics")
    sign_at(request, admin, "sagemaker", _stamp(time.time()))
    signed = httpx.get(auth_server.url + "/metrics", headers=dict(request.headers.items()))
    assert signed.status_code == 200


def test_a_clock_more_than_15_minutes_off_is_refused(auth_server: AuthServer, admin: dict[str, str]) -> None:
    url = auth_server.url + "/"
    for offset, words in ((-16 * 60, "Signature expired"), (16 * 60, "Signature not yet current")):
        request = AWSRequest(
            method="POST",
            url=url,
            data=b"{}",
            headers={"X-Amz-Target": "SageMaker.ListEndpoints", "Content-Type": "application/x-amz-json-1.1"},
        )
        sign_at(request, admin, "sagemaker", _stamp(time.time() + offset))
        response = httpx.post(url, headers=dict(request.headers.items()), content=b"{}")
        assert response.status_code == 403
        assert response.json()["__type"] == "InvalidSignatureException"
        assert words in response.json()["message"]
    # Within the 15 minutes it is fine.
    request = AWSRequest(
        method="POST", url=url, data=b"{}", headers={"X-Amz-Target": "SageMaker.ListEndpoints"}
    )
    sign_at(request, admin, "sagemaker", _stamp(time.time() - 10 * 60))
    assert httpx.post(url, headers=dict(request.headers.items()), content=b"{}").status_code == 200
    # S3 says it its way.
    s3_request = AWSRequest(method="GET", url=auth_server.url + "/")
    sign_at(s3_request, admin, "s3", _stamp(time.time() - 20 * 60))
    response = httpx.get(auth_server.url + "/", headers=dict(s3_request.headers.items()))
    assert response.status_code == 403 and "<Code>RequestTimeTooSkewed</Code>" in response.text


def test_presigned_urls(auth_server: AuthServer, admin: dict[str, str]) -> None:
    s3 = auth_server.signed("s3", admin)
    s3.create_bucket(Bucket="shared")
    s3.put_object(Bucket="shared", Key="report 1.csv", Body=b"a,b\n")
    # boto3's default (SigV2, as boto3 presigns S3 URLs) and SigV4 both verify.
    default = s3.generate_presigned_url("get_object", Params={"Bucket": "shared", "Key": "report 1.csv"})
    assert "AWSAccessKeyId=" in default
    assert httpx.get(default).content == b"a,b\n"
    v4 = auth_server.signed("s3", admin, signature_version="s3v4")
    url = v4.generate_presigned_url("get_object", Params={"Bucket": "shared", "Key": "report 1.csv"})
    assert "X-Amz-Credential=" in url
    assert httpx.get(url).content == b"a,b\n"
    # Tampering with the URL breaks it.
    assert httpx.get(url.replace("report%201", "report%202")).status_code == 403
    assert httpx.get(default.replace("report%201", "report%202")).status_code == 403
    # Expired: SigV4 signed an hour ago for 10 minutes, SigV2 with an Expires in the past.
    target = auth_server.url + "/shared/report%201.csv"
    expired = httpx.get(presign_at(target, admin, _stamp(time.time() - 3600), 600))
    assert expired.status_code == 403
    assert "<Code>AccessDenied</Code>" in expired.text and "Request has expired" in expired.text
    expired_v2 = httpx.get(presign_v2(target, admin, -60))
    assert expired_v2.status_code == 403 and "Request has expired" in expired_v2.text
    assert httpx.get(presign_at(target, admin, _stamp(time.time() - 60), 600)).status_code == 200


def test_a_multi_megabyte_upload_file(auth_server: AuthServer, admin: dict[str, str], tmp_path: Path) -> None:
    s3 = auth_server.signed("s3", admin)
    s3.create_bucket(Bucket="big")
    data = os.urandom(20 * 1024 * 1024)  # past upload_file's 8 MB threshold: a multipart upload
    (tmp_path / "big.bin").write_bytes(data)
    s3.upload_file(str(tmp_path / "big.bin"), "big", "big.bin")
    assert s3.get_object(Bucket="big", Key="big.bin")["Body"].read() == data


def test_a_body_that_is_not_the_signed_one_is_not_stored(
    auth_server: AuthServer, admin: dict[str, str]
) -> None:
    auth_server.signed("s3", admin).create_bucket(Bucket="tamper")
    url = auth_server.url + "/tamper/k"
    request = AWSRequest(method="PUT", url=url, data=b"hello")
    sign_at(request, admin, "s3", _stamp(time.time()))
    response = httpx.put(url, headers=dict(request.headers.items()), content=b"HELLO")
    assert response.status_code == 400 and "<Code>XAmzContentSHA256Mismatch</Code>" in response.text
    assert httpx.put(url, headers=dict(request.headers.items()), content=b"hello").status_code == 200
    invoke = auth_server.url + "/endpoints/fraud/invocations"
    signed = AWSRequest(method="POST", url=invoke, data=ROW.encode(), headers={"Content-Type": "text/csv"})
    sign_at(signed, admin, "sagemaker", _stamp(time.time()))
    changed = httpx.post(
        invoke, headers=dict(signed.headers.items()), content=ROW.replace("0.03", "9.99").encode()
    )
    assert changed.status_code == 403 and changed.headers["x-amzn-errortype"] == "InvalidSignatureException"


def test_signed_aws_chunked_uploads(auth_server: AuthServer, admin: dict[str, str]) -> None:
    s3 = auth_server.signed("s3", admin)
    s3.create_bucket(Bucket="chunked")
    data = os.urandom(200_000)
    headers, body = signed_chunked_put(auth_server.url + "/chunked/good", admin, data)
    response = httpx.put(auth_server.url + "/chunked/good", headers=headers, content=body)
    assert response.status_code == 200, response.text
    assert s3.get_object(Bucket="chunked", Key="good")["Body"].read() == data
    headers, body = signed_chunked_put(auth_server.url + "/chunked/bad", admin, data, corrupt=True)
    response = httpx.put(auth_server.url + "/chunked/bad", headers=headers, content=body)
    assert response.status_code == 403 and "<Code>SignatureDoesNotMatch</Code>" in response.text
    assert _code(lambda: s3.head_object(Bucket="chunked", Key="bad"))[1] == 404


def test_an_invoke_only_key(auth_server: AuthServer, data_dir: Path, endpoint: str) -> None:
    key = create_key(data_dir, "--invoke-only", endpoint)
    runtime = auth_server.signed("sagemaker-runtime", key)
    body = runtime.invoke_endpoint(EndpointName=endpoint, Body=ROW, ContentType="text/csv")["Body"].read()
    assert body.startswith(b"[")
    code, status, message = _code(
        lambda: runtime.invoke_endpoint(EndpointName="other", Body=ROW, ContentType="text/csv")
    )
    assert (code, status) == ("AccessDeniedException", 400)
    assert "sagemaker:InvokeEndpoint" in message and "endpoint/other" in message
    sm = auth_server.signed("sagemaker", key)
    code, _, message = _code(
        lambda: sm.create_endpoint(EndpointName="mine", EndpointConfigName="fraud-config")
    )
    assert code == "AccessDeniedException" and "sagemaker:CreateEndpoint" in message
    assert _code(sm.list_endpoints)[0] == "AccessDeniedException"
    assert _code(
        lambda: auth_server.signed("s3", key).get_object(Bucket="models", Key="forest/model.tar.gz")
    )[:2] == ("AccessDenied", 403)
    assert _code(lambda: auth_server.signed("logs", key).describe_log_groups())[0] == "AccessDeniedException"


def test_a_read_only_key(auth_server: AuthServer, data_dir: Path, endpoint: str) -> None:
    key = create_key(data_dir, "--read-only")
    sm = auth_server.signed("sagemaker", key)
    assert sm.describe_endpoint(EndpointName=endpoint)["EndpointStatus"] == "InService"
    assert any(e["EndpointName"] == endpoint for e in sm.list_endpoints()["Endpoints"])
    assert _code(lambda: sm.delete_endpoint(EndpointName=endpoint))[0] == "AccessDeniedException"
    runtime = auth_server.signed("sagemaker-runtime", key)
    assert _code(lambda: runtime.invoke_endpoint(EndpointName=endpoint, Body=ROW, ContentType="text/csv"))[
        0
    ] == ("AccessDeniedException")
    s3 = auth_server.signed("s3", key)
    assert s3.head_object(Bucket="models", Key="forest/model.tar.gz")["ContentLength"] > 0
    assert _code(lambda: s3.put_object(Bucket="models", Key="x", Body=b"x"))[:2] == ("AccessDenied", 403)
    logs = auth_server.signed("logs", key)
    groups = logs.describe_log_groups(logGroupNamePrefix="/aws/sagemaker/Endpoints/")["logGroups"]
    assert any(g["logGroupName"].endswith("/fraud") for g in groups)
    assert (
        httpx.get(auth_server.url + "/metrics", auth=(key["AccessKeyId"], key["SecretAccessKey"])).status_code
        == 200
    )


def test_deny_beats_allow(auth_server: AuthServer, data_dir: Path, endpoint: str, tmp_path: Path) -> None:
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["sagemaker:*", "logs:*"], "Resource": "*"},
            {
                "Effect": "Deny",
                "Action": "sagemaker:Delete*",
                "Resource": f"arn:aws:sagemaker:*:*:endpoint/{endpoint}",
            },
            {"Effect": "Deny", "Action": "sagemaker:InvokeEndpoint", "Resource": "*"},
        ],
    }
    (tmp_path / "policy.json").write_text(json.dumps(policy))
    key = create_key(data_dir, "--policy", str(tmp_path / "policy.json"))
    sm = auth_server.signed("sagemaker", key)
    code, _, message = _code(lambda: sm.delete_endpoint(EndpointName=endpoint))
    assert code == "AccessDeniedException" and "explicit deny" in message
    assert sm.describe_endpoint(EndpointName=endpoint)["EndpointName"] == endpoint
    runtime = auth_server.signed("sagemaker-runtime", key)
    assert _code(lambda: runtime.invoke_endpoint(EndpointName=endpoint, Body=ROW, ContentType="text/csv"))[
        0
    ] == ("AccessDeniedException")
    events = auth_server.signed("logs", key).filter_log_events(
        logGroupName=f"/aws/sagemaker/Endpoints/{endpoint}"
    )
    assert "events" in events


def test_a_deleted_key_stops_working_while_the_server_runs(auth_server: AuthServer, data_dir: Path) -> None:
    key = create_key(data_dir, "--read-only")
    sm = auth_server.signed("sagemaker", key)
    sm.list_endpoints()
    assert keys(data_dir, "delete", key["AccessKeyId"]).returncode == 0
    deadline = time.monotonic() + 30  # the server looks at the keys file about once a second
    while True:
        try:
            sm.list_endpoints()
        except ClientError as error:
            assert error.response["Error"]["Code"] == "UnrecognizedClientException"
            break
        assert time.monotonic() < deadline, "the deleted key still works"
        time.sleep(0.2)


def test_the_host_header_is_checked(auth_server: AuthServer, admin: dict[str, str]) -> None:
    evil = httpx.post(
        auth_server.url + "/",
        headers={"Host": "rebind.attacker.example", "X-Amz-Target": "SageMaker.ListEndpoints"},
        content=b"{}",
    )
    assert evil.status_code == 403
    assert "--allowed-host rebind.attacker.example" in evil.json()["message"]
    assert (
        httpx.get(auth_server.url + "/ping", headers={"Host": "rebind.attacker.example"}).status_code == 403
    )
    # Loopback names, IP addresses and virtual-hosted buckets under them are fine.
    for host in ("localhost:1", "127.0.0.1", "[::1]:8080", "models.localhost"):
        assert httpx.get(auth_server.url + "/ping", headers={"Host": host}).status_code == 200, host


def test_keys_list_shows_policies_never_secrets(data_dir: Path, admin: dict[str, str]) -> None:
    listed = keys(data_dir, "list")
    assert (
        listed.returncode == 0 and admin["AccessKeyId"] in listed.stdout and "Allow * on *" in listed.stdout
    )
    as_json = keys(data_dir, "list", "--json")
    assert admin["SecretAccessKey"] not in listed.stdout + as_json.stdout
    assert any(k["AccessKeyId"] == admin["AccessKeyId"] for k in json.loads(as_json.stdout))
    assert (data_dir / "keys.json").stat().st_mode & 0o777 == 0o600
    assert keys(data_dir, "delete", "AKCBNOSUCHKEY").returncode == 1
    assert keys(data_dir, "create").returncode == 2  # it must say what the key may do


def test_coldbrews_own_commands_sign_with_the_standard_credentials(
    auth_server: AuthServer, admin: dict[str, str], endpoint: str, data_dir: Path
) -> None:
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": admin["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": admin["SecretAccessKey"],
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "coldbrew", "endpoints", "--url", auth_server.url, "--json"],
        capture_output=True, text=True, timeout=60, env=env, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert any(row["name"] == endpoint for row in json.loads(done.stdout))
    invoked = subprocess.run(
        [sys.executable, "-m", "coldbrew", "invoke", endpoint, "--url", auth_server.url, "--body", ROW],
        capture_output=True, text=True, timeout=60, env=env, cwd=REPO,
    )  # fmt: skip
    assert invoked.returncode == 0 and invoked.stdout.startswith("["), invoked.stderr
    anonymous = {k: v for k, v in env.items() if not k.startswith("AWS_")}
    refused = subprocess.run(
        [sys.executable, "-m", "coldbrew", "endpoints", "--url", auth_server.url],
        capture_output=True, text=True, timeout=60, env={**anonymous, "AWS_CONFIG_FILE": "/dev/null",
                                                           "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"},
        cwd=REPO,
    )  # fmt: skip
    assert refused.returncode == 1 and "UnrecognizedClientException" in refused.stderr
