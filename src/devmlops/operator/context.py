"""What the operator needs to know about a ModelDeployment beyond its spec, read from the API server when it
reconciles (not in the admission path): the policies that select it, its approval, and its signature bundle."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from kubernetes import client as k8s

from devmlops.adapters.approvals import find_approval
from devmlops.adapters.evidence import DocumentLookup, resolve_evidence
from devmlops.adapters.ocisig import ImageSignatureChecker
from devmlops.adapters.registrycache import RegistryResolver
from devmlops.core.decision import select_policies
from devmlops.core.evidence import ApprovalState, Document
from devmlops.core.gates.approval import approval_required
from devmlops.core.gates.compliance import EffectiveTier, effective_tier
from devmlops.core.policy import Policy, PolicySet

__all__ = ["ModelContext", "load_context"]

GROUP, VERSION = "devmlops.io", "v1alpha1"


@dataclass(frozen=True, slots=True)
class ModelContext:
    policies: tuple[Policy, ...]
    revision: str
    approval_required_by: tuple[str, ...]
    approval: ApprovalState
    bundles: tuple[str, ...]  # the readable signature bundles, in the order admission read them
    tier: EffectiveTier  # the effective risk tier, which the approval demands follow
    attestations: tuple[Document, ...] = ()  # spec.attestations resolved: the signed drift baseline is among them

    @property
    def awaiting_approval(self) -> bool:
        return bool(self.approval_required_by) and not self.approval.approved


def load_context(
    api_client: k8s.ApiClient,
    model: Mapping[str, Any],
    lookup: DocumentLookup,
    policies: PolicySet,
    registry: RegistryResolver | None = None,
    images: ImageSignatureChecker | None = None,
) -> ModelContext:
    custom = k8s.CustomObjectsApi(api_client)
    namespace = str(model["metadata"]["namespace"])
    labels = lookup.namespace_labels(namespace)
    name = str(((model.get("spec") or {}).get("model") or {}).get("name") or "")
    selecting = tuple(select_policies(policies, namespace=namespace, namespace_labels=labels, model_name=name))
    # The effective tier, as admission and the webhook's serving stage compute it (label, SBOM, policies).
    evidence = resolve_evidence(model, lookup, registry, images=images)
    tier = effective_tier(model, selecting, evidence.sbom_summary)
    required_by = tuple(p.name for p in selecting if approval_required(p, tier))
    approval = ApprovalState(approved=False)
    if required_by:
        approvals = cast(
            dict[str, Any], custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "modelapprovals")
        )
        approval = find_approval(
            approvals["items"], model, dt.datetime.now(dt.UTC), judged_by=lambda: (selecting, tier)
        )
    revision = PolicySet(selecting).revision
    # The same resolution (and evidence label) as admission; reconcile re-decided with it just before.
    # spec.signature, or the bundle stored with the registered version when the spec names none.
    # Every readable bundle (an OCI model may carry several as referrers); the plan takes the first that verifies.
    # None readable is no reason to stop here: the decision denies it, naming the field, and a model that may not be
    # served is degraded (and scaled to zero where a policy says so). Raising here parked every reconcile of the model
    # before its decision, so an editor who deleted the signature's ConfigMap kept a revoked model serving.
    bundles = tuple(document.text for document in evidence.signatures if document.text is not None)
    return ModelContext(selecting, revision, required_by, approval, bundles, tier, evidence.attestations)
