"""The dashboard with authentication on: a login with an access key, a session cookie, CSRF, and
each key's policy deciding what its session may see and do."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.auth.conftest import AuthServer, create_key, keys
from tests.support import deploy_serverless, sklearn_archive, wait_for_status
from tests.ui.conftest import Tab

ROW = "0.03,0.05,0.06,0.02,-0.04,-0.03,-0.04,-0.002,0.02,-0.01"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ui-auth") / "data"


@pytest.fixture(scope="module")
def admin(data_dir: Path) -> dict[str, str]:
    return create_key(data_dir, "--admin")


@pytest.fixture(scope="module")
def read_only(data_dir: Path) -> dict[str, str]:
    return create_key(data_dir, "--read-only")


@pytest.fixture(scope="module")
def ui_server(
    data_dir: Path, admin: dict[str, str], read_only: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AuthServer]:
    models = tmp_path_factory.mktemp("ui-auth-models")
    archive, _ = sklearn_archive(models / "model.tar.gz")
    server = AuthServer(data_dir, ("--auth", "on"), env={"COLDBREW_MODEL_ROOTS": str(models)}).start()
    sm = server.signed("sagemaker", admin)
    deploy_serverless(sm, "ui-auth", str(archive), environment={"HF_TOKEN": "hf_never_shown"})
    wait_for_status(sm, "ui-auth", "InService")
    yield server
    server.stop()


def _login(tab: Tab, key: dict[str, str], path: str = "/ui") -> None:
    tab.open(path)
    assert "/ui/login" in tab.page.url
    tab.page.fill('input[name="access_key_id"]', key["AccessKeyId"])
    tab.page.fill('input[name="secret_access_key"]', key["SecretAccessKey"])
    with tab.page.expect_navigation():
        tab.page.click("#login-form button[type=submit]")
    tab.page.wait_for_load_state("networkidle")
    tab.assert_clean()


def _fetch(tab: Tab, method: str, path: str, with_token: bool = True) -> dict[str, Any]:
    answer: dict[str, Any] = tab.page.evaluate(
        """async ([method, path, withToken]) => {
            const headers = withToken ? {"X-CSRF-Token": coldbrew.csrf} : {};
            const response = await fetch(path, {method, headers});
            return {status: response.status, body: await response.json()};
        }""",
        [method, path, with_token],
    )
    return answer


def test_the_dashboard_asks_for_a_key_and_refuses_a_wrong_secret(
    tab: Tab, ui_server: AuthServer, admin: dict[str, str]
) -> None:
    tab.open("/")
    assert tab.page.url == f"{ui_server.url}/ui/login?next=%2Fui"
    tab.screenshot("login")
    tab.page.fill('input[name="access_key_id"]', admin["AccessKeyId"])
    tab.page.fill('input[name="secret_access_key"]', "not-the-secret")
    tab.page.click("#login-form button[type=submit]")
    assert "do not match" in tab.page.locator("#login-error").inner_text()
    tab.errors.clear()  # the refused login's 401 is what the browser reports, and what is wanted
    tab.open("/ui")
    assert "/ui/login" in tab.page.url
    # Without a session the API answers 401, never data.
    assert httpx.get(f"{ui_server.url}/ui/api/endpoints", timeout=10).status_code == 401


def test_a_read_only_key_can_look_but_not_act(
    tab: Tab, ui_server: AuthServer, read_only: dict[str, str]
) -> None:
    _login(tab, read_only)
    assert tab.page.url == f"{ui_server.url}/ui"
    assert tab.page.locator('tr[data-endpoint="ui-auth"]').count() == 1
    [cookie] = [c for c in tab.context.cookies() if c["name"] == "coldbrew_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"
    assert read_only["SecretAccessKey"] not in str(tab.context.cookies())

    tab.open("/ui/endpoints/ui-auth")
    assert tab.page.locator("#delete-button").count() == 0
    assert "may not delete" in tab.page.locator("section.actions").inner_text()
    assert "may not invoke" in tab.page.locator("section.actions").inner_text()
    assert "hf_never_shown" not in tab.page.content()
    tab.page.wait_for_selector('#charts[data-drawn="true"]')
    # Asked anyway, through the dashboard's API with the session's CSRF token: the policy says no.
    refused = _fetch(tab, "DELETE", "/ui/api/endpoints/ui-auth")
    assert refused["status"] == 403 and refused["body"]["Code"] == "AccessDeniedException"
    assert "sagemaker:DeleteEndpoint" in refused["body"]["Message"]
    tab.errors.clear()  # the browser reports the 403 it was meant to get
    tab.open("/ui/machine")
    tab.open("/ui/cost")


def test_an_admin_key_acts_and_logging_out_ends_the_session(
    tab: Tab, ui_server: AuthServer, admin: dict[str, str]
) -> None:
    _login(tab, admin, "/ui/endpoints/ui-auth")
    assert tab.page.url == f"{ui_server.url}/ui/endpoints/ui-auth"
    no_token = _fetch(tab, "DELETE", "/ui/api/endpoints/ui-auth", with_token=False)
    assert no_token["status"] == 403 and no_token["body"]["Code"] == "InvalidCsrfToken"
    tab.errors.clear()
    tab.page.fill('#invoke-form textarea[name="Body"]', ROW)
    tab.page.click("#invoke-form button[type=submit]")
    tab.page.click("#confirm-ok")
    result = tab.page.wait_for_selector("#invoke-result:not([hidden])")
    assert result is not None and result.get_attribute("data-status") == "200"
    tab.screenshot("endpoint-admin")

    [cookie] = [c for c in tab.context.cookies() if c["name"] == "coldbrew_session"]
    with tab.page.expect_navigation():
        tab.page.click("header form button")
    assert "/ui/login" in tab.page.url
    # The old session id is worth nothing now.
    stale = httpx.get(
        f"{ui_server.url}/ui/api/endpoints", cookies={"coldbrew_session": cookie["value"]}, timeout=10
    )
    assert stale.status_code == 401


def test_deleting_a_key_ends_its_sessions(tab: Tab, ui_server: AuthServer, data_dir: Path) -> None:
    key = create_key(data_dir, "--read-only")
    _login(tab, key)
    assert _fetch(tab, "GET", "/ui/api/live")["status"] == 200
    assert keys(data_dir, "delete", key["AccessKeyId"]).returncode == 0
    tab.page.wait_for_function(
        """async () => (await fetch("/ui/api/live")).status === 401""", polling=200, timeout=30_000
    )
    tab.errors.clear()


def test_clients_and_the_host_check_are_unchanged(ui_server: AuthServer, admin: dict[str, str]) -> None:
    assert [
        e["EndpointName"] for e in ui_server.signed("sagemaker", admin).list_endpoints()["Endpoints"]
    ] == ["ui-auth"]
    assert "Buckets" in ui_server.signed("s3", admin).list_buckets()
    unsigned = httpx.post(
        f"{ui_server.url}/", headers={"X-Amz-Target": "SageMaker.ListEndpoints"}, timeout=10
    )
    assert unsigned.status_code == 403 and "MissingAuthentication" in unsigned.text
    rebinding = httpx.get(f"{ui_server.url}/ui", headers={"Host": "evil.example"}, timeout=10)
    assert rebinding.status_code == 403 and "DNS-rebinding" in rebinding.text


def test_scripts_read_the_api_with_basic_auth_but_cannot_act(
    ui_server: AuthServer, read_only: dict[str, str], admin: dict[str, str], data_dir: Path
) -> None:
    url = f"{ui_server.url}/ui/api/endpoints"
    answer = httpx.get(url, auth=(read_only["AccessKeyId"], read_only["SecretAccessKey"]), timeout=30)
    assert answer.status_code == 200 and [r["name"] for r in answer.json()["rows"]] == ["ui-auth"]
    assert httpx.get(url, auth=(read_only["AccessKeyId"], "wrong"), timeout=30).status_code == 401
    delete = httpx.delete(f"{url}/ui-auth", auth=(admin["AccessKeyId"], admin["SecretAccessKey"]), timeout=30)
    assert delete.status_code == 401
    # A key its policy does not let use the dashboard (coldbrew:ViewDashboard) cannot log in.
    invoker = create_key(data_dir, "--invoke-only", "ui-auth")
    with httpx.Client(base_url=ui_server.url, timeout=30) as client:
        form = client.get("/ui/login").text
        token = form.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        login = client.post(
            "/ui/login",
            data={"csrf": token, "next": "/ui", "access_key_id": invoker["AccessKeyId"],
                  "secret_access_key": invoker["SecretAccessKey"]},
        )  # fmt: skip
        assert login.status_code == 401 and "coldbrew:ViewDashboard" in login.text


def test_a_session_outlives_a_restart_and_its_file_is_private(
    tab: Tab, ui_server: AuthServer, read_only: dict[str, str], data_dir: Path
) -> None:
    _login(tab, read_only)
    tab.page.goto("about:blank")  # the page's polling would see the server gone while it restarts
    ui_server.stop()
    ui_server.start()
    sessions = data_dir / "ui-sessions.db"
    assert stat.S_IMODE(sessions.stat().st_mode) == 0o600
    [cookie] = [c for c in tab.context.cookies() if c["name"] == "coldbrew_session"]
    assert cookie["value"].encode() not in sessions.read_bytes()
    tab.open("/ui")  # no login form: the same session, after the restart
    assert tab.page.url == f"{ui_server.url}/ui"
    assert tab.page.locator('tr[data-endpoint="ui-auth"]').count() == 1
    # Logging out still ends it for good.
    with tab.page.expect_navigation():
        tab.page.click("header form button")
    stale = httpx.get(
        f"{ui_server.url}/ui/api/endpoints", cookies={"coldbrew_session": cookie["value"]}, timeout=10
    )
    assert stale.status_code == 401


def test_failed_logins_from_an_address_are_limited(
    tab: Tab, ui_server: AuthServer, admin: dict[str, str]
) -> None:
    """Last in this module: it leaves 127.0.0.1 refused for the limiter's window."""
    tab.open("/ui/login")
    for _ in range(10):
        tab.page.fill('input[name="access_key_id"]', admin["AccessKeyId"])
        tab.page.fill('input[name="secret_access_key"]', "a-guess")
        with tab.page.expect_navigation():
            tab.page.click("#login-form button[type=submit]")
        assert "do not match" in tab.page.locator("#login-error").inner_text()
    # The right secret now: refused all the same, with a message saying why and for how long.
    tab.page.fill('input[name="access_key_id"]', admin["AccessKeyId"])
    tab.page.fill('input[name="secret_access_key"]', admin["SecretAccessKey"])
    with tab.page.expect_navigation():
        tab.page.click("#login-form button[type=submit]")
    message = tab.page.locator("#login-error").inner_text()
    assert "Too many failed logins from this address" in message and "try again in" in message
    assert "/ui/login" in tab.page.url
    tab.screenshot("login-limited")
    tab.errors.clear()  # the browser reports the 401s and the 429 it was meant to get
    # HTTP Basic is held back too, right secret or not.
    basic = httpx.get(
        f"{ui_server.url}/ui/api/endpoints", auth=(admin["AccessKeyId"], admin["SecretAccessKey"]), timeout=30
    )
    assert basic.status_code == 401
