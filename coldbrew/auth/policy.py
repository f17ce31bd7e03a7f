"""Access policies in IAM's JSON subset, and the decision for one request.

A policy is IAM's identity-policy document restricted to what an access key on one server needs::

    {"Version": "2012-10-17",
     "Statement": [{"Effect": "Allow", "Action": "sagemaker:InvokeEndpoint",
                    "Resource": "arn:aws:sagemaker:*:*:endpoint/my-endpoint"}]}

``Action`` and ``Resource`` are a string or a list of strings with IAM's wildcards (``*`` any run of
characters, ``?`` one); actions match case-insensitively (as IAM's do), resources case-sensitively.
Evaluation is IAM's: an explicit ``Deny`` wins over any ``Allow``, and with no matching ``Allow``
the request is denied. ``Condition``, ``NotAction``, ``NotResource`` and ``Principal`` are refused
when the policy is loaded (rather than ignored, which would grant more than the author meant).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from typing import Any

from coldbrew.auth.errors import PolicyError


class Effect(Enum):
    ALLOW = "Allow"
    DENY = "Deny"


class Decision(Enum):
    ALLOWED = "allowed"
    EXPLICIT_DENY = "explicitly denied"
    IMPLICIT_DENY = "not allowed"


@lru_cache(maxsize=4096)
def _pattern(glob: str, ignore_case: bool) -> re.Pattern[str]:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in glob)
    return re.compile(regex, re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL)


def matches(glob: str, value: str, ignore_case: bool = False) -> bool:
    """IAM's wildcard match of a whole value: ``*`` any characters (``/`` and ``:`` too), ``?`` one."""
    if glob == "*":
        return True
    return _pattern(glob, ignore_case).fullmatch(value) is not None


@dataclass(frozen=True)
class Statement:
    effect: Effect
    actions: tuple[str, ...]
    resources: tuple[str, ...]

    def applies(self, action: str, resource: str | None) -> bool:
        """Whether this statement speaks about ``action`` on ``resource``. A request whose resource
        could not be determined (None) is covered only by ``"Resource": "*"``."""
        if not any(matches(pattern, action, ignore_case=True) for pattern in self.actions):
            return False
        if resource is None:
            return "*" in self.resources
        return any(matches(pattern, resource) for pattern in self.resources)

    def to_json(self) -> dict[str, Any]:
        return {
            "Effect": self.effect.value,
            "Action": list(self.actions) if len(self.actions) != 1 else self.actions[0],
            "Resource": list(self.resources) if len(self.resources) != 1 else self.resources[0],
        }


@dataclass(frozen=True)
class Policy:
    statements: tuple[Statement, ...]

    def decide(self, action: str, resource: str | None) -> Decision:
        allowed = False
        for statement in self.statements:
            if statement.applies(action, resource):
                if statement.effect is Effect.DENY:
                    return Decision.EXPLICIT_DENY
                allowed = True
        return Decision.ALLOWED if allowed else Decision.IMPLICIT_DENY

    def to_json(self) -> dict[str, Any]:
        return {"Version": "2012-10-17", "Statement": [s.to_json() for s in self.statements]}

    def summary(self) -> str:
        """One line for ``coldbrew keys list``."""
        parts = []
        for s in self.statements:
            parts.append(f"{s.effect.value} {','.join(s.actions)} on {','.join(s.resources)}")
        return "; ".join(parts) or "(nothing allowed)"


_STATEMENT_KEYS = {"Sid", "Effect", "Action", "Resource"}
_REFUSED = {"Condition", "NotAction", "NotResource", "Principal", "NotPrincipal"}
_ACTION = re.compile(r"^(\*|[a-zA-Z0-9\-]+:[a-zA-Z0-9*?]+)$")


def _strings(value: Any, where: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(v, str) and v for v in items):
        raise PolicyError(f"{where} must be a non-empty string or a list of non-empty strings.")
    return tuple(items)


def parse_policy(document: Any) -> Policy:
    """A policy from its JSON document (already decoded), checked; PolicyError says what is wrong."""
    if not isinstance(document, dict):
        raise PolicyError("A policy is a JSON object with a 'Statement' list.")
    unknown = set(document) - {"Version", "Id", "Statement"}
    if unknown:
        raise PolicyError(f"Unknown policy element {sorted(unknown)[0]!r}.")
    raw = document.get("Statement")
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list):
        raise PolicyError("A policy's 'Statement' must be a statement object or a list of them.")
    statements = []
    for number, item in enumerate(raw, 1):
        where = f"Statement {number}"
        if not isinstance(item, dict):
            raise PolicyError(f"{where} must be an object.")
        refused = _REFUSED.intersection(item)
        if refused:
            raise PolicyError(f"{where}: {sorted(refused)[0]} is not supported by coldbrew's policies.")
        unknown = set(item) - _STATEMENT_KEYS
        if unknown:
            raise PolicyError(f"{where}: unknown element {sorted(unknown)[0]!r}.")
        try:
            effect = Effect(item.get("Effect"))
        except ValueError:
            raise PolicyError(f"{where}: Effect must be 'Allow' or 'Deny'.") from None
        if "Action" not in item or "Resource" not in item:
            raise PolicyError(f"{where} needs both 'Action' and 'Resource'.")
        actions = _strings(item["Action"], f"{where}: Action")
        for action in actions:
            if not _ACTION.match(action):
                raise PolicyError(
                    f"{where}: action {action[:80]!r} is not 'service:Operation' (wildcards * and ? allowed)."
                )
        resources = _strings(item["Resource"], f"{where}: Resource")
        statements.append(Statement(effect, actions, resources))
    return Policy(tuple(statements))


def load_policy_text(text: str) -> Policy:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PolicyError(f"The policy is not valid JSON: {exc}.") from None
    return parse_policy(document)


# --- presets -----------------------------------------------------------------------------------------

READ_ONLY_ACTIONS = (
    "sagemaker:Describe*",
    "sagemaker:List*",
    "sagemaker:Search",
    "s3:Get*",
    "s3:List*",
    "cloudwatch:Get*",
    "cloudwatch:List*",
    "cloudwatch:Describe*",
    "logs:Describe*",
    "logs:Get*",
    "logs:FilterLogEvents",
    "logs:StartLiveTail",
    "cloudformation:Describe*",
    "cloudformation:List*",
    "cloudformation:Get*",
    "coldbrew:GetMetrics",
    "coldbrew:ViewDashboard",
)


def admin_policy() -> Policy:
    return Policy((Statement(Effect.ALLOW, ("*",), ("*",)),))


def read_only_policy() -> Policy:
    return Policy((Statement(Effect.ALLOW, READ_ONLY_ACTIONS, ("*",)),))


def invoke_only_policy(endpoints: list[str]) -> Policy:
    """Invoke (real-time and asynchronous) the named endpoints, in any region; nothing else.

    SageMaker's ARNs hold the lower-cased name, so the pattern is lower-cased too."""
    resources = tuple(f"arn:aws:sagemaker:*:*:endpoint/{name.lower()}" for name in endpoints)
    return Policy(
        (Statement(Effect.ALLOW, ("sagemaker:InvokeEndpoint", "sagemaker:InvokeEndpointAsync"), resources),)
    )
