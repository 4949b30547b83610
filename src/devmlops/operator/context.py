"""What the operator needs to know about a ModelDeployment beyond its spec, read from the API server when it
reconciles (not in the admission path): the policies that select it, its approval, and its signature bundle."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from kubernetes import client as k8s

from devmlops.adapters.approvals import find_approval
from devmlops.adapters.evidence import DocumentLookup, resolve_source
from devmlops.core.decision import select_policies
from devmlops.core.evidence import ApprovalState
from devmlops.core.gates.approval import approval_required
from devmlops.core.policy import Policy, PolicySet, compile_model_policy, compile_policy
from devmlops.errors import DevmlopsError, InvalidInputError

__all__ = ["ModelContext", "load_context", "load_policies"]

GROUP, VERSION = "devmlops.io", "v1alpha1"


@dataclass(frozen=True, slots=True)
class ModelContext:
    policies: tuple[Policy, ...]
    revision: str
    approval_required_by: tuple[str, ...]
    approval: ApprovalState
    bundle: str

    @property
    def awaiting_approval(self) -> bool:
        return bool(self.approval_required_by) and not self.approval.approved


def _compiled(items: list[Mapping[str, Any]], *, team: bool) -> list[Policy]:
    policies = []
    for item in items:
        try:
            policies.append(compile_model_policy(item) if team else compile_policy(item))
        except InvalidInputError:
            continue  # the webhook refuses broken policies and reports one that slipped in
    return policies


def load_policies(api_client: k8s.ApiClient, namespace: str | None = None) -> PolicySet:
    custom = k8s.CustomObjectsApi(api_client)
    cluster = cast(dict[str, Any], custom.list_cluster_custom_object(GROUP, VERSION, "clustermodelpolicies"))
    if namespace is None:
        team = cast(dict[str, Any], custom.list_custom_object_for_all_namespaces(GROUP, VERSION, "modelpolicies"))
    else:
        team = cast(dict[str, Any], custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "modelpolicies"))
    return PolicySet(tuple(_compiled(cluster["items"], team=False) + _compiled(team["items"], team=True)))


def load_context(
    api_client: k8s.ApiClient, model: Mapping[str, Any], lookup: DocumentLookup, policies: PolicySet | None = None
) -> ModelContext:
    custom = k8s.CustomObjectsApi(api_client)
    namespace = str(model["metadata"]["namespace"])
    policies = policies or load_policies(api_client, namespace)
    labels = lookup.namespace_labels(namespace)
    name = str(((model.get("spec") or {}).get("model") or {}).get("name") or "")
    selecting = tuple(select_policies(policies, namespace=namespace, namespace_labels=labels, model_name=name))
    required_by = tuple(p.name for p in selecting if approval_required(model, p))
    approval = ApprovalState(approved=False)
    if required_by:
        approvals = cast(
            dict[str, Any], custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "modelapprovals")
        )
        approval = find_approval(approvals["items"], model, dt.datetime.now(dt.UTC))
    revision = PolicySet(selecting).revision
    # The same resolution (and evidence label) as admission; reconcile re-decided with it just before.
    signature = resolve_source((model.get("spec") or {}).get("signature"), namespace, lookup, field="spec.signature")
    if signature.text is None:
        raise DevmlopsError(f"spec.signature cannot be read for the serving pod: {signature.error}")
    return ModelContext(selecting, revision, required_by, approval, signature.text)
