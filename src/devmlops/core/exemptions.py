"""What only a cluster admin can write: exemptions for a namespace's non-model workloads, and break-glass access
to running Pods. Both are cluster-scoped kinds, so a namespace editor can neither write nor widen them.

A ``ClusterWorkloadExemption`` admits a Pod (or a workload's pod template) in an enforced namespace when every image
is one of its digest-pinned images and the service account is one of its service accounts: an exact list, never a
pattern, so a look-alike image name decides nothing; and never a Pod that the Pod Security "baseline" level forbids
(privileged, host namespaces, ports or paths, added capabilities, unconfined seccomp/AppArmor/SELinux, unmasked
/proc, unsafe sysctls, Windows host processes: core/podbaseline.py). A ``ClusterBreakGlass`` lets named users exec
into, attach to or add ephemeral containers to Pods of its namespaces until it expires; every use is audited.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from devmlops.core.podbaseline import baseline_problems
from devmlops.core.podspec import CONTAINER_PARTS
from devmlops.errors import InvalidInputError

__all__ = [
    "BreakGlass",
    "Exemption",
    "compile_break_glass",
    "compile_exemption",
    "pod_images",
    "pod_service_account",
]

_PINNED = re.compile(r"^[^\s@]+@sha256:[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True, kw_only=True)
class Exemption:
    name: str
    namespaces: frozenset[str]
    images: frozenset[str]
    service_accounts: frozenset[str]
    reason: str

    def problems(self, namespace: str, template: Mapping[str, Any], where: str = "") -> list[str]:
        """Why this exemption does not cover a Pod or pod template (``metadata`` and ``spec``, at field path
        ``where``) in ``namespace`` (empty when it does)."""
        pod_spec = template.get("spec") or {}
        if namespace not in self.namespaces:
            return [f"{self.name} does not cover namespace {namespace}"]
        problems = [
            f"image {image!r} is not one of {self.name}'s images"
            for image in pod_images(pod_spec)
            if image not in self.images
        ]
        account = pod_service_account(pod_spec)
        if account not in self.service_accounts:
            problems.append(f"service account {account!r} is not one of {sorted(self.service_accounts)}")
        return problems + baseline_problems(template, where)


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakGlass:
    name: str
    namespaces: frozenset[str]
    users: frozenset[str]
    groups: frozenset[str]
    expires: dt.datetime
    reason: str

    def covers(self, namespace: str, username: str, groups: Sequence[str], now: dt.datetime) -> bool:
        return (
            namespace in self.namespaces
            and (username in self.users or bool(self.groups.intersection(groups)))
            and now < self.expires
        )

    def account_holders(self) -> list[str]:
        """Why this grant is wider than it reads: each ServiceAccount it names, and each group that holds
        ServiceAccounts (a namespace's, every namespace's, every authenticated identity's), which every editor of their
        namespace acts as (the built-in edit role mints their tokens and impersonates them)."""
        named = [
            f"users {u} is a ServiceAccount of namespace {u.split(':')[2]}"
            for u in sorted(self.users)
            if u.startswith("system:serviceaccount:") and u.count(":") == 3
        ]
        for group in sorted(self.groups):
            if group.startswith("system:serviceaccounts:"):
                named.append(f"groups {group} holds every ServiceAccount of namespace {group.split(':', 2)[2]}")
            elif group in ("system:serviceaccounts", "system:authenticated"):
                named.append(f"groups {group} holds every ServiceAccount of every namespace")
        return named


def pod_images(pod_spec: Mapping[str, Any]) -> list[str]:
    """Every image a Pod spec runs or mounts: containers, init containers, ephemeral containers and image volumes
    (``volumes[].image.reference``: an OCI image's files mounted into the Pod are bytes like any other)."""
    images: list[str] = []
    for part in CONTAINER_PARTS:
        for container in pod_spec.get(part) or []:
            images.append(str(container.get("image", "")) if isinstance(container, Mapping) else "")
    for volume in pod_spec.get("volumes") or []:
        source = volume.get("image") if isinstance(volume, Mapping) else None
        if source is not None:
            images.append(str(source.get("reference", "")) if isinstance(source, Mapping) else "")
    return images


def pod_service_account(pod_spec: Mapping[str, Any]) -> str:
    return str(pod_spec.get("serviceAccountName") or pod_spec.get("serviceAccount") or "default")


def _strings(spec: Mapping[str, Any], key: str, where: str, *, required: bool) -> frozenset[str]:
    value = spec.get(key)
    if value is None and not required:
        return frozenset()
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise InvalidInputError(f"{where}.spec.{key}: got {value!r}, expected a list of non-empty strings")
    if required and not value:
        raise InvalidInputError(f"{where}.spec.{key}: empty; an empty list would match nothing (or everything)")
    return frozenset(value)


def _name_and_spec(obj: Mapping[str, Any], kind: str) -> tuple[str, Mapping[str, Any], str]:
    name = str((obj.get("metadata") or {}).get("name") or "")
    spec = obj.get("spec")
    where = f"{kind} {name}"
    if not isinstance(spec, Mapping):
        raise InvalidInputError(f"{where}: spec: got {spec!r}, expected an object")
    reason = spec.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidInputError(f"{where}.spec.reason: required, say why the exception exists")
    return name, spec, where


def compile_exemption(obj: Mapping[str, Any]) -> Exemption:
    name, spec, where = _name_and_spec(obj, "ClusterWorkloadExemption")
    images = _strings(spec, "images", where, required=True)
    unpinned = sorted(image for image in images if not _PINNED.match(image))
    if unpinned:
        raise InvalidInputError(f"{where}.spec.images: {unpinned} not pinned; expected name@sha256:<64 hex digits>")
    return Exemption(
        name=name,
        namespaces=_strings(spec, "namespaces", where, required=True),
        images=images,
        service_accounts=_strings(spec, "serviceAccounts", where, required=True),
        reason=str(spec["reason"]),
    )


def compile_break_glass(obj: Mapping[str, Any]) -> BreakGlass:
    name, spec, where = _name_and_spec(obj, "ClusterBreakGlass")
    users = _strings(spec, "users", where, required=False)
    groups = _strings(spec, "groups", where, required=False)
    if not users and not groups:
        raise InvalidInputError(f"{where}.spec: names no users and no groups; expected at least one")
    expires = spec.get("expires")
    try:
        when = dt.datetime.fromisoformat(str(expires))
    except ValueError as exc:
        raise InvalidInputError(f"{where}.spec.expires: got {expires!r}, expected an RFC 3339 time") from exc
    if when.tzinfo is None:
        raise InvalidInputError(f"{where}.spec.expires: got {expires!r}, expected a time with a zone")
    return BreakGlass(
        name=name,
        namespaces=_strings(spec, "namespaces", where, required=True),
        users=users,
        groups=groups,
        expires=when,
        reason=str(spec["reason"]),
    )
