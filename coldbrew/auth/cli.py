"""``coldbrew keys create|list|delete``, and the start-up checks ``coldbrew serve`` makes about auth.

Keys live in ``<data_dir>/keys.json`` (mode 0600), so these commands run on the server's machine
with the server's ``--data-dir``; a running server picks changes up within a second.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from coldbrew.auth.errors import PolicyError
from coldbrew.auth.keys import KEYS_FILE, KeyFileError, add_key, delete_key, new_key, read_keys
from coldbrew.auth.policy import Policy, admin_policy, invoke_only_policy, load_policy_text, read_only_policy
from coldbrew.settings import Settings, is_loopback


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir) if args.data_dir is not None else Settings().data_dir


def _policy(args: argparse.Namespace) -> Policy:
    if args.policy is not None:
        text = sys.stdin.read() if args.policy == "-" else Path(args.policy).read_text()
        return load_policy_text(text)
    if args.invoke_only:
        return invoke_only_policy(args.invoke_only)
    if args.read_only:
        return read_only_policy()
    return admin_policy()


def _create(args: argparse.Namespace) -> int:
    chosen = [args.policy is not None, bool(args.invoke_only), args.read_only, args.admin]
    if sum(chosen) != 1:
        print(
            "coldbrew keys create: say what the key may do: --admin, --read-only, "
            "--invoke-only ENDPOINT (repeatable) or --policy FILE",
            file=sys.stderr,
        )
        return 2
    try:
        policy = _policy(args)
    except (PolicyError, OSError) as exc:
        print(f"coldbrew keys create: {exc}", file=sys.stderr)
        return 2
    path = _data_dir(args) / KEYS_FILE
    key = new_key(policy, args.description or "")
    try:
        add_key(path, key)
    except KeyFileError as exc:
        print(f"coldbrew keys create: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"AccessKeyId": key.access_key_id, "SecretAccessKey": key.secret_access_key}))
        return 0
    print(f"Created access key {key.access_key_id} ({policy.summary()}).")
    print("Its secret is shown this once; give both to the client as its AWS credentials:")
    print(f"  export AWS_ACCESS_KEY_ID={key.access_key_id}")
    print(f"  export AWS_SECRET_ACCESS_KEY={key.secret_access_key}")
    return 0


def _list(args: argparse.Namespace) -> int:
    path = _data_dir(args) / KEYS_FILE
    try:
        keys = read_keys(path)
    except KeyFileError as exc:
        print(f"coldbrew keys list: {exc}", file=sys.stderr)
        return 1
    if args.json:
        listed: list[dict[str, Any]] = [
            {
                "AccessKeyId": k.access_key_id,
                "Created": k.created,
                "Description": k.description,
                "Policy": k.policy.to_json(),
            }
            for k in keys.values()
        ]
        print(json.dumps(listed, indent=2))
        return 0
    if not keys:
        print(f"No access keys in {path}; create one with 'coldbrew keys create --admin'.")
        return 0
    print(f"{'ACCESS KEY ID':<22} {'CREATED':<21} {'DESCRIPTION':<24} POLICY")
    for k in keys.values():
        print(f"{k.access_key_id:<22} {k.created:<21} {k.description[:24]:<24} {k.policy.summary()}")
    return 0


def _delete(args: argparse.Namespace) -> int:
    path = _data_dir(args) / KEYS_FILE
    try:
        found = delete_key(path, args.access_key_id)
    except KeyFileError as exc:
        print(f"coldbrew keys delete: {exc}", file=sys.stderr)
        return 1
    if not found:
        print(f"coldbrew keys delete: no access key {args.access_key_id} in {path}", file=sys.stderr)
        return 1
    print(f"Deleted access key {args.access_key_id}; a running server refuses it within a second.")
    return 0


def add_commands(commands: Any) -> None:
    keys = commands.add_parser("keys", help="create, list and delete the access keys clients sign with")
    sub = keys.add_subparsers(dest="keys_command", required=True, help="create, list or delete")
    data_dir_help = "the server's data dir (COLDBREW_DATA_DIR), where keys.json is kept"

    create = sub.add_parser("create", help="create an access key and print its secret (once)")
    what = create.add_argument_group("what the key may do (one of)")
    what.add_argument("--admin", action="store_true", help="everything")
    what.add_argument(
        "--read-only", action="store_true", help="Describe*, List*, Get* of every service and /metrics"
    )
    what.add_argument(
        "--invoke-only",
        action="append",
        metavar="ENDPOINT",
        help="InvokeEndpoint and InvokeEndpointAsync on this endpoint (repeat for more)",
    )
    what.add_argument("--policy", metavar="FILE", help="an IAM-style policy document (JSON; '-' for stdin)")
    create.add_argument("--description", help="a note shown by 'coldbrew keys list'")
    create.add_argument("--data-dir", help=data_dir_help)
    create.add_argument("--json", action="store_true", help="print {AccessKeyId, SecretAccessKey} as JSON")
    create.set_defaults(func=_create)

    listing = sub.add_parser("list", help="list access keys and their policies (never their secrets)")
    listing.add_argument("--data-dir", help=data_dir_help)
    listing.add_argument("--json", action="store_true", help="print the keys as JSON")
    listing.set_defaults(func=_list)

    delete = sub.add_parser("delete", help="delete an access key")
    delete.add_argument("access_key_id", help="the id 'coldbrew keys list' shows (AKCB...)")
    delete.add_argument("--data-dir", help=data_dir_help)
    delete.set_defaults(func=_delete)


def add_serve_flags(serve: argparse.ArgumentParser) -> None:
    serve.add_argument(
        "--auth",
        choices=["auto", "on", "off"],
        help="SigV4 authentication (COLDBREW_AUTH; default auto: on unless listening on loopback)",
    )
    serve.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="allow a non-loopback --host with authentication off (COLDBREW_INSECURE)",
    )
    serve.add_argument(
        "--allowed-host",
        action="append",
        metavar="NAME",
        help="a Host name clients use besides loopback names and IPs (repeatable; COLDBREW_ALLOWED_HOSTS)",
    )
    serve.add_argument("--tls-cert", type=Path, help="PEM certificate for HTTPS (COLDBREW_TLS_CERT)")
    serve.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert (COLDBREW_TLS_KEY)")


def serve_overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for flag in ("auth", "insecure", "tls_cert", "tls_key"):
        value = getattr(args, flag, None)
        if value is not None:
            overrides[flag] = value
    if getattr(args, "allowed_host", None):
        overrides["allowed_hosts"] = ",".join(args.allowed_host)
    return overrides


def startup_check(settings: Settings) -> tuple[str | None, list[str]]:
    """(why the server must not start, or None; warnings to print) for these settings."""
    warnings: list[str] = []
    where = f"{settings.host}:{settings.port}"
    if (settings.tls_cert is None) != (settings.tls_key is None):
        return "--tls-cert and --tls-key (COLDBREW_TLS_CERT, COLDBREW_TLS_KEY) go together; give both.", []
    for tls_file in (settings.tls_cert, settings.tls_key):
        if tls_file is not None and not tls_file.is_file():
            return f"TLS file {tls_file} does not exist.", []
    loopback = is_loopback(settings.host)
    if not loopback and not settings.auth_enabled:
        if not settings.insecure:
            return (
                f"refusing to listen on {where} with authentication off: anyone who can reach the port "
                "could deploy a model, that is run any command as this user. Leave auth on (the default "
                "off loopback; create a key with 'coldbrew keys create --admin'), or pass --insecure "
                "(COLDBREW_INSECURE=1) to serve without it anyway.",
                [],
            )
        warnings.append(
            f"WARNING: serving on {where} WITHOUT AUTHENTICATION (--insecure): anyone who can reach this "
            "port can deploy models and so run any command as this user."
        )
    if settings.auth_enabled:
        try:
            keys = read_keys(settings.keys_path)
        except KeyFileError as exc:
            return str(exc), []
        if not keys:
            why = "--auth on" if settings.auth == "on" else f"{settings.host} is not a loopback address"
            return (
                f"authentication is on ({why}) and there is no access key yet. Create one, then start "
                f"again:\n    coldbrew keys create --admin --data-dir {settings.data_dir}\nand give its "
                "id and secret to clients as AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.",
                [],
            )
        if settings.tls_cert is None and not loopback:
            warnings.append(
                "warning: serving without TLS: signatures stop forged and altered requests, not "
                "eavesdropping on models' inputs and outputs; use --tls-cert/--tls-key or a TLS proxy."
            )
    return None, warnings
