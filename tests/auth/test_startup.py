"""When auth is on, and what ``coldbrew serve`` refuses to do: a non-loopback address without auth
(unless --insecure), auth without a key; and HTTPS with --tls-cert/--tls-key."""

from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from botocore.exceptions import ClientError

from tests.auth.conftest import AuthServer, create_key
from tests.support import REPO, free_port


def _serve(data_dir: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "coldbrew",
        "serve",
        "--port",
        str(free_port()),
        "--data-dir",
        str(data_dir),
    ]
    return subprocess.run(
        [*command, *flags],
        capture_output=True, text=True, timeout=60, cwd=REPO,
        env={k: v for k, v in os.environ.items() if not k.startswith("COLDBREW_")},
    )  # fmt: skip


def test_a_non_loopback_address_with_auth_off_is_refused(tmp_path: Path) -> None:
    done = _serve(tmp_path / "data", "--host", "0.0.0.0", "--auth", "off")
    assert done.returncode == 2
    assert "refusing to listen on 0.0.0.0" in done.stderr and "--insecure" in done.stderr


def test_auth_without_a_key_says_how_to_make_one(tmp_path: Path) -> None:
    done = _serve(tmp_path / "data", "--host", "0.0.0.0")
    assert done.returncode == 2
    assert f"coldbrew keys create --admin --data-dir {tmp_path / 'data'}" in done.stderr
    done = _serve(tmp_path / "data", "--auth", "on")  # on loopback too, when asked for
    assert done.returncode == 2 and "no access key yet" in done.stderr


def test_tls_flags_go_together(tmp_path: Path) -> None:
    done = _serve(tmp_path / "data", "--tls-cert", str(tmp_path / "cert.pem"))
    assert done.returncode == 2 and "go together" in done.stderr


def test_a_non_loopback_address_turns_auth_on(tmp_path: Path) -> None:
    key = create_key(tmp_path / "data", "--admin")
    server = AuthServer(tmp_path / "data", ("--host", "0.0.0.0")).start()
    try:
        unsigned = httpx.post(
            server.url + "/", headers={"X-Amz-Target": "SageMaker.ListEndpoints"}, content=b"{}"
        )
        assert unsigned.status_code == 403
        assert server.signed("sagemaker", key).list_endpoints()["Endpoints"] == []
        with pytest.raises(ClientError, match="InvalidSignatureException"):
            server.signed("sagemaker", {**key, "SecretAccessKey": "guess"}).list_endpoints()
    finally:
        server.stop()
    assert "without TLS" in server.log()


def test_insecure_serves_a_non_loopback_address_without_auth_and_says_so(tmp_path: Path) -> None:
    server = AuthServer(tmp_path / "data", ("--host", "0.0.0.0", "--insecure")).start()
    try:
        assert server.client("sagemaker").list_endpoints()["Endpoints"] == []  # any credentials
    finally:
        server.stop()
    assert "WITHOUT AUTHENTICATION" in server.log()


def test_loopback_keeps_accepting_any_credentials(tmp_path: Path) -> None:
    server = AuthServer(tmp_path / "data").start()
    try:
        assert server.client("sagemaker").list_endpoints()["Endpoints"] == []
        # The Host check is on even so: a DNS-rebinding page is refused.
        rebound = httpx.get(server.url + "/metrics", headers={"Host": "attacker.example:8080"})
        assert rebound.status_code == 403 and "--allowed-host attacker.example" in rebound.text
    finally:
        server.stop()


def test_allowed_hosts_are_answered(tmp_path: Path) -> None:
    server = AuthServer(tmp_path / "data", ("--allowed-host", "coldbrew.internal")).start()
    try:
        for host in ("coldbrew.internal:8080", "bucket.coldbrew.internal"):
            assert httpx.get(server.url + "/ping", headers={"Host": host}).status_code == 200
        assert httpx.get(server.url + "/ping", headers={"Host": "coldbrew.internal.evil"}).status_code == 403
    finally:
        server.stop()


@pytest.fixture()
def certificate(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A self-signed certificate for localhost and 127.0.0.1, made here."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    yield cert_path, key_path


def test_https_with_a_certificate(tmp_path: Path, certificate: tuple[Path, Path]) -> None:
    cert, key_file = certificate
    key = create_key(tmp_path / "data", "--admin")
    flags = ("--auth", "on", "--tls-cert", str(cert), "--tls-key", str(key_file))
    server = AuthServer(tmp_path / "data", flags, ca=cert).start()
    try:
        assert server.url.startswith("https://")
        sm = server.signed("sagemaker", key)
        assert sm.list_endpoints()["Endpoints"] == []
        s3 = server.signed("s3", key)
        s3.create_bucket(Bucket="tls")
        data = os.urandom(3 * 1024 * 1024)
        (tmp_path / "blob").write_bytes(data)
        # Over HTTPS botocore streams uploads unsigned, aws-chunked with a checksum trailer.
        s3.upload_file(str(tmp_path / "blob"), "tls", "blob")
        assert s3.get_object(Bucket="tls", Key="blob")["Body"].read() == data
        # Idle keep-alive TLS connections would hold the server's shutdown up to asyncio's SSL
        # shutdown timeout (30 s), waiting for the client's close_notify: close them, as a client does.
        sm.close()
        s3.close()
    finally:
        server.stop()
