"""The dashboard's pure parts: views of what was read, sessions, and where a request goes."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from coldbrew.gateway.ui_mount import dashboard_route, is_dashboard, s3_shaped, wants_dashboard
from coldbrew.ui.actions import new_config_name, updated_config
from coldbrew.ui.app import _next, _serverless_changes
from coldbrew.ui.config_view import MASK, masked_deployment, variant_lines
from coldbrew.ui.cost_view import cost_page
from coldbrew.ui.endpoints_view import Costs
from coldbrew.ui.login_limit import LoginLimiter
from coldbrew.ui.periods import RANGES, chart_window, last_hour, month_start
from coldbrew.ui.sessions import FILE_NAME, IDLE_S, SessionFile, Sessions, cookie_header, csrf_matches
from coldbrew.ui.whatif import WhatIf

DEPLOYMENT = {
    "ConfigName": "c",
    "Config": {
        "EndpointConfigName": "c",
        "ProductionVariants": [
            {
                "VariantName": "A",
                "ModelName": "m",
                "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 5},
            },
            {"VariantName": "B", "ModelName": "m", "InstanceType": "ml.m5.large", "InitialInstanceCount": 2},
        ],
    },
    "Models": {
        "m": {"PrimaryContainer": {"Image": "i", "Environment": {"TOKEN": "secret", "LEVEL": "debug"}}}
    },
}


def test_environment_values_are_masked_and_the_rest_kept() -> None:
    masked = masked_deployment(DEPLOYMENT)
    assert masked["Models"]["m"]["PrimaryContainer"]["Environment"] == {"TOKEN": MASK, "LEVEL": MASK}
    assert masked["Models"]["m"]["PrimaryContainer"]["Image"] == "i"
    assert DEPLOYMENT["Models"]["m"]["PrimaryContainer"]["Environment"]["TOKEN"] == "secret"  # type: ignore[index]


def test_variant_lines_take_updated_capacities_over_the_config() -> None:
    summaries = [
        {"VariantName": "A", "DesiredServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 9}},
        {"VariantName": "B", "DesiredInstanceCount": 3, "DesiredWeight": 0.5},
    ]
    a, b = variant_lines(DEPLOYMENT, summaries)
    assert a.label == "A: 2048 MB x9" and a.serverless
    assert b.label == "B: 3 x ml.m5.large" and b.weight == 0.5


def test_an_update_copies_the_deployed_config_with_new_serverless_settings() -> None:
    request = updated_config(
        {**DEPLOYMENT["Config"], "EndpointConfigArn": "arn", "Tags": [{"Key": "k", "Value": "v"}]},  # type: ignore[dict-item]
        "c-ui1",
        {"A": {"MaxConcurrency": 7, "ProvisionedConcurrency": 0}},
    )
    assert (
        request["EndpointConfigName"] == "c-ui1"
        and "EndpointConfigArn" not in request
        and "Tags" not in request
    )
    assert request["ProductionVariants"][0]["ServerlessConfig"] == {
        "MemorySizeInMB": 2048,
        "MaxConcurrency": 7,
    }
    assert request["ProductionVariants"][1] == DEPLOYMENT["Config"]["ProductionVariants"][1]  # type: ignore[index]
    with pytest.raises(ValueError, match="not serverless"):
        updated_config(DEPLOYMENT["Config"], "x", {"B": {"MaxConcurrency": 1}})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no variant C"):
        updated_config(DEPLOYMENT["Config"], "x", {"C": {}})  # type: ignore[arg-type]
    name = new_config_name("e" * 70, now=0)
    assert len(name) <= 63 and name.endswith("-ui19700101000000")


def test_serverless_changes_are_whole_numbers_of_known_fields() -> None:
    assert _serverless_changes({"A": {"MaxConcurrency": "4"}}) == {"A": {"MaxConcurrency": 4}}
    for bad in ({}, {"A": {"MaxConcurrency": 1.5}}, {"A": {"Memory": 1}}, {"A": {"MaxConcurrency": True}}):
        with pytest.raises(ValueError):
            _serverless_changes(bad)


def test_a_day_is_the_difference_of_two_cumulative_reports() -> None:
    day = 86400.0
    cumulative = [
        {"a": Costs(3.0, 30), "b": Costs(1.0, 10)},
        {"a": Costs(2.0, 20)},
        {"a": Costs(0.5, 5)},
    ]
    page = cost_page([0.0, day, 2 * day], cumulative, {"a": Costs(3.0, 30)}, ["a", "b", "idle"], "USD", "")
    rows = {r.endpoint: r for r in page.rows}
    assert rows["a"].days == [1.0, 1.5, 0.5] and rows["a"].total == 3.0
    assert rows["b"].days == [1.0, 0.0, 0.0]
    assert page.idle_endpoints == 1 and page.days == ["1970-01-01", "1970-01-02", "1970-01-03"]
    assert page.day_totals == [2.0, 1.5, 0.5]


def test_windows_are_whole_minutes() -> None:
    now = 1_800_000_030.5
    hour = last_hour(now)
    assert hour.end - hour.start == 3600 and hour.start % 60 == 0 and hour.start <= now < hour.end
    for range_ in RANGES.values():
        window = chart_window(range_, now)
        assert window.seconds == range_.seconds and window.end % range_.period == 0 and window.end > now
    assert month_start(now) <= now


def test_what_if_checks_its_form() -> None:
    assert WhatIf().spec().traffic.windows[0].per_day == 10_000
    for bad in ({"memory_mb": 1000}, {"per_day": 10**6}, {"start": "10:00", "end": "09:00"}, {"x": 1},
                {"provisioned_concurrency": 20, "max_concurrency": 10}):  # fmt: skip
        with pytest.raises(ValidationError):
            WhatIf.model_validate(bad)


def test_sessions_expire_and_end() -> None:
    now = [0.0]
    sessions = Sessions(clock=lambda: now[0])
    session = sessions.new("AKID")
    assert sessions.get(session.id) is session and csrf_matches(session, session.csrf)
    assert not csrf_matches(session, "x") and not csrf_matches(session, None)
    now[0] += IDLE_S + 1
    assert sessions.get(session.id) is None
    other = sessions.new(None)
    sessions.end(other.id)
    assert sessions.get(other.id) is None
    header = cookie_header(other, secure=True)
    assert (
        "HttpOnly" in header and "SameSite=Strict" in header and "Secure" in header and "Path=/ui" in header
    )
    assert "Max-Age=0" in cookie_header(None, secure=False)


def test_after_login_only_dashboard_paths() -> None:
    assert _next("/ui/endpoints/a?range=24h") == "/ui/endpoints/a?range=24h"
    for bad in ("https://evil.example/ui", "//evil.example", "/metrics", "/ui\\..\\x", None):
        assert _next(bad) == "/ui"


def test_only_a_browser_asking_for_html_is_redirected() -> None:
    html = {b"accept": b"text/html,application/xhtml+xml"}
    assert wants_dashboard("GET", "/", b"", html)
    assert not wants_dashboard("GET", "/", b"", {})  # an SDK's unsigned GET /
    assert not wants_dashboard("GET", "/", b"", {**html, b"authorization": b"AWS4-HMAC-SHA256 ..."})
    assert not wants_dashboard("GET", "/", b"list-type=2", html)
    assert not wants_dashboard("POST", "/", b"", html)
    assert is_dashboard("/ui") and is_dashboard("/ui/cost") and not is_dashboard("/uix")


def test_logged_in_sessions_outlive_a_restart_and_logging_out_still_ends_them(tmp_path: Path) -> None:
    now = [1_800_000_000.0]
    path = tmp_path / FILE_NAME
    sessions = Sessions(SessionFile(path), clock=lambda: now[0])
    kept, ended, anonymous = sessions.new("AKID1"), sessions.new("AKID2"), sessions.new(None)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert kept.id.encode() not in path.read_bytes()  # the file holds digests, not the cookie's value
    sessions.end(ended.id)
    # A restart: a new Sessions on the same file.
    again = Sessions(SessionFile(path), clock=lambda: now[0])
    found = again.get(kept.id)
    assert found is not None and found.key_id == "AKID1" and found.csrf == kept.csrf
    assert again.get(ended.id) is None and again.get(anonymous.id) is None
    again.end(kept.id)
    assert Sessions(SessionFile(path), clock=lambda: now[0]).get(kept.id) is None
    # Expired sessions are purged from the file when the server starts.
    old = again.new("AKID3")
    now[0] += IDLE_S + 1
    Sessions(SessionFile(path), clock=lambda: now[0])
    assert sqlite3.connect(path).execute("SELECT count(*) FROM sessions").fetchone()[0] == 0
    assert Sessions(SessionFile(path), clock=lambda: now[0]).get(old.id) is None


def test_failed_logins_are_limited_per_address_with_bounded_memory() -> None:
    now = [0.0]
    limiter = LoginLimiter(failures=3, window_s=60, max_addresses=2, clock=lambda: now[0])
    for _ in range(3):
        assert limiter.retry_after("10.0.0.1") is None
        limiter.failed("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") == 60
    assert "Too many failed logins" in limiter.message(60) and "60 s" in limiter.message(60)
    assert limiter.retry_after("10.0.0.2") is None  # another address is not held back
    now[0] += 61
    assert limiter.retry_after("10.0.0.1") is None  # the window is over
    limiter.failed("10.0.0.1")
    limiter.succeeded("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") is None
    for address in ("a", "b", "c"):
        limiter.failed(address)
    assert len(limiter._seen) == 2


def test_s3_requests_for_a_bucket_named_ui_are_told_from_the_dashboards() -> None:
    browser = {b"accept": b"text/html", b"host": b"127.0.0.1"}
    pages = [
        ("GET", "/ui", b""),
        ("GET", "/ui/cost", b"days=7"),
        ("GET", "/ui/endpoints/e", b""),
        ("POST", "/ui/login", b""),
        ("DELETE", "/ui/api/endpoints/e", b""),
        ("GET", "/ui/static/ui.js", b""),
    ]
    for method, path, query in pages:
        assert dashboard_route(path) and not s3_shaped(method, path, query, browser), path
    assert s3_shaped("GET", "/ui/model.tar.gz", b"", browser)  # no dashboard route
    assert s3_shaped("GET", "/ui/endpoints/e/model.tar.gz", b"", browser)
    assert s3_shaped("GET", "/ui", b"list-type=2", browser)  # ListObjectsV2
    assert s3_shaped("PUT", "/ui/cost", b"", browser)
    boto_unsigned = {b"amz-sdk-invocation-id": b"x", b"amz-sdk-request": b"attempt=1"}
    assert s3_shaped("GET", "/ui/cost", b"", boto_unsigned)
    assert s3_shaped("HEAD", "/ui", b"", {b"x-amz-content-sha256": b"UNSIGNED-PAYLOAD"})
