"""How coldbrew's own commands reach a running server: its URL, and boto3 clients for it."""

from __future__ import annotations

import argparse
import os
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8080"


def server_url(args: argparse.Namespace) -> str:
    """``--url``, else ``COLDBREW_URL``, else the default address."""
    return str(args.url or os.environ.get("COLDBREW_URL") or DEFAULT_URL)


def server_client(
    args: argparse.Namespace,
    service: str,
    read_timeout: float = 120,
    max_attempts: int = 2,
    max_pool_connections: int = 10,
) -> Any:
    """A boto3 client for ``service`` on the server, with few retries: a person is waiting."""
    import boto3
    from botocore.config import Config

    # Credentials as configured for the AWS CLI if any; coldbrew on loopback accepts any.
    session = boto3.session.Session()
    credentials = {}
    if session.get_credentials() is None:
        credentials = {"aws_access_key_id": "coldbrew", "aws_secret_access_key": "coldbrew"}
    return session.client(
        service,
        endpoint_url=server_url(args),
        region_name=session.region_name or "us-east-1",
        config=Config(
            retries={"max_attempts": max_attempts, "mode": "standard"},
            read_timeout=read_timeout,
            max_pool_connections=max_pool_connections,
        ),
        **credentials,
    )


def signed_get(args: argparse.Namespace, path: str, timeout: float = 10) -> Any:
    """``GET path`` on the server (an httpx response), SigV4-signed with the standard credentials
    when there are any (a server with auth on wants it; one without ignores it)."""
    import boto3
    import httpx
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    url = f"{server_url(args).rstrip('/')}{path}"
    session = boto3.session.Session()
    credentials = session.get_credentials()
    headers: dict[str, str] = {}
    if credentials is not None:
        request = AWSRequest(method="GET", url=url)
        SigV4Auth(credentials, "sagemaker", session.region_name or "us-east-1").add_auth(request)
        headers = dict(request.headers.items())
    # HTTPS: trust what boto3 is told to trust (AWS_CA_BUNDLE), as the boto3 clients do.
    verify: Any = os.environ.get("AWS_CA_BUNDLE") or True
    return httpx.get(url, headers=headers, timeout=timeout, verify=verify)
