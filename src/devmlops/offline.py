"""``devmlops check``: run ``decide()`` over manifests offline, as the webhook would (like ``kyverno apply``).

ClusterModelPolicies, ConfigMaps, Secrets and Namespaces in the given files take the place of the cluster.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from devmlops.adapters.evidence import decode_values, resolve_evidence
from devmlops.adapters.oms import OmsVerifier
from devmlops.adapters.registrycache import RegistryResolver
from devmlops.core.manifests import parse_model_deployment
from devmlops.core.model import Decision, GateResult
from devmlops.core.policy import NoMatchAction, PolicySet, compile_policy
from devmlops.core.ports import PolicyEngine
from devmlops.core.serving import may_serve, model_request
from devmlops.errors import InvalidInputError

__all__ = ["CheckResult", "check_manifests", "load_manifests"]

_FIX = "fix the ModelDeployment field named above"


@dataclass(frozen=True, slots=True)
class CheckResult:
    """A decision, or ``error`` when the manifest is malformed (then ``decision`` is the denial it would get)."""

    namespace: str
    name: str
    decision: Decision
    error: str = ""


def load_manifests(paths: Iterable[Path]) -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = []
    for path in paths:
        try:
            loaded = list(yaml.safe_load_all(path.read_text()))
        except OSError as exc:
            raise InvalidInputError(f"{path}: cannot be read ({exc.strerror})") from exc
        except yaml.YAMLError as exc:
            raise InvalidInputError(f"{path}: not valid YAML: {exc}") from exc
        for index, doc in enumerate(loaded):
            if doc is None:
                continue
            if not isinstance(doc, dict) or "kind" not in doc:
                raise InvalidInputError(f"{path}: document {index}: expected a Kubernetes object with a kind")
            documents.append(doc)
    return documents


class _FileLookup:
    def __init__(self, documents: list[dict[str, Any]]) -> None:
        self._objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        for doc in documents:
            meta = doc.get("metadata") or {}
            namespace = "" if doc["kind"] == "Namespace" else str(meta.get("namespace") or "default")
            self._objects[(doc["kind"], namespace, str(meta.get("name") or ""))] = doc

    def config_map(self, namespace: str, name: str) -> Mapping[str, str] | None:
        doc = self._objects.get(("ConfigMap", namespace, name))
        return dict(doc.get("data") or {}) if doc else None

    def secret(self, namespace: str, name: str) -> Mapping[str, str] | None:
        doc = self._objects.get(("Secret", namespace, name))
        if doc is None:
            return None
        data = decode_values(doc.get("data"))
        return {**data, **(doc.get("stringData") or {})}

    def namespace_labels(self, namespace: str) -> Mapping[str, str]:
        doc = self._objects.get(("Namespace", "", namespace))
        labels = {"kubernetes.io/metadata.name": namespace}
        return {**labels, **((doc or {}).get("metadata", {}).get("labels") or {})}


def check_manifests(
    documents: list[dict[str, Any]],
    *,
    no_match: NoMatchAction = "deny",
    engine: PolicyEngine | None = None,
    registry: RegistryResolver | None = None,
) -> list[CheckResult]:
    policies = PolicySet(
        tuple(compile_policy(d) for d in documents if d["kind"] == "ClusterModelPolicy"), no_match=no_match
    )
    lookup, verifier = _FileLookup(documents), OmsVerifier()
    results = []
    for doc in documents:
        if doc["kind"] != "ModelDeployment":
            continue
        meta = doc.get("metadata") or {}
        namespace, name = str(meta.get("namespace") or "default"), str(meta.get("name") or "")
        obj = {**doc, "metadata": {**meta, "namespace": namespace}}
        try:
            parse_model_deployment(obj)
        except InvalidInputError as exc:
            denial = GateResult(gate="manifest", outcome="error", reason=exc.user_message, hint=_FIX)
            results.append(CheckResult(namespace, name, Decision((denial,)), error=exc.user_message))
            continue
        request = model_request(obj, uid=f"offline-{namespace}-{name}", username="devmlops-check", operation="CREATE")
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # evidence age is judged at this moment
        evidence = resolve_evidence(obj, lookup, registry, now=now)
        decision = may_serve(obj, policies, evidence, verifier, engine, stage="admission", request=request)
        results.append(CheckResult(namespace, name, decision))
    return results
