"""CloudWatch Logs of a real server: what workers print and what coldbrew does with them reaches
the endpoint's log group, read back with boto3's ``logs`` client configured by AWS_ENDPOINT_URL
alone, and with raw AWS JSON requests for the error shapes."""

from __future__ import annotations

import json
import re
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from tests.logs.conftest import CAP_BYTES, deploy, group, invoke, messages_of, wait_for_message
from tests.support import ColdbrewServer, tar_gz, wait_for_status

STREAM = re.compile(r"AllTraffic/i-[0-9a-f]{17}")


def stream_of(logs: Any, endpoint: str) -> str:
    streams = logs.describe_log_streams(logGroupName=group(endpoint))["logStreams"]
    assert len(streams) == 1, streams
    name: str = streams[0]["logStreamName"]
    return name


def test_a_workers_output_and_its_start_are_in_its_stream(logs: Any, printer: str) -> None:
    groups = logs.describe_log_groups(logGroupNamePrefix=group(printer))["logGroups"]
    assert [g["logGroupName"] for g in groups] == [group(printer)]
    assert groups[0]["arn"] == f"arn:aws:logs:us-east-1:123456789012:log-group:{group(printer)}:*"
    assert groups[0]["storedBytes"] > 0 and groups[0]["retentionInDays"] == 7
    stream = stream_of(logs, printer)
    assert STREAM.fullmatch(stream), stream
    events = logs.get_log_events(logGroupName=group(printer), logStreamName=stream, startFromHead=True)[
        "events"
    ]
    got = [e["message"] for e in events]
    expected = [
        "printer: importing on stdout",
        "printer: importing on stderr",
        "printer: model loaded",
        "predict on stdout first",
        "predict on stderr first",
    ]
    assert [m for m in got if m in expected] == expected
    started = [m for m in got if m.startswith("coldbrew: environment started in ")]
    assert len(started) == 1 and re.search(r"\(check, worker \d+, 1024 MB\)$", started[0]), got
    assert got.index(started[0]) < got.index("predict on stdout first")
    assert all(e["ingestionTime"] >= e["timestamp"] > 0 for e in events)


def test_the_workers_output_still_reaches_the_servers_own_log(
    logs_server: ColdbrewServer, printer: str
) -> None:
    assert re.search(
        r"^printer AllTraffic/i-[0-9a-f]{17} \| predict on stderr first$", logs_server.log(), re.M
    )


def test_a_reader_follows_a_stream_with_its_forward_token(
    logs: Any, logs_server: ColdbrewServer, printer: str
) -> None:
    stream = stream_of(logs, printer)
    token = logs.get_log_events(logGroupName=group(printer), logStreamName=stream)["nextForwardToken"]
    again = logs.get_log_events(logGroupName=group(printer), logStreamName=stream, nextToken=token)
    assert again["events"] == [] and again["nextForwardToken"] == token  # nothing new: the same token
    invoke(logs_server, printer, marker="second")
    deadline = time.monotonic() + 10
    new: list[str] = []
    while len(new) < 2 and time.monotonic() < deadline:
        page = logs.get_log_events(logGroupName=group(printer), logStreamName=stream, nextToken=token)
        new += [e["message"] for e in page["events"]]
        token = page["nextForwardToken"]
    assert new == ["predict on stdout second", "predict on stderr second"]


def test_filter_log_events_with_term_patterns(logs: Any, printer: str) -> None:
    assert messages_of(logs, printer, filterPattern='"predict on stderr"')[:1] == ["predict on stderr first"]
    assert set(messages_of(logs, printer, filterPattern="predict -stderr")) >= {"predict on stdout first"}
    assert all("stderr" not in m for m in messages_of(logs, printer, filterPattern="predict -stderr"))
    either = messages_of(logs, printer, filterPattern="?loaded ?importing")
    assert either[:3] == [
        "printer: importing on stdout",
        "printer: importing on stderr",
        "printer: model loaded",
    ]
    assert messages_of(logs, printer, logStreamNamePrefix="AllTraffic/", filterPattern='"model loaded"') == [
        "printer: model loaded"
    ]
    assert messages_of(logs, printer, logStreamNamePrefix="Other/") == []
    assert messages_of(logs, printer, startTime=int((time.time() + 3600) * 1000)) == []
    with pytest.raises(ClientError) as refused:
        logs.filter_log_events(logGroupName=group(printer), filterPattern='{ $.level = "error" }')
    assert refused.value.response["Error"]["Code"] == "InvalidParameterException"
    assert "JSON filter patterns are not supported" in refused.value.response["Error"]["Message"]


def test_errors_are_cloudwatch_logs_own(logs: Any, logs_server: ColdbrewServer, printer: str) -> None:
    missing = group("never-deployed")
    for call in (
        lambda: logs.describe_log_streams(logGroupName=missing),
        lambda: logs.get_log_events(logGroupName=missing, logStreamName="AllTraffic/i-0"),
        lambda: logs.filter_log_events(logGroupName=missing),
    ):
        with pytest.raises(logs.exceptions.ResourceNotFoundException) as not_found:
            call()
        assert not_found.value.response["Error"]["Message"] == "The specified log group does not exist."
    with pytest.raises(
        logs.exceptions.ResourceNotFoundException, match="The specified log stream does not exist."
    ):
        logs.get_log_events(logGroupName=group(printer), logStreamName="AllTraffic/i-00000000000000000")
    with pytest.raises(logs.exceptions.InvalidParameterException) as too_many:
        logs.describe_log_groups(limit=100)  # botocore does not check maxima: the server does
    assert too_many.value.response["Error"]["Message"] == (
        "1 validation error detected: Value '100' at 'limit' failed to satisfy constraint: "
        "Member must have value less than or equal to 50"
    )
    with pytest.raises(
        logs.exceptions.InvalidParameterException, match="The specified nextToken is invalid."
    ):
        logs.filter_log_events(logGroupName=group(printer), nextToken="not-a-token")
    with pytest.raises(logs.exceptions.InvalidOperationException, match="coldbrew does not serve"):
        logs.put_log_events(
            logGroupName=group(printer), logStreamName="x", logEvents=[{"timestamp": 1, "message": "m"}]
        )

    def raw(target: str, body: bytes) -> httpx.Response:
        headers = {"X-Amz-Target": f"Logs_20140328.{target}", "Content-Type": "application/x-amz-json-1.1"}
        return httpx.post(logs_server.url + "/", content=body, headers=headers, timeout=10)

    for target, body, code in [
        (
            "DescribeLogStreams",
            b'{"logGroupName": "/aws/sagemaker/Endpoints/none"}',
            "ResourceNotFoundException",
        ),
        ("DescribeLogStreams", b"{not json", "SerializationException"),
        ("DescribeLogStreams", b'{"logGroupName": 5}', "InvalidParameterException"),
        ("GetLogEvents", b'{"logGroupName": "/aws/x"}', "InvalidParameterException"),  # no logStreamName
        (
            "DescribeLogGroups",
            b'{"logGroupNamePrefix": "/a", "logGroupNamePattern": "b"}',
            "InvalidParameterException",
        ),
        (
            "FilterLogEvents",
            b'{"logGroupName": "/a", "logStreamNames": ["s"], "logStreamNamePrefix": "s"}',
            "ResourceNotFoundException",
        ),
        ("DeleteLogGroup", b'{"logGroupName": "/a"}', "InvalidOperationException"),
        ("NoSuchOperation", b"{}", "UnknownOperationException"),
    ]:
        response = raw(target, body)
        assert response.status_code == 400, (target, response.text)
        assert response.json()["__type"] == code, (target, response.text)
        assert response.headers["x-amzn-errortype"] == code
        assert response.json()["message"]


def test_a_release_is_an_event_in_the_environments_stream(
    logs: Any, logs_server: ColdbrewServer, printer_archive: Path
) -> None:
    deploy(logs_server, "brief", printer_archive, environment={"COLDBREW_IDLE_TIMEOUT_S": "0.3"})
    wait_for_status(logs_server.client("sagemaker"), "brief", "InService")
    found = wait_for_message(logs, "brief", "coldbrew: environment released after")
    released = [m for m in found if "released after" in m]
    assert re.fullmatch(
        r"coldbrew: environment released after [\d.]+ s: idle past its keep-alive \(worker \d+\)", released[0]
    )


def test_a_model_that_fails_to_load_says_why_in_its_stream(
    logs: Any, logs_server: ColdbrewServer, printer_archive: Path
) -> None:
    deploy(logs_server, "broken", printer_archive, environment={"FAIL_TO_LOAD": "the weights went missing"})
    wait_for_status(logs_server.client("sagemaker"), "broken", "Failed")
    found = wait_for_message(logs, "broken", "coldbrew: environment failed to start")
    assert "printer: about to fail" in found
    assert any("the weights went missing" in m and not m.startswith("coldbrew:") for m in found), found
    failed = [m for m in found if m.startswith("coldbrew: environment failed to start: ")]
    assert "the weights went missing" in failed[0]


def test_a_worker_stopped_for_its_memory_is_an_event(
    logs: Any, logs_server: ColdbrewServer, printer: str
) -> None:
    with pytest.raises(ClientError) as stopped:
        invoke(logs_server, printer, marker="hog", hog_mb=1400)
    assert stopped.value.response["Error"]["Code"] == "ModelError"
    found = wait_for_message(logs, printer, "more than its memory size of 1024 MB")
    released = [m for m in found if m.startswith("coldbrew: environment released") and "memory size" in m]
    assert released, found


def test_a_chatty_model_cannot_fill_the_disk(
    logs: Any, logs_server: ColdbrewServer, printer_archive: Path
) -> None:
    deploy(logs_server, "chatty", printer_archive)
    wait_for_status(logs_server.client("sagemaker"), "chatty", "InService")
    started = time.monotonic()
    invoke(logs_server, "chatty", marker="c", spam=5000)  # ~650 KB of events against a cap of 200 KB
    took = time.monotonic() - started
    # Printing 5,000 lines costs the invocation its writes to a pipe, never the store's I/O (a
    # generous bound: the machine may be busy with other tests).
    assert took < 30, took
    found = wait_for_message(logs, "chatty", "spam c 004999")
    stored = logs.describe_log_groups(logGroupNamePrefix=group("chatty"))["logGroups"][0]["storedBytes"]
    assert stored <= CAP_BYTES
    spam = [m for m in found if m.startswith("spam c ")]
    assert spam[-1].startswith("spam c 004999") and not spam[0].startswith("spam c 000000")
    # The oldest went first, the rest is unbroken, and what went is counted where a reader looks.
    numbers = [int(m.split()[2]) for m in spam]
    assert numbers == list(range(numbers[0], 5000))
    assert "printer: importing on stdout" not in found
    notices = messages_of(logs, "chatty", logStreamNames=["coldbrew/dropped-events"])
    assert notices and re.match(r"coldbrew: dropped the [\d,]+ oldest events of this log group", notices[0])
    assert "COLDBREW_LOGS_MAX_BYTES_PER_ENDPOINT" in notices[0]
    metrics = httpx.get(f"{logs_server.url}/metrics", timeout=10).text
    dropped = re.search(r'^coldbrew_logs_dropped_events_total\{EndpointName="chatty"\} (\S+)$', metrics, re.M)
    assert dropped is not None and float(dropped[1]) > 0
    size = re.search(r'^coldbrew_logs_stored_bytes\{EndpointName="chatty"\} (\S+)$', metrics, re.M)
    assert size is not None and 0 < float(size[1]) <= CAP_BYTES
    # The server's own log got a sample and a count, not 5,000 lines. The count is written within a
    # flush interval of the lines it stands for, which can be after they reached the store.
    deadline = time.monotonic() + 10
    while True:
        copied = [line for line in logs_server.log().splitlines() if line.startswith("chatty ")]
        counted = any("lines not shown here to keep the server's log small" in line for line in copied)
        if counted or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(copied) < 1000
    assert counted, copied[-5:]


BYO_SERVER = textwrap.dedent("""
    import os, sys
    from http.server import BaseHTTPRequestHandler, HTTPServer

    print("byo: listening", flush=True)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            print("byo: got", body.decode())
            sys.stderr.write("byo: stderr too\\n")
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    HTTPServer(("127.0.0.1", int(os.environ["SAGEMAKER_BIND_TO_PORT"])), Handler).serve_forever()
""")


def test_an_exec_servers_output_is_collected_too(
    logs: Any, logs_server: ColdbrewServer, tmp_path: Path
) -> None:
    archive = tmp_path / "byo.tar.gz"
    archive.write_bytes(tar_gz({"serve.py": BYO_SERVER.encode()}))
    sm = logs_server.client("sagemaker")
    sm.create_model(
        ModelName="byo-logs",
        PrimaryContainer={"Image": f"exec:{sys.executable} serve.py", "ModelDataUrl": archive.as_uri()},
    )
    sm.create_endpoint_config(
        EndpointConfigName="byo-logs",
        ProductionVariants=[
            {
                "VariantName": "Custom",
                "ModelName": "byo-logs",
                "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 1},
            }
        ],
    )
    sm.create_endpoint(EndpointName="byo-logs", EndpointConfigName="byo-logs")
    wait_for_status(sm, "byo-logs", "InService")
    logs_server.client("sagemaker-runtime").invoke_endpoint(
        EndpointName="byo-logs", Body=b"hello", ContentType="text/plain"
    )
    found = wait_for_message(logs, "byo-logs", "byo: stderr too")
    assert [m for m in found if m.startswith("byo:")] == [
        "byo: listening",
        "byo: got hello",
        "byo: stderr too",
    ]
    streams = logs.describe_log_streams(logGroupName=group("byo-logs"))["logStreams"]
    assert [s["logStreamName"].split("/")[0] for s in streams] == ["Custom"]


def test_fresh_interpreters_output_is_collected(tmp_path: Path, printer_archive: Path) -> None:
    server = ColdbrewServer(tmp_path / "data", env={"COLDBREW_ZYGOTE": "false"}).start()
    try:
        deploy(server, "fresh", printer_archive)
        wait_for_status(server.client("sagemaker"), "fresh", "InService")
        invoke(server, "fresh", marker="fresh")
        found = wait_for_message(server.client("logs"), "fresh", "predict on stderr fresh")
        assert "printer: importing on stdout" in found and "predict on stdout fresh" in found
    finally:
        server.stop()
    # Stopping the server drained the endpoint: its environment's release is the stream's last word.
    restarted = ColdbrewServer(tmp_path / "data").start()
    try:
        found = messages_of(restarted.client("logs"), "fresh")
        assert found[-1].startswith("coldbrew: environment released") and "drained" in found[-1], found[-3:]
    finally:
        restarted.stop()


def test_requests_signed_for_logs_reach_the_logs_api(logs_server: ColdbrewServer, printer: str) -> None:
    # The SageMaker client's own signature goes elsewhere; a logs client signed for another region
    # gets ARNs in that region.
    answer = logs_server.client("logs", region="eu-west-1").describe_log_groups(
        logGroupNamePrefix=group(printer)
    )
    assert answer["logGroups"][0]["arn"].startswith("arn:aws:logs:eu-west-1:123456789012:log-group:")
    assert json.dumps(answer, default=str)
