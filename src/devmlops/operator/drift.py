"""Re-evaluation of an admitted ModelDeployment with the same ``decide()`` as admission, reading what it refers
to straight from the API server (the operator is not in the admission path, so a few reads are fine)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from devmlops.adapters.evidence import decode_values, resolve_evidence
from devmlops.adapters.ocisig import ImageSignatureChecker
from devmlops.adapters.registrycache import RegistryResolver
from devmlops.core.model import Decision
from devmlops.core.policy import PolicySet, devmlops_image_demanded, image_authorities
from devmlops.core.ports import PolicyEngine, SignatureVerifier
from devmlops.core.serving import may_serve, model_request
from devmlops.errors import EvidenceUnavailableError

__all__ = ["ApiLookup", "reevaluate"]


class ApiLookup:
    """``DocumentLookup`` over direct API reads (evidence objects must carry the evidence label, as for the webhook)."""

    def __init__(self, api_client: k8s.ApiClient, label: str = "devmlops.io/evidence") -> None:
        self._core = k8s.CoreV1Api(api_client)
        self._label = label

    def _labelled(self, obj: Any) -> bool:
        return (obj.metadata.labels or {}).get(self._label) == "true"

    def config_map(self, namespace: str, name: str) -> Mapping[str, str] | None:
        try:
            found: Any = self._core.read_namespaced_config_map(name, namespace)
        except ApiException:
            return None
        return dict(found.data or {}) if self._labelled(found) else None

    def secret(self, namespace: str, name: str) -> Mapping[str, str] | None:
        try:
            found: Any = self._core.read_namespaced_secret(name, namespace)
        except ApiException as exc:
            if exc.status == 403:
                raise EvidenceUnavailableError(
                    f"the operator may not read Secrets in namespace {namespace} (evidence.secretNamespaces)"
                ) from exc
            return None
        if not self._labelled(found):
            return None
        return decode_values(found.data)

    def namespace_labels(self, namespace: str) -> Mapping[str, str]:
        found: Any = self._core.read_namespace(namespace)
        return dict(found.metadata.labels or {})


def reevaluate(
    model: Mapping[str, Any],
    policies: PolicySet,
    lookup: ApiLookup,
    *,
    verifier: SignatureVerifier,
    engine: PolicyEngine | None = None,
    registry: RegistryResolver | None = None,
    images: ImageSignatureChecker | None = None,
    running_images: Sequence[str] = (),
    devmlops_image: str = "",
) -> Decision:
    """The admission decision again, as of now's policies and trust roots (approval is the operator's own check).
    ``verifier`` is the operator's, with its deadline (operator/verifier.py); ``running_images`` what a KServe
    model's predictor runs now, held to the policies' image signatures like a Triton model's image, and
    ``devmlops_image`` (the installed guard and storage initializer) where a policy demands it signed."""
    metadata = model.get("metadata") or {}
    request = model_request(model, uid=f"recheck-{metadata.get('uid', '')}", username="devmlops-operator")
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # evidence age is judged at each re-check
    authorities = image_authorities(policies)
    running = None
    if images is not None and authorities and running_images:
        running = {image: images.check(image, authorities) for image in sorted(set(running_images))}
    evidence = resolve_evidence(
        model,
        lookup,
        registry,
        images=images,
        image_authorities=authorities,
        now=now,
        devmlops_image=devmlops_image if devmlops_image_demanded(policies) else "",
        runtime_image_signatures=running,
    )
    return may_serve(model, policies, evidence, verifier, engine, stage="admission", request=request)
