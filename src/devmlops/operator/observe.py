"""Everything ``reconcile.plan`` decides from, read for one ModelDeployment: its policies and approval, the decision
again (the same ``decide()`` as admission), the signature verified again, and its children as stored; and what
``reconcile.slice_removals`` decides from: the EndpointSlices under its Service names, the uids of those Services; and
what ``reconcile.service_removals`` decides from: a KServe model's InferenceService and the Services under its names."""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from devmlops.adapters.ocisig import ImageSignatureChecker
from devmlops.adapters.opa import OpaEngine
from devmlops.adapters.registrycache import RegistryResolver
from devmlops.core.addresses import SERVICE_NAME_LABEL
from devmlops.core.baseline import evaluation_authorities, monitors_drift, signed_baseline
from devmlops.core.exemptions import pod_images
from devmlops.core.manifests import parse_model_deployment
from devmlops.core.model import Decision
from devmlops.core.plan import VerificationPlan
from devmlops.core.policy import PolicySet, image_authorities
from devmlops.core.ports import SignatureVerifier, VerificationFailed
from devmlops.core.render import CANARY_SUFFIX
from devmlops.core.rollout import PROGRESSING, what_serves
from devmlops.core.workloads import model_service_names
from devmlops.errors import InvalidInputError
from devmlops.operator.analysis import CanaryAnalysis
from devmlops.operator.context import ModelContext, load_context
from devmlops.operator.drift import ApiLookup, reevaluate
from devmlops.operator.kserveevents import KServeWarnings
from devmlops.operator.policies import PolicyWatch
from devmlops.operator.readiness import child_readiness
from devmlops.operator.reconcile import Approvals, Observation, Serving, child_keys, timestamp
from devmlops.operator.rollout import Measured

__all__ = ["Observer"]

PREDICTOR_LABEL = "serving.kserve.io/inferenceservice"  # on every Pod KServe's predictor Deployment makes
_log = logging.getLogger("devmlops.operator")


class Observer:
    def __init__(
        self,
        api_client: k8s.ApiClient,
        dynamic: DynamicClient,
        policy_watch: PolicyWatch,
        warnings: KServeWarnings,
        *,
        opa_url: str | None,
        verifier: SignatureVerifier,
        registry: RegistryResolver | None = None,
        images: ImageSignatureChecker | None = None,
        analysis: CanaryAnalysis | None = None,
        verifier_image: str = "devmlops:0.1.0",
    ) -> None:
        self._verifier_image = verifier_image  # devmlops's own image as installed (storage initializer, guard)
        self._analysis = analysis or CanaryAnalysis(None)  # a gated rollout's figures (Prometheus), or none
        self._images = images  # runtime image signatures (OCI referrers), or None
        self._registry = registry  # spec.model.registry's resolver (cached, with a deadline), or None
        self._api_client = api_client
        self._children = StoredChildren(dynamic)
        self._policies = policy_watch
        self.warnings = warnings
        self._lookup = ApiLookup(api_client)
        self._verifier = verifier  # operator/verifier.py: cached, with a deadline as in the webhook
        self._engine = OpaEngine(opa_url) if opa_url else None

    def observe(self, model: Mapping[str, Any]) -> Observation:
        """Raises (DevmlopsError, ApiException) when something cannot be read: the reconcile is parked and retried."""
        policies = self._policies.snapshot()
        context = load_context(self._api_client, model, self._lookup, policies, self._registry, self._images)
        decision = self._decide(model, policies)
        serving = self._serving(model, context) if decision.allowed else None
        children = self.children(model)
        first = next(iter(children.values()), None)
        now = dt.datetime.now(dt.UTC)
        return Observation(
            model=model,
            decision=decision,
            approvals=_approvals(context),
            scale_to_zero=any(p.on_violation == "scaleToZero" for p in context.policies),
            serving=serving,
            children=children,
            warnings=self.warnings.about(first) if first is not None else (),
            pods=self.predictor_pods(first) if first is not None else (),
            now=now,
            drift=self._drift(model) if serving is not None else None,
            **self._rollout(model, children, now),
        )

    def _drift(self, model: Mapping[str, Any]) -> dict[str, float] | None:
        """The per-feature drift of the version that serves (the stable one while a new one is tried), where its
        guard monitors drift; None otherwise, or when it cannot be read."""
        try:
            parsed = parse_model_deployment(model)
            serving = what_serves(parsed, model.get("status"), parsed.metadata.generation).stable or parsed
        except InvalidInputError:
            return None
        if serving.spec.guard is None or serving.spec.guard.drift is None:
            return None
        return self._analysis.drift(parsed.metadata.namespace, parsed.metadata.name, serving.spec.model.digest)

    def _decide(self, model: Mapping[str, Any], policies: PolicySet) -> Decision:
        """``model`` (the spec, or a rollout's stable version) decided again, as at admission."""
        return reevaluate(
            model,
            policies,
            self._lookup,
            verifier=self._verifier,
            engine=self._engine,
            registry=self._registry,
            images=self._images,
            running_images=self._running_images(model) if image_authorities(policies) else [],
            devmlops_image=self._verifier_image,
        )

    def _running_images(self, model: Mapping[str, Any]) -> list[str]:
        """The images KServe's predictor Deployment runs for a KServe model (its guard, the devmlops image, aside);
        [] for other runtimes and before KServe made it."""
        spec = model.get("spec") or {}
        if (spec.get("runtime") or {}).get("kind") != "kserve":
            return []
        # KServe names its predictor Deployment after the InferenceService, which devmlops names after the model.
        name, namespace = f"{model['metadata']['name']}-predictor", str(model["metadata"]["namespace"])
        try:
            found: Any = k8s.AppsV1Api(self._api_client).read_namespaced_deployment(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return []
            raise
        template = k8s.ApiClient().sanitize_for_serialization(found.spec.template.spec)
        return [image for image in pod_images(template) if image != self._verifier_image]

    def _serving(self, model: Mapping[str, Any], context: ModelContext) -> Serving | None:
        """The rendering inputs of a version that passed its decision, its signature verified again (None: not)."""
        digest = str(model["spec"]["model"]["digest"])
        plan = VerificationPlan.for_bundles(context.bundles, digest, context.policies, self._verifier)
        try:
            signed = plan.verify_signature(self._verifier)  # cached: reevaluate() verified the same bundle
        except VerificationFailed:
            return None
        baseline = ""
        if monitors_drift(model):  # the webhook derives the same and compares the guard's config with it
            authorities = evaluation_authorities(context.policies)
            baseline = signed_baseline(context.attestations, signed.digest, authorities, self._verifier)
        return Serving(
            digest=signed.digest,
            signer=signed.signer,
            plan_json=plan.to_json(),
            policy_revision=context.revision,
            verifier_image=self._verifier_image,
            baseline_json=baseline,
        )

    def _rollout(
        self, model: Mapping[str, Any], children: Mapping[tuple[str, str], Mapping[str, Any]], now: dt.datetime
    ) -> dict[str, Any]:
        """For a gated rollout with a stable version other than the spec's: that version decided and verified again,
        the new version's readiness, and its figures over the running step."""
        try:
            parsed = parse_model_deployment(model)
        except InvalidInputError:
            return {}
        rollout = (model.get("status") or {}).get("rollout") or {}
        stable_spec = rollout.get("stableSpec")
        digest = parsed.spec.model.digest
        if parsed.spec.gated_rollout is None or not stable_spec or rollout.get("stableDigest") == digest:
            return {}
        stable = {**model, "spec": stable_spec}
        policies = self._policies.snapshot()
        stable_serving, stable_approvals = None, Approvals()
        # Decided again and its approval looked up as the spec's version is: it is what serves (reconcile.py holds
        # it to both).
        stable_decision = self._decide(stable, policies)
        if stable_decision.allowed:
            context = load_context(self._api_client, stable, self._lookup, policies, self._registry, self._images)
            stable_serving = self._serving(stable, context)
            stable_approvals = _approvals(context)
        name = parsed.metadata.name
        deployment = children.get(("Deployment", name + CANARY_SUFFIX))
        readiness = child_readiness(deployment, (), ()) if deployment is not None else None
        ready = (readiness is not None and readiness.status == "True", readiness.message if readiness else "not there")
        measured: Measured | None = None
        same = rollout.get("canaryDigest") == digest and rollout.get("generation") == parsed.metadata.generation
        if same and rollout.get("phase") == PROGRESSING and int(rollout.get("step", -1)) >= 0:
            canary = parsed.spec.gated_rollout
            started = str(rollout.get("stepStarted") or timestamp(now))
            elapsed = (now - dt.datetime.fromisoformat(started.replace("Z", "+00:00"))).total_seconds()
            window = int(min(max(elapsed, 0), canary.step_seconds)) + 1
            measured = self._analysis.measure(parsed.metadata.namespace, name, digest, window)
        return {
            "stable_serving": stable_serving,
            "stable_decision": stable_decision,
            "stable_approvals": stable_approvals,
            "canary_ready": ready,
            "measured": measured,
        }

    def predictor_pods(self, child: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The Pods KServe's predictor runs for an InferenceService that KServe reports not Ready ([] otherwise, and
        for other kinds): one list call, filtered by KServe's label, when a reason may be missing."""
        if child.get("kind") != "InferenceService":
            return []
        conditions = (child.get("status") or {}).get("conditions") or []
        if not any(c.get("type") == "Ready" and c.get("status") == "False" for c in conditions):
            return []  # Ready, or not rendered yet (no Pods to ask)
        metadata = child.get("metadata") or {}
        response: Any = k8s.CoreV1Api(self._api_client).list_namespaced_pod(
            str(metadata.get("namespace")),
            label_selector=f"{PREDICTOR_LABEL}={metadata.get('name')}",
            _preload_content=False,
        )
        pods: list[dict[str, Any]] = json.loads(response.data).get("items") or []
        return pods

    def slices(self, model: Mapping[str, Any]) -> tuple[list[dict[str, Any]] | None, dict[str, str]]:
        """The EndpointSlices labelled with the model's Service names (one list), then the uid of each such Service
        that exists (one read per name a slice carries; read after the slices, so that a slice the EndpointSlice
        controller wrote for a Service is judged against that Service, never against none). (None, {}) when they
        cannot be read: logged, and the driver looks again soon; the rest of the reconcile goes on."""
        namespace = str(model["metadata"]["namespace"])
        names = model_service_names(model)
        if not names:
            return [], {}
        try:
            response: Any = k8s.DiscoveryV1Api(self._api_client).list_namespaced_endpoint_slice(
                namespace, label_selector=f"{SERVICE_NAME_LABEL} in ({','.join(names)})", _preload_content=False
            )
            slices: list[dict[str, Any]] = json.loads(response.data).get("items") or []
            labelled = {((s.get("metadata") or {}).get("labels") or {}).get(SERVICE_NAME_LABEL) for s in slices}
            uids = {name: self._service_uid(namespace, name) for name in names if name in labelled}
        except (ApiException, urllib3.exceptions.HTTPError) as exc:
            _log.warning(
                "the EndpointSlices under the Service names of %s/%s could not be read (%s), looked at again soon",
                namespace,
                model["metadata"]["name"],
                getattr(exc, "status", None) or type(exc).__name__,
            )
            return None, {}
        return slices, {name: uid for name, uid in uids.items() if uid}

    def services(self, model: Mapping[str, Any]) -> tuple[list[dict[str, Any]] | None, dict[str, Any] | None]:
        """A KServe model's InferenceService (the one under its name, None when there is none), then the Services
        under its KServe Service names (one read each: nothing here lists a namespace's Services). (None, None) when
        they cannot be read: logged, and the driver looks again soon; the rest of the reconcile goes on. A Triton
        model reads nothing: its Services are its children (``children``)."""
        if ((model.get("spec") or {}).get("runtime") or {}).get("kind") == "triton":
            return [], None
        namespace, name = str(model["metadata"]["namespace"]), str(model["metadata"]["name"])
        core = k8s.CoreV1Api(self._api_client)
        try:
            isvc = self._read(
                lambda: k8s.CustomObjectsApi(self._api_client).get_namespaced_custom_object(
                    "serving.kserve.io", "v1beta1", namespace, "inferenceservices", name, _preload_content=False
                )
            )
            found = [
                service
                for candidate in model_service_names(model)
                if (
                    service := self._read(
                        lambda candidate=candidate: core.read_namespaced_service(
                            candidate, namespace, _preload_content=False
                        )
                    )
                )
                is not None
            ]
        except (ApiException, urllib3.exceptions.HTTPError) as exc:
            _log.warning(
                "the Services under the names of %s/%s could not be read (%s), looked at again soon",
                namespace,
                name,
                getattr(exc, "status", None) or type(exc).__name__,
            )
            return None, None
        return found, isvc

    @staticmethod
    def _read(call: Any) -> dict[str, Any] | None:
        """One read as the API server's JSON (None: not found)."""
        try:
            response: Any = call()
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        found: dict[str, Any] = json.loads(response.data)
        return found

    def _service_uid(self, namespace: str, name: str) -> str:
        """The uid of the Service ``name`` ('' when there is none)."""
        try:
            service: Any = k8s.CoreV1Api(self._api_client).read_namespaced_service(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return ""
            raise
        return str(service.metadata.uid or "")

    def children(self, model: Mapping[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
        """The children the model renders into, as stored (``StoredChildren.read``)."""
        return self._children.read(model)


_UNSERVED_SECONDS = 60.0  # a kind the cluster did not serve is asked for again after this (KServe installed later)


class StoredChildren:
    """A model's children as stored: those it renders into, absent ones left out, the first child first; then those
    of the other runtime kind under its names (``child_keys``). A kind the cluster does not serve (KServe not
    installed where only Triton models run) has no such object, and is not asked for again for a minute: the dynamic
    client answers a kind it does not know by reloading the cluster's whole discovery, which every reconcile of a
    Triton model would otherwise pay, now that each also looks for an InferenceService under its name."""

    def __init__(self, dynamic: DynamicClient, clock: Callable[[], float] = time.monotonic) -> None:
        self._dynamic = dynamic
        self._clock = clock
        self._unserved: dict[tuple[str, str], float] = {}  # (apiVersion, kind) -> until when it is not asked for

    def read(self, model: Mapping[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
        namespace = str(model["metadata"]["namespace"])
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for ref in child_keys(model):
            kind = (ref.api_version, ref.kind)
            if self._unserved.get(kind, float("-inf")) > self._clock():
                continue
            try:
                resource = self._dynamic.resources.get(api_version=ref.api_version, kind=ref.kind)
            except ResourceNotFoundError:
                self._unserved[kind] = self._clock() + _UNSERVED_SECONDS
                continue
            try:
                stored: dict[str, Any] = resource.get(name=ref.name, namespace=namespace).to_dict()
            except ApiException as exc:
                if exc.status == 404:
                    continue
                raise
            found[(ref.kind, ref.name)] = stored
        return found


def _approvals(context: ModelContext) -> Approvals:
    """The approval demands of a version's policies and the approval found for it."""
    return Approvals(
        required_by=context.approval_required_by,
        approved=context.approval.approved,
        approver=context.approval.approver,
        name=context.approval.name,
    )
