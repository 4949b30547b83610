"""AdmissionReview v1 wire types: parse a request defensively, build a response from a ``Decision``.

Parsing never trusts the body: every missing or mistyped field becomes an ``InvalidInputError`` naming it,
which the webhook turns into a denial (fail closed).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict, cast

from devmlops.core.model import Decision
from devmlops.errors import InvalidInputError

__all__ = [
    "AdmissionRequest",
    "AdmissionResponseBody",
    "AdmissionReviewResponse",
    "GroupVersionKind",
    "build_response",
    "parse_review",
]

Operation = Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
_OPERATIONS: frozenset[str] = frozenset({"CREATE", "UPDATE", "DELETE", "CONNECT"})


@dataclass(frozen=True, slots=True)
class GroupVersionKind:
    group: str
    version: str
    kind: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AdmissionRequest:
    """The parts of ``AdmissionReview.request`` that decisions use."""

    uid: str
    kind: GroupVersionKind
    operation: Operation
    namespace: str
    name: str
    username: str
    groups: tuple[str, ...]
    object: Mapping[str, Any] | None
    old_object: Mapping[str, Any] | None
    dry_run: bool = False
    sub_resource: str = ""
    resource: str = (
        ""  # the plural resource (pods, deployments): a subresource's kind (Scale, PodExecOptions) says less
    )
    extra: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] | None = None  # CreateOptions, UpdateOptions, DeleteOptions (propagationPolicy)

    @property
    def orphaning(self) -> bool:
        """A DELETE that leaves the object's dependents running without their owner (``--cascade=orphan``)."""
        options = self.options or {}
        return self.operation == "DELETE" and (
            options.get("propagationPolicy") == "Orphan" or options.get("orphanDependents") is True
        )


class _Status(TypedDict, total=False):
    code: int
    message: str
    reason: str


class AdmissionResponseBody(TypedDict, total=False):
    uid: str
    allowed: bool
    status: _Status
    warnings: list[str]
    auditAnnotations: dict[str, str]


class AdmissionReviewResponse(TypedDict):
    apiVersion: str
    kind: str
    response: AdmissionResponseBody


def _field(mapping: Mapping[str, Any], key: str, path: str, kind: type) -> Any:
    value = mapping.get(key)
    if not isinstance(value, kind):
        found = "nothing" if value is None else type(value).__name__
        raise InvalidInputError(f"AdmissionReview field {path}.{key}: got {found}, expected {kind.__name__}")
    return value


def _optional_object(request: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    value = request.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidInputError(f"AdmissionReview field request.{key}: got {type(value).__name__}, expected object")
    metadata = value.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        found = type(metadata).__name__
        raise InvalidInputError(f"AdmissionReview field request.{key}.metadata: got {found}, expected object")
    return value


def parse_review(body: object) -> AdmissionRequest:
    """Read an ``admission.k8s.io/v1`` AdmissionReview; raise ``InvalidInputError`` naming the bad field."""
    if not isinstance(body, dict):
        raise InvalidInputError(f"AdmissionReview: got {type(body).__name__}, expected a JSON object")
    api_version = body.get("apiVersion")
    if api_version != "admission.k8s.io/v1" or body.get("kind") != "AdmissionReview":
        raise InvalidInputError(
            f"AdmissionReview apiVersion/kind: got {api_version!r}/{body.get('kind')!r}, "
            "expected 'admission.k8s.io/v1'/'AdmissionReview'"
        )
    request = _field(body, "request", "", dict)
    kind = _field(request, "kind", "request", dict)
    operation = _field(request, "operation", "request", str)
    if operation not in _OPERATIONS:
        raise InvalidInputError(
            f"AdmissionReview field request.operation: got {operation!r}, expected one of {sorted(_OPERATIONS)}"
        )
    user = request.get("userInfo") or {}
    if not isinstance(user, dict):
        raise InvalidInputError("AdmissionReview field request.userInfo: expected an object")
    groups = user.get("groups") or []
    if not isinstance(groups, list) or not all(isinstance(group, str) for group in groups):
        raise InvalidInputError("AdmissionReview field request.userInfo.groups: expected a list of strings")
    return AdmissionRequest(
        uid=_field(request, "uid", "request", str),
        kind=GroupVersionKind(
            group=str(kind.get("group", "")),
            version=_field(kind, "version", "request.kind", str),
            kind=_field(kind, "kind", "request.kind", str),
        ),
        operation=cast(Operation, operation),  # checked against _OPERATIONS above
        namespace=str(request.get("namespace") or ""),
        name=str(request.get("name") or ""),
        username=str(user.get("username") or ""),
        groups=tuple(groups),
        object=_optional_object(request, "object"),
        old_object=_optional_object(request, "oldObject"),
        dry_run=bool(request.get("dryRun", False)),
        sub_resource=str(request.get("subResource") or ""),
        resource=str((request.get("resource") or {}).get("resource") or "")
        if isinstance(request.get("resource"), dict)
        else "",
        options=request["options"] if isinstance(request.get("options"), dict) else None,
    )


def build_response(decision: Decision, uid: str) -> AdmissionReviewResponse:
    """The AdmissionReview the API server expects, with the reasons in status, warnings and audit annotations."""
    response: AdmissionResponseBody = {"uid": uid, "allowed": decision.allowed}
    if not decision.allowed:
        response["status"] = {"code": 403, "reason": "Forbidden", "message": decision.message}
    if decision.warnings:
        response["warnings"] = list(decision.warnings)
    # One key per gate and policy; several results under one key (say, two Rego packages of one policy) are joined,
    # blocking ones first, so that a deny is never overwritten by a later pass.
    annotations: dict[str, str] = {}
    for result in sorted(decision.results, key=lambda r: not r.blocking):
        key, text = _annotation_key(result.gate, result.policy), f"{result.outcome}: {result.reason}"
        annotations[key] = f"{annotations[key]} | {text}" if key in annotations else text
    annotations = {key: text[:1024] for key, text in annotations.items()}
    if annotations:
        response["auditAnnotations"] = annotations
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


def _annotation_key(gate: str, policy: str) -> str:
    """The API server prefixes keys with the webhook name and wants a qualified name (<= 63 characters)."""
    key = re.sub(r"[^A-Za-z0-9_.-]", "-", f"{gate}.{policy or 'request'}")[:63].strip("-_.")
    return key or "result"
