"""The admission service behind ``/validate``: resolve evidence from the caches, then ``decide()``."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

from devmlops.adapters.approvals import find_approval
from devmlops.adapters.evidence import DocumentLookup, resolve_evidence
from devmlops.adapters.ocisig import ImageSignatureChecker, OciError
from devmlops.adapters.registrycache import RegistryResolver
from devmlops.core.addresses import (
    ENDPOINT_SLICES,
    added_external_ips,
    model_owner,
    sliced_services,
    waiting_slices,
)
from devmlops.core.approvalreview import not_a_second_person, requester_account
from devmlops.core.attestation import VerifiedAttestation
from devmlops.core.baseline import evaluation_authorities, monitors_drift, signed_baseline
from devmlops.core.decision import MODEL_APPROVAL, MODEL_DEPLOYMENT, decide, resource_of, select_policies
from devmlops.core.evidence import DEFAULT_SERVER_IMAGES, ApprovalState, Chain, Evidence, Identities, SignedImages
from devmlops.core.exemptions import BreakGlass, Exemption, pod_images
from devmlops.core.gates.compliance import EffectiveTier, effective_tier
from devmlops.core.gates.requester import REQUESTED_BY, REQUESTER_GROUPS, recorded_groups
from devmlops.core.guard import tightest
from devmlops.core.manifests import parse_model_deployment
from devmlops.core.model import Decision
from devmlops.core.mutation import stamp_patch
from devmlops.core.pinning import tag_references
from devmlops.core.plan import VerificationPlan
from devmlops.core.policy import Authority, Policy, PolicySet, devmlops_image_demanded, image_authorities
from devmlops.core.ports import PolicyEngine, SignatureVerifier, SignedModel
from devmlops.core.review import AdmissionRequest
from devmlops.core.rollout import what_serves
from devmlops.core.serving import may_serve, model_request
from devmlops.core.workloads import (
    CONNECTS,
    ENFORCE_LABEL,
    SERVICE_SUFFIXES,
    SERVING_RESOURCES,
    controller_of,
    model_service_names,
    runtime_images,
    service_owner_candidates,
)
from devmlops.errors import InvalidInputError, RegistryUnavailableError
from devmlops.webhook.metrics import WebhookMetrics

__all__ = ["AdmissionService", "TimedVerifier"]


class TimedVerifier:
    """Observes how long each verification takes (devmlops_gate_duration_seconds)."""

    def __init__(self, inner: SignatureVerifier, metrics: WebhookMetrics) -> None:
        self._inner = inner
        self._metrics = metrics

    def verify_model(self, bundle: str, authority: Authority) -> SignedModel:
        started = time.perf_counter()
        try:
            return self._inner.verify_model(bundle, authority)
        finally:
            self._metrics.gate_duration.labels("signature").observe(time.perf_counter() - started)

    def verify_blob(self, artifact: bytes, bundle: str, authority: Authority) -> str:
        started = time.perf_counter()
        try:
            return self._inner.verify_blob(artifact, bundle, authority)
        finally:
            self._metrics.gate_duration.labels("sbom").observe(time.perf_counter() - started)

    def verify_attestation(self, bundle: str, authority: Authority) -> VerifiedAttestation:
        started = time.perf_counter()
        try:
            return self._inner.verify_attestation(bundle, authority)
        finally:
            self._metrics.gate_duration.labels("evidence").observe(time.perf_counter() - started)


class ClusterLookup(DocumentLookup, Protocol):
    """The evidence lookup plus the ModelDeployments and ModelApprovals the webhook watches."""

    def model_deployment(self, namespace: str, name: str) -> Mapping[str, Any] | None: ...

    def approvals(self) -> Sequence[Mapping[str, Any]]: ...

    def inference_service(self, namespace: str, name: str) -> Mapping[str, Any] | None: ...

    def workload(self, resource: str, namespace: str, name: str) -> Mapping[str, Any] | None: ...

    def exemptions(self) -> tuple[Exemption, ...]: ...

    def namespace_labels_now(self, namespace: str) -> Mapping[str, str]: ...

    def break_glass(self) -> tuple[BreakGlass, ...]: ...

    def service(self, namespace: str, name: str) -> Mapping[str, Any] | None: ...

    def ip_address(self, ip: str) -> Mapping[str, Any] | None: ...

    def endpoint_slices(self, namespace: str, service: str) -> Sequence[Mapping[str, Any]]: ...

    def pod(self, namespace: str, name: str) -> Mapping[str, Any] | None: ...

    def may_act_as(self, user: str, groups: Sequence[str], namespace: str, account: str) -> str: ...


# The owners a model server's chain may pass through, and where the webhook finds them: (group, kind) -> resource.
_CHAIN_OWNERS = {
    ("apps", "ReplicaSet"): "replicasets",
    ("apps", "Deployment"): "deployments",
    ("serving.kserve.io", "InferenceService"): "inferenceservices",
}
AUTHENTICATED = "system:authenticated"  # the group of every authenticated user
_MAX_HOPS = 4  # Pod -> ReplicaSet -> Deployment -> InferenceService -> ModelDeployment
# Kinds the API server sends from every namespace whose decision is stricter under enforcement.
_ENFORCEMENT_MATTERS = frozenset({"deployments", "statefulsets", "servingruntimes", "inferencegraphs"})


class AdmissionService:
    def __init__(
        self,
        *,
        policies: Callable[[], PolicySet],
        lookup: ClusterLookup,
        verifier: SignatureVerifier,
        engine: PolicyEngine | None = None,
        model_server_images: tuple[str, ...] = DEFAULT_SERVER_IMAGES,
        identities: Identities | None = None,
        verifier_image: str = "devmlops:0.1.0",
        registry: RegistryResolver | None = None,
        images: ImageSignatureChecker | None = None,
    ) -> None:
        self._registry = registry
        self._image_checker = images
        self._image_keys: tuple[str, dict[str, Any]] | None = None
        self._policies = policies
        self._lookup = lookup
        self._verifier = verifier
        self._engine = engine
        self._model_server_images = model_server_images
        self._identities = identities or Identities()
        self._verifier_image = verifier_image

    def _images(self) -> dict[str, Any]:
        """The image signature checker, the image keys of every policy (each policy reads its own) and devmlops's own
        image where a policy demands it signed."""
        if self._image_checker is None:
            return {}
        policies = self._policies()
        cached = self._image_keys
        if cached is None or cached[0] != policies.revision:  # worked out once per policy revision, not per review
            cached = self._image_keys = (
                policies.revision,
                {
                    "images": self._image_checker,
                    "image_authorities": image_authorities(policies),
                    "devmlops_image": self._verifier_image if devmlops_image_demanded(policies) else "",
                },
            )
        return cached[1]

    def decide(self, request: AdmissionRequest) -> Decision:
        return decide(request, self._policies(), self.evidence(request), self._verifier, self._engine)

    def evidence(self, request: AdmissionRequest) -> Evidence:
        """What the request refers to, from the caches, with the time of this decision."""
        now = dt.datetime.now(dt.UTC)
        stamp = _rfc3339(now)
        kind = (request.kind.group, request.kind.kind)
        if request.operation == "DELETE":  # who may delete a model's Service (core/addresses.py)
            return Evidence(identities=self._identities, now=stamp)
        if resource_of(request) in SERVING_RESOURCES:  # exec and attach may come without an object: still decided
            raw = request.object or {}
            obj = {**raw, "metadata": {**(raw.get("metadata") or {}), "namespace": request.namespace}}
            return self._serving_evidence(request, obj, stamp)
        if request.object is None:
            return Evidence(now=stamp)
        obj = {**request.object, "metadata": {**(request.object.get("metadata") or {}), "namespace": request.namespace}}
        if kind == MODEL_DEPLOYMENT:
            creating = request.operation == "CREATE"
            squatted = self._squatted_services(obj) if creating else ()
            slices = self._squatted_slices(obj) if creating else ()
            # Names are immutable, so checked at create (a ModelDeployment named so before this rule keeps working).
            name = _name(obj)
            suffix = next((s for s in SERVICE_SUFFIXES if s and name.endswith(s) and name != s), "") if creating else ""
            return self._model_evidence(
                obj,
                now,
                now=stamp,
                requester_stamped=True,
                squatted_services=squatted,
                squatted_slices=slices,
                reserved_suffix=suffix,
            )
        if resource_of(request) == ENDPOINT_SLICES:
            services = sliced_services(request)
            models = {s: m for s in services if (m := self._model_of_service(request.namespace, s))}
            return Evidence(model_addresses=models, identities=self._identities, now=stamp)
        labels = dict(self._lookup.namespace_labels(request.namespace))
        if kind == MODEL_APPROVAL:
            target = self._approval_target(request)
            # The target's SBOM, for its effective risk tier (the review decides whether approval is required).
            found = (
                resolve_evidence(target, self._lookup, self._registry, **self._images()) if target is not None else None
            )
            summary = found.sbom_summary if found is not None else None
            annotations = ((target or {}).get("metadata") or {}).get("annotations") or {}
            requester = str(annotations.get(REQUESTED_BY) or "")
            # The access reviews (dozens for a ServiceAccount) are asked only where the review reads them: for a new
            # approval of a model that exists, by someone not_a_second_person already refuses for who they are.
            asks = (
                request.operation == "CREATE"
                and target is not None
                and not not_a_second_person(request.username, requester, request.namespace)
            )
            return Evidence(
                target=target,
                sbom_summary=summary,
                namespace_labels=labels,
                now=stamp,
                approver_acts_as=self._acts_as_requester(request, requester) if asks else "",
                requester_acts_as=self._requester_acts_as_approver(request, requester, annotations) if asks else "",
            )
        return Evidence(namespace_labels=labels, now=stamp)

    def stamp(self, request: AdmissionRequest) -> list[dict[str, Any]]:
        """The mutating webhook's JSONPatch: for a new ModelApproval, stamped with the ModelDeployment it names; for
        a new ModelDeployment without a guard, the guard its selecting policies demand; for a ModelDeployment that
        names tags, the digests they name now (asked from the registries: call it off the event loop). Raises
        ``InvalidInputError`` for a reference outside the OCI grammar and ``RegistryUnavailableError`` for a tag
        that could not be resolved: the mutating webhook denies, naming the field."""
        target, guard = None, None
        kind = (request.kind.group, request.kind.kind)
        if kind == MODEL_APPROVAL and request.operation == "CREATE":
            target = self._approval_target(request)
        pins = self._pins(request.object) if kind == MODEL_DEPLOYMENT and isinstance(request.object, dict) else {}
        if kind == MODEL_DEPLOYMENT and request.operation == "CREATE" and request.object is not None:
            model = ((request.object.get("spec") or {}).get("model") or {}) if isinstance(request.object, dict) else {}
            selecting = select_policies(
                self._policies(),
                namespace=request.namespace,
                namespace_labels=self._lookup.namespace_labels(request.namespace),
                model_name=str(model.get("name") or "") if isinstance(model, dict) else "",
            )
            guard = tightest([p.guard for p in selecting if p.guard is not None])
        return stamp_patch(request, target=target, guard=guard, pins=pins)

    def _pins(self, obj: Mapping[str, Any]) -> dict[str, str]:
        """field -> the digest its tag names now, for every tag a ModelDeployment names."""
        references = tag_references(obj)
        checker = self._image_checker
        pins: dict[str, str] = {}
        for field, reference in references.items():
            if checker is None:
                raise RegistryUnavailableError(
                    f"{field}: '{reference.written}' names a tag and this webhook reads no registry to resolve it; "
                    "name the digest (@sha256:...)"
                )
            try:
                pins[field] = checker.resolve(reference)
            except OciError as exc:
                raise RegistryUnavailableError(
                    f"{field}: the tag '{reference.tag}' of '{reference.written}' could not be resolved to a digest: "
                    f"{exc}; push the tag, or name the digest (@sha256:...)",
                    context={"field": field, "reference": reference.written},
                ) from None
        return pins

    def _approval_target(self, request: AdmissionRequest) -> Mapping[str, Any] | None:
        """The ModelDeployment a ModelApproval names, from the cache, with its namespace filled in."""
        name = str(((request.object or {}).get("spec") or {}).get("modelDeployment") or "")
        target = self._lookup.model_deployment(request.namespace, name) if name else None
        if target is None:
            return None
        return {**target, "metadata": {**(target.get("metadata") or {}), "namespace": request.namespace}}

    def _acts_as_requester(self, request: AdmissionRequest, requester: str) -> str:
        """For a new approval of a model a ServiceAccount requested: how the approver may act as that account, as the
        API server's authorizer answers now ('' when they may not). Every editor of its namespace may (tokens,
        impersonation, Pods and token Secrets), so such an editor may have asked for the model under its name."""
        account = requester_account(requester)
        return self._lookup.may_act_as(request.username, request.groups, *account) if account else ""

    def _requester_acts_as_approver(
        self, request: AdmissionRequest, requester: str, annotations: Mapping[str, Any]
    ) -> str:
        """For a new approval by a ServiceAccount: how the model's requester, in the groups stamped with them
        (``annotations``, the model's), may act as it, as the API server's authorizer answers now ('' when they may
        not). An editor of that account's namespace may (the built-in edit role mints its tokens and impersonates
        it): mallory approved her own model with a token she minted for the CI namespace's approver bot. A model
        whose requester's groups are not recorded (stamped before they were, or an unreadable stamp) is refused:
        asked about as any authenticated user, mallory's rights through her ML engineers' group went unseen and her
        bot's approval was admitted."""
        approver = requester_account(request.username)
        if approver is None or not requester:
            return ""
        stamped = recorded_groups(annotations.get(REQUESTER_GROUPS))
        if stamped is None:
            return (
                f"their groups are unknown: annotation {REQUESTER_GROUPS} of the ModelDeployment is missing or "
                "unreadable, and rights held through a group cannot be asked about; a change of its spec stamps them"
            )
        groups = tuple(dict.fromkeys((*stamped, AUTHENTICATED)))
        return self._lookup.may_act_as(requester, groups, *approver)

    def _model_evidence(self, model: Mapping[str, Any], clock: dt.datetime, **fields: Any) -> Evidence:
        """A ModelDeployment's documents and its valid approval, for admission and for the serving stage: the
        approval is judged under the policies selecting it at its effective tier, as decide() will judge it.
        ``fields`` are further Evidence fields, set when it is built (a dataclass copy costs as much as a gate)."""
        fields.setdefault("now", _rfc3339(clock))  # evidence age, at the serving stage too
        approvals = self._lookup.approvals()
        if not approvals:  # what find_approval says when no approval names the model
            unapproved = ApprovalState(approved=False)
            return resolve_evidence(
                model, self._lookup, self._registry, **self._images(), approval=unapproved, **fields
            )
        evidence = resolve_evidence(model, self._lookup, self._registry, **self._images())

        def judged_by() -> tuple[list[Policy], EffectiveTier]:
            selecting = select_policies(
                self._policies(),
                namespace=str((model.get("metadata") or {}).get("namespace") or ""),
                namespace_labels=evidence.namespace_labels,
                model_name=str(((model.get("spec") or {}).get("model") or {}).get("name") or ""),
            )
            return selecting, effective_tier(model, selecting, evidence.sbom_summary)

        approval = find_approval(approvals, model, clock, judged_by=judged_by)
        return replace(evidence, approval=approval, **fields)

    def _squatted_services(self, model: Mapping[str, Any]) -> tuple[str, ...]:
        """In every namespace: Services that already carry the names of the new model's Services and that no
        ModelDeployment or InferenceService owns (KServe would keep such a Service as its own; one read each). A
        model's address is guaranteed everywhere: outside enforcement mallory's ExternalName fraud-predictor, written
        before "fraud" existed with the ports and selector KServe renders, became the new model's address."""
        namespace = str((model.get("metadata") or {}).get("namespace") or "")
        found = []
        for candidate in model_service_names(model):
            service = self._lookup.service(namespace, candidate)
            if service is not None and model_owner(service) is None:
                found.append(candidate)
        return tuple(found)

    def _squatted_slices(self, model: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
        """In every namespace: EndpointSlices already labelled with the names of the new model's Services that the
        EndpointSlice controller does not keep for a model's Service (kube-proxy would join them to the model's
        Service once it exists; core/addresses.py). One list per name, and a read of the Service where one is found."""
        namespace = str((model.get("metadata") or {}).get("namespace") or "")
        found: list[tuple[str, str]] = []
        for candidate in model_service_names(model):
            slices = self._lookup.endpoint_slices(namespace, candidate)
            if not slices:
                continue
            service = self._lookup.service(namespace, candidate)
            uid = str((service.get("metadata") or {}).get("uid") or "") if service and model_owner(service) else ""
            found.extend((name, candidate) for name in waiting_slices(slices, candidate, uid))
        return tuple(found)

    def _model_of_service(self, namespace: str, service: str) -> str:
        """The model whose Service ``service`` is ('ModelDeployment ns/name'), or '': a ModelDeployment whose Service
        the name would be (core/workloads.py), or a model owning the stored Service (one read)."""
        model = next((n for n in service_owner_candidates(service) if self._lookup.model_deployment(namespace, n)), "")
        if model:
            return f"ModelDeployment {namespace}/{model}"
        owner = model_owner(self._lookup.service(namespace, service) if service else None)
        return f"{owner.get('kind')} {namespace}/{owner.get('name')}" if owner else ""

    def _cluster_ip_models(self, ips: Sequence[str]) -> dict[str, str]:
        """For each address that is a model Service's ClusterIP: 'Service ns/name of <model>' (the API server's
        IPAddress object names the Service it is allocated to). Only the denial's wording depends on it: a new
        externalIP is refused whoever's address it is."""
        found: dict[str, str] = {}
        for ip in ips:
            ref = ((self._lookup.ip_address(ip) or {}).get("spec") or {}).get("parentRef") or {}
            if ref.get("resource") != "services" or ref.get("group"):
                continue
            namespace, name = str(ref.get("namespace") or ""), str(ref.get("name") or "")
            model = self._model_of_service(namespace, name)
            if model:
                found[ip] = f"Service {namespace}/{name} of {model}"
        return found

    def _serving_evidence(self, request: AdmissionRequest, obj: Mapping[str, Any], stamp: str) -> Evidence:
        """For a Pod, workload, subresource or KServe kind: its controller chain (for a scale, the chain of the stored
        workload it scales), the exemptions and break-glass grants, and the image allow-lists for runtimes."""
        namespace = request.namespace
        labels = dict(self._lookup.namespace_labels(namespace)) if namespace else {}
        resource = resource_of(request)
        connects = request.sub_resource in CONNECTS
        if namespace and (resource in _ENFORCEMENT_MATTERS or connects) and labels.get(ENFORCE_LABEL) != "true":
            labels = dict(self._lookup.namespace_labels_now(namespace))  # the label may be newer than the cache
        connected_pod_labels = None
        if connects and namespace and labels.get(ENFORCE_LABEL) != "true":
            # Sent from every namespace, with no Pod (registration.py): the Pod it opens decides, read once.
            opened = self._lookup.pod(namespace, request.name)
            connected_pod_labels = dict((opened.get("metadata") or {}).get("labels") or {}) if opened else None
        scaled = None
        subject: Mapping[str, Any] | None = obj
        if request.sub_resource == "scale":
            scaled = self._lookup.workload(resource, namespace, request.name)
            subject = scaled
        elif request.sub_resource:
            subject = None
        chain = self._chain(namespace, subject, request) if subject is not None else None
        reserved_for = ""
        if resource == "services" and namespace:
            name = request.name or _name(obj)
            reserved_for = next(
                (n for n in service_owner_candidates(name) if self._lookup.model_deployment(namespace, n) is not None),
                "",
            )
        addresses = self._cluster_ip_models(added_external_ips(request)) if resource == "services" else {}
        cluster_policies = self._cluster_policies(namespace, labels)
        is_runtime = resource in ("servingruntimes", "clusterservingruntimes")
        return Evidence(
            reserved_for=reserved_for,
            model_addresses=addresses,
            namespace_labels=labels,
            now=stamp,
            chain=chain,
            scaled=scaled,
            connected_pod_labels=connected_pod_labels,
            exemptions=self._lookup.exemptions(),
            break_glass=self._lookup.break_glass(),
            identities=self._identities,
            verifier_image=self._verifier_image,
            model_server_images=self._model_server_images,
            image_allow_lists=_image_allow_lists(cluster_policies),
            signed_images=self._signed_images(runtime_images(obj), cluster_policies) if is_runtime else SignedImages(),
        )

    def _signed_images(self, images: Sequence[str], policies: Sequence[Policy]) -> SignedImages:
        """The signatures ``policies`` demand of ``images``, and what the registry holds for each pinned one (checked
        once against every authority they name; bundle lists cached, verifications cached)."""
        demands = tuple(
            (p.name, tuple((a.fingerprint, a.name) for a in p.image_authorities))
            for p in policies
            if p.image_authorities
        )
        if not demands or self._image_checker is None:
            return SignedImages(demands=demands)
        authorities = tuple({a.fingerprint: a for p in policies for a in p.image_authorities}.values())
        pinned = sorted({image for image in images if "@sha256:" in image})
        return SignedImages(demands, {image: self._image_checker.check(image, authorities) for image in pinned})

    def _cluster_policies(self, namespace: str, labels: Mapping[str, str]) -> list[Policy]:
        """The ClusterModelPolicies that select a namespace (every one for a cluster-scoped object)."""
        return [
            p
            for p in self._policies().policies
            if not p.namespace
            and (not namespace or p.namespace_selector is None or p.namespace_selector.matches(labels))
        ]

    def _chain(self, namespace: str, obj: Mapping[str, Any], request: AdmissionRequest) -> Chain | None:
        """Follow controller ownerReferences up to a ModelDeployment, each owner found in the caches with the uid the
        reference names (a copied reference to another object, or to one that does not exist, breaks the chain)."""
        if controller_of(obj) is None:
            return None
        hops: list[Mapping[str, Any]] = []
        current = obj
        for _ in range(_MAX_HOPS):
            ref = controller_of(current)
            if ref is None:
                return Chain(hops=tuple(hops), broken=f"{current.get('kind')} {_name(current)} has no controller")
            group = str(ref.get("apiVersion") or "").partition("/")[0] if "/" in str(ref.get("apiVersion")) else ""
            kind, name, uid = str(ref.get("kind")), str(ref.get("name")), ref.get("uid")
            if (group, kind) == ("devmlops.io", "ModelDeployment"):
                model = self._lookup.model_deployment(namespace, name)
                if model is None or (model.get("metadata") or {}).get("uid") != uid:
                    return Chain(hops=tuple(hops), broken=f"ModelDeployment {name} with uid {uid} does not exist")
                return self._model_chain(tuple(hops), model, request)
            resource = _CHAIN_OWNERS.get((group, kind))
            if resource is None:
                return Chain(
                    hops=tuple(hops), broken=f"its controller {kind} {name} is no part of a model server chain"
                )
            owner = self._lookup.workload(resource, namespace, name)
            if owner is None or (owner.get("metadata") or {}).get("uid") != uid:
                return Chain(hops=tuple(hops), broken=f"{kind} {name} with uid {uid} does not exist")
            current = {**owner, "kind": kind}
            hops.append(current)
        return Chain(hops=tuple(hops), broken=f"a controller chain longer than {_MAX_HOPS} owners")

    def _model_chain(
        self, hops: tuple[Mapping[str, Any], ...], model: Mapping[str, Any], child: AdmissionRequest
    ) -> Chain:
        """The ModelDeployment decided at the serving stage, with the plan and image allow-lists derived again."""
        metadata = model.get("metadata") or {}
        namespace = str(metadata.get("namespace") or child.namespace)
        model = {**model, "metadata": {**metadata, "namespace": namespace}}
        model_name = str(((model.get("spec") or {}).get("model") or {}).get("name") or "")
        labels = self._lookup.namespace_labels(namespace)
        selecting = select_policies(
            self._policies(), namespace=namespace, namespace_labels=labels, model_name=model_name
        )
        decision, plan_json, baseline_json = self._decided_version(model, child, selecting)
        stable_decision, stable_plan_json, stable_baseline_json = None, "", ""
        try:
            parsed = parse_model_deployment(model)
            serves = what_serves(parsed, model.get("status"), parsed.metadata.generation)
        except InvalidInputError as exc:
            return Chain(hops=hops, broken=f"ModelDeployment {_name(model)} cannot be rendered: {exc.user_message}")
        if serves.stable is not None:
            # A gated rollout (core/rollout.py): the version the status names as stable is decided again, gate by
            # gate, as if it were the spec; a child rendered from it is admitted on that decision.
            stable_model = {**model, "spec": (model.get("status") or {})["rollout"]["stableSpec"]}
            # Selected by the stable version's own model name, as the operator selects them for it.
            stable_name = serves.stable.spec.model.name
            stable_selecting = select_policies(
                self._policies(), namespace=namespace, namespace_labels=labels, model_name=stable_name
            )
            stable_decision, stable_plan_json, stable_baseline_json = self._decided_version(
                stable_model, child, stable_selecting
            )
            top = hops[-1] if hops else child.object or {}
            if _name(top) == _name(model) or not serves.canary:  # the stable version's child, not the new one's
                decision = stable_decision
        return Chain(
            hops=hops,
            model=model,
            decision=decision,
            plan_json=plan_json,
            stable_plan_json=stable_plan_json,
            baseline_json=baseline_json,
            stable_baseline_json=stable_baseline_json,
            image_allow_lists=_image_allow_lists(selecting),
            s3_endpoint_allow_lists=tuple((p.name, p.allow.s3_endpoints) for p in selecting if not p.namespace),
            signed_images=self._signed_images(_kserve_deployment_images(hops, child), selecting),
        )

    def _decided_version(
        self, model: Mapping[str, Any], child: AdmissionRequest, selecting: Sequence[Policy]
    ) -> tuple[Decision, str, str]:
        """One version of a ModelDeployment decided at the serving stage, its verification plan and (where its guard
        monitors drift) its signed drift baseline, derived again."""
        evidence = self._model_evidence(model, dt.datetime.now(dt.UTC))
        bundles = [document.text for document in evidence.signatures if document.text]
        digest = str(((model.get("spec") or {}).get("model") or {}).get("digest") or "")
        plan_json = VerificationPlan.for_bundles(bundles, digest, selecting, self._verifier).to_json()
        baseline_json = (
            signed_baseline(evidence.attestations, digest, evaluation_authorities(selecting), self._verifier)
            if monitors_drift(model)
            else ""
        )
        return self._serving_decision(model, child, evidence), plan_json, baseline_json

    def _serving_decision(self, model: Mapping[str, Any], child: AdmissionRequest, evidence: Evidence) -> Decision:
        """The owner decided again at the serving stage: signature, policies, approval, Rego."""
        request = model_request(model, uid=child.uid, username=child.username, groups=child.groups)
        return may_serve(model, self._policies(), evidence, self._verifier, self._engine, request=request)


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


_STAMP: tuple[int, str] = (-1, "")


def _rfc3339(now: dt.datetime) -> str:
    """``now`` to the second, as RFC 3339 UTC; formatted once per second (strftime costs as much as a gate)."""
    global _STAMP
    second = int(now.timestamp())
    cached = _STAMP
    if cached[0] != second:
        cached = _STAMP = (second, now.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return cached[1]


def _kserve_deployment_images(hops: Sequence[Mapping[str, Any]], child: AdmissionRequest) -> list[str]:
    """The images of KServe's predictor Deployment in a chain: the object under review, or the hop it passes."""
    candidates = [{**(child.object or {}), "kind": child.kind.kind}, *hops]
    for obj in candidates:
        if obj.get("kind") == "Deployment" and (controller_of(obj) or {}).get("kind") == "InferenceService":
            return pod_images(((obj.get("spec") or {}).get("template") or {}).get("spec") or {})
    return []


def _image_allow_lists(policies: Iterable[Policy]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple((p.name, p.allow.images) for p in policies if p.allow.images is not None)
