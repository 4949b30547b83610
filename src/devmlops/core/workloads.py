"""No bypass: what may run, and what may be written into a model server's chain.

In a namespace under enforcement (label ``devmlops.io/enforce: "true"``, which only a cluster admin can set) a Pod
runs only when it derives from an admitted ModelDeployment, or when a cluster admin's exemption covers it. A Pod
derives from a ModelDeployment when its controller chain leads there uid by uid (the shell follows it in its caches:
``Evidence.chain``), it was written by the identity expected for its place in the chain, and what it runs is what the
chain renders: the chain's objects are compared with devmlops's own rendering (``core/render.py``), field by field.
Workloads are judged the same way on their pod templates, so a denial comes at ``kubectl apply`` time. The
InferenceService child is reviewed in every namespace the webhook sees. Image names never decide anything here.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from collections.abc import Mapping, Sequence
from typing import Any

from devmlops.core.addresses import MODEL_OWNER_KINDS, review_external_ips
from devmlops.core.compare import differences, metadata_differences
from devmlops.core.evidence import Chain, Evidence
from devmlops.core.exemptions import pod_images
from devmlops.core.gates.imagesig import unsigned_images
from devmlops.core.globs import matching_glob
from devmlops.core.manifests import parse_model_deployment
from devmlops.core.model import Decision, GateResult, Outcome
from devmlops.core.namespacereads import namespace_reads
from devmlops.core.plan import VerificationPlan
from devmlops.core.podbaseline import container_baseline_problems
from devmlops.core.render import (
    ANNOTATION_AUTOSCALER_CLASS,
    ANNOTATION_DEPLOYMENT_MODE,
    ANNOTATION_POLICY_REVISION,
    ANNOTATION_VERIFICATION,
    CANARY_SUFFIX,
    GUARD_PORT,
    KSERVE_GUARD_CONTAINER,
    LABEL_CANARY_OF,
    LABEL_MODEL_DEPLOYMENT,
    LABEL_MODEL_SERVER,
    MODEL_DIR,
    VERIFY_URI_PREFIX,
)
from devmlops.core.review import AdmissionRequest
from devmlops.core.rollout import render_serving
from devmlops.core.storageinit import endpoint_problems, initializer_run_problems
from devmlops.errors import InvalidInputError

__all__ = [
    "CONNECTS",
    "ENFORCE_LABEL",
    "KSERVE_APP_PREFIX",
    "MAX_SERVICE_NAME",
    "RESERVED_LABEL_PREFIXES",
    "ROUTING_LABEL_KEYS",
    "SCRAPED_LABEL_KEYS",
    "SERVICE_SUFFIXES",
    "SERVING_RESOURCES",
    "added_finalizers",
    "controller_of",
    "is_model_server",
    "lookalike_pattern",
    "model_service_names",
    "reserved_labels",
    "review_serving",
    "routes_model_traffic",
    "routing_labels",
    "runtime_images",
    "serves_models",
    "service_owner_candidates",
]

ENFORCE_LABEL = "devmlops.io/enforce"
GATE = "bypass"
_HINT = "create a ModelDeployment; devmlops creates, verifies and serves the model for it"
_EXEMPT_HINT = "ask a cluster admin for a ClusterWorkloadExemption listing the pinned images and service account"
# The resources this module decides (plural names, as in AdmissionRequest.resource).
WORKLOADS = frozenset({"deployments", "replicasets", "statefulsets", "daemonsets", "jobs", "cronjobs"})
_NEVER_RENDERED = {
    "trainedmodels": "a TrainedModel loads model bytes into a running server without devmlops verifying them",
    "llminferenceservices": "an LLMInferenceService serves a model devmlops never verified",
    "inferencegraphs": "devmlops renders no InferenceGraph",
}
SERVING_RESOURCES = frozenset(
    {"pods", "services", "inferenceservices", "servingruntimes", "clusterservingruntimes", *WORKLOADS, *_NEVER_RENDERED}
)
# Keys KServe's controller and defaulter add to an InferenceService's metadata; the API server's own bookkeeping
# (uid, resourceVersion, finalizers, ...) is never compared.
_KSERVE_METADATA = ("serving.kserve.io/", "internal.serving.kserve.io/")
RESERVED_LABEL_PREFIXES = ("devmlops.io/", "serving.kserve.io/", "component.serving.kserve.io/")


def _decision(outcome: Outcome, reason: str, hint: str = "", gate: str = GATE) -> Decision:
    return Decision((GateResult(gate=gate, outcome=outcome, reason=reason, hint=hint),))


def _deny(reason: str, hint: str = _HINT) -> Decision:
    return _decision("fail", reason, hint)


def controller_of(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return next((ref for ref in refs if isinstance(ref, Mapping) and ref.get("controller") is True), None)


def _pod_template(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """A workload's pod template (a CronJob's through its job template)."""
    spec = obj.get("spec") or {}
    if "jobTemplate" in spec:  # CronJob
        spec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
    return (spec.get("template") or {}) if isinstance(spec, Mapping) else {}


def _template_path(obj: Mapping[str, Any]) -> str:
    """The field path of ``_pod_template(obj)``, for messages."""
    return "spec.jobTemplate.spec.template." if "jobTemplate" in (obj.get("spec") or {}) else "spec.template."


def _template_spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return _pod_template(obj).get("spec") or {}


def is_model_server(obj: Mapping[str, Any], image_patterns: Sequence[str]) -> bool:
    """Outside enforced namespaces only: labelled as one (or as a ModelDeployment's), owned by a ModelDeployment or
    an InferenceService, or an image name containing a known server's name."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    if LABEL_MODEL_SERVER in labels or LABEL_MODEL_DEPLOYMENT in labels:
        return True
    if (controller_of(obj) or {}).get("kind") in MODEL_OWNER_KINDS:
        return True
    images = pod_images(_template_spec(obj))
    return any(p in image for p in image_patterns for image in images)


def serves_models(obj: Mapping[str, Any], evidence: Evidence) -> bool:
    """A workload of a model server's chain: a model server (``is_model_server``) or KServe's predictor (its label)."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return is_model_server(obj, evidence.model_server_images) or _KSERVE_OWNER_LABEL in labels


_KSERVE_OWNER_LABEL = "serving.kserve.io/inferenceservice"
# The labels a model's Service selects by (routing_labels); KServe's predictor selects ``app: isvc.<name>-predictor``.
ROUTING_LABEL_KEYS = (LABEL_MODEL_DEPLOYMENT, LABEL_CANARY_OF, _KSERVE_OWNER_LABEL)
KSERVE_APP_PREFIX = "isvc."
# The keys the guards' PodMonitor keeps a Pod by (charts/.../monitoring/podmonitor.yaml). Prometheus never sees a key
# as written: its Kubernetes discovery names it __meta_kubernetes_pod_labelpresent_<key> with every character that is
# no ASCII letter, digit or '_' made '_', so devmlops-io/model-deployment or devmlops_io_model_deployment read exactly
# as devmlops.io/model-deployment. Such a key is a routing label here too (round 3 review: mallory's Pod dressed as a
# guard, outside enforcement, wore one, was never sent to the webhook, and was scraped as a model's).
SCRAPED_LABEL_KEYS = (LABEL_MODEL_DEPLOYMENT, LABEL_CANARY_OF)


def lookalike_pattern(key: str) -> str:
    """An RE2 (and Python) pattern, to match whole, for every key Prometheus's Kubernetes discovery writes into the
    same meta label name as ``key`` (it makes every character but ASCII letters, digits and '_' a '_'), for a key of
    ASCII letters, digits and the punctuation a label key may hold, ``-._/``. The webhook matches label keys with it,
    and so does the CEL matchCondition (webhook/registration.py)."""
    return "^" + "".join(c if c.isascii() and c.isalnum() else "[^a-zA-Z0-9]" for c in key) + "$"


_LOOKALIKE = re.compile("|".join(f"(?:{lookalike_pattern(key)})" for key in SCRAPED_LABEL_KEYS))


def _routing_key(key: str, value: Any) -> bool:
    if key in ROUTING_LABEL_KEYS or _LOOKALIKE.fullmatch(key):
        return True
    return key == "app" and str(value).startswith(KSERVE_APP_PREFIX)


# The Services that carry a model's address: the operator's Triton Service (the ModelDeployment's name) and KServe's
# per component (<name>-predictor, -transformer, -explainer). Whoever owns the name owns the traffic to it.
SERVICE_SUFFIXES = ("", "-predictor", "-transformer", "-explainer", "-canary")  # "-canary": core/render.py


def _owner_refs(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return [ref for ref in refs if isinstance(ref, Mapping)] if isinstance(refs, list) else []


MAX_SERVICE_NAME = 63  # a Service's name is a DNS label


def model_service_names(model: Mapping[str, Any]) -> tuple[str, ...]:
    """A ModelDeployment's Service names: Triton's, and its new version's during a gated rollout (core/render.py);
    KServe's by its suffixes. Only names a Service can carry (a DNS label, at most 63 characters). The webhook keeps
    these names for the model; the operator removes the EndpointSlices under them that their Service does not keep."""
    name = str((model.get("metadata") or {}).get("name") or "")
    kind = str(((model.get("spec") or {}).get("runtime") or {}).get("kind") or "")
    names = [name, name + CANARY_SUFFIX] if kind == "triton" else [name + s for s in SERVICE_SUFFIXES if s]
    return tuple(candidate for candidate in names if len(candidate) <= MAX_SERVICE_NAME)


def service_owner_candidates(name: str) -> tuple[str, ...]:
    """The ModelDeployment names whose Service ``name`` would be."""
    return tuple(name.removesuffix(suffix) for suffix in SERVICE_SUFFIXES if name.endswith(suffix) and name != suffix)


def _review_service(request: AdmissionRequest, evidence: Evidence, name: str) -> Decision:
    """A Service a ModelDeployment or InferenceService owns(ed) is a child, reviewed as one. Any other Service may not
    take a name that carries a model's address (in an enforced namespace every Service comes here): KServe keeps a
    Service it finds under its name when the ports and selector match, whatever its type (ExternalName included).
    No Service, a model's or another, may add an externalIP (core/addresses.py)."""
    intercepts = review_external_ips(request, evidence)
    if intercepts is not None:
        return intercepts
    owners = [request.object or {}] + ([request.old_object] if request.old_object is not None else [])
    claims = any(ref.get("kind") in MODEL_OWNER_KINDS for obj in owners for ref in _owner_refs(obj))
    if claims or (evidence.chain is not None and evidence.chain.model is not None):
        return _review_chain_member(request, evidence, name)
    if evidence.reserved_for:
        return _deny(
            f"{name}: the name is ModelDeployment {evidence.reserved_for}'s Service (its model's address); only the "
            "Service devmlops or KServe renders for it, owned by it, may take it",
            "choose another name for this Service",
        )
    return _decision("pass", f"{name}: a Service no model server owns and whose name is no model's address")


def _was_or_is_model_server(request: AdmissionRequest, evidence: Evidence) -> bool:
    """The object, or what it was before this update: an update that drops the labels, the owner or the image is
    judged by what it changes (webhook/registration.py sends it for the same reason)."""
    patterns = evidence.model_server_images
    old = request.old_object if request.operation == "UPDATE" else None
    return is_model_server(request.object or {}, patterns) or (old is not None and is_model_server(old, patterns))


# What the API server sends from namespaces under enforcement, and from the others only when it wears (or wore) a
# model's routing labels (webhook/registration.py): enforced either way, whatever the webhook's namespace cache says
# (it may not have seen the label yet; failing closed, not open).
_ONLY_FROM_ENFORCED = frozenset({"pods", "replicasets", "daemonsets", "jobs", "cronjobs"})


# The CONNECT subresources: sent from every namespace (webhook/registration.py), with no Pod for a condition to read.
CONNECTS = frozenset({"exec", "attach", "portforward"})


def _enforced(request: AdmissionRequest, evidence: Evidence) -> bool:
    if request.sub_resource in CONNECTS:
        # Under enforcement, or into a Pod that wears a model's routing labels (only a model's own Pods may wear them
        # there: routes_model_traffic), whose loopback, processes and ports a shell in the Pod shares.
        enforced = evidence.namespace_labels.get(ENFORCE_LABEL) == "true"
        return enforced or bool(routing_labels(evidence.connected_pod_labels))
    if request.resource in _ONLY_FROM_ENFORCED or request.sub_resource:
        return True
    if request.resource in WORKLOADS and routes_model_traffic(request):
        return True  # a Deployment or StatefulSet whose Pods a model's Service would select, in any namespace
    return evidence.namespace_labels.get(ENFORCE_LABEL) == "true"


def routing_labels(labels: Any) -> list[str]:
    """The labels by which a model's Service selects its Pods (and a model's Deployment adopts a ReplicaSet): the
    operator's Triton Services (``devmlops.io/model-deployment``, a rollout's ``devmlops.io/canary-of``) and KServe's
    predictor (``app: isvc.<name>-predictor``, ``serving.kserve.io/inferenceservice``). ``webhook/registration.py``
    sends, from every namespace, each Pod and workload that wears one of them (ROUTING_CONDITION)."""
    if not isinstance(labels, Mapping):
        return []
    return sorted(str(key) for key, value in labels.items() if _routing_key(str(key), value))


def routes_model_traffic(request: AdmissionRequest) -> bool:
    """The object, or what it was before this update, wears a model's routing labels, on itself or on the Pods it
    makes: a model's Service would send that model's clients to its Pods, so it is reviewed as under enforcement in
    every namespace (outside enforcement mallory's Pod of her own image, labelled as the model, was selected)."""
    for obj in (request.object, request.old_object if request.operation == "UPDATE" else None):
        if obj is None:
            continue
        holders = [obj] if request.resource == "pods" else [obj, _pod_template(obj)]
        if any(routing_labels((holder.get("metadata") or {}).get("labels")) for holder in holders):
            return True
    return False


def _name(request: AdmissionRequest) -> str:
    options = ("Scale", "PodExecOptions", "PodAttachOptions", "PodPortForwardOptions")
    kind = request.kind.kind if request.kind.kind not in options else ""
    what = kind or f"{request.resource}/{request.sub_resource}"
    return f"{what} {request.namespace}/{request.name}" if request.namespace else f"{what} {request.name}"


def review_serving(request: AdmissionRequest, evidence: Evidence, *, now: dt.datetime) -> Decision:
    """The no-bypass review of Pods, workloads, their subresources and the KServe kinds."""
    resource, sub = request.resource, request.sub_resource
    name = _name(request)
    if sub in ("exec", "attach", "portforward", "ephemeralcontainers"):
        # A port-forward reaches the Pod's loopback, where a guarded model server listens: as exec, break-glass.
        return _break_glass(request, evidence, name, now)
    if sub == "scale":
        return _review_scale(request, evidence, name)
    if sub:
        return _decision("pass", f"{name}: subresource {sub} does not change what runs")
    if resource in _NEVER_RENDERED:
        if resource == "inferencegraphs" and not _enforced(request, evidence):
            return _decision("pass", f"{name}: InferenceGraphs route to servers; namespace not under enforcement")
        return _deny(f"{name}: {_NEVER_RENDERED[resource]}; expected only the children devmlops renders")
    if resource in ("servingruntimes", "clusterservingruntimes"):
        return _review_runtime(request, evidence, name)
    if resource == "services":
        return _review_service(request, evidence, name)
    if resource == "inferenceservices":
        return _review_chain_member(request, evidence, name)
    if not _enforced(request, evidence):
        if resource in ("deployments", "statefulsets") and _was_or_is_model_server(request, evidence):
            return _review_chain_member(request, evidence, name)
        return _decision("pass", f"{name}: namespace {request.namespace} is not under enforcement")
    if _same_spec(request):
        held = _finalizer_problem(request, evidence, name)
        if held is not None:
            return held
        if evidence.chain is None or evidence.chain.model is None:
            return _decision("pass", f"{name}: spec unchanged (metadata only)")
        # A model server's workload: its metadata too is its controllers' (below). A label or annotation an editor
        # added is one the controller drops when it writes the object back, so its scale to zero of a revoked model
        # was more than a scale-down, and refused (KServe's predictor Deployment kept serving).
    if resource in WORKLOADS and _scaled_down_only(request, ("replicas",)):
        return _decision("pass", "scaling down is always allowed")
    if evidence.chain is not None and evidence.chain.model is not None:
        return _review_chain_member(request, evidence, name)  # claims a place in a model server's chain
    return _exempt_or_deny(request, evidence, name)


def _same_spec(request: AdmissionRequest) -> bool:
    """An UPDATE that changes neither the spec, nor what devmlops reads from metadata (its annotations: a Pod's
    verification plan among them; KServe's deployment mode, which picks the controller that renders the model, and
    its autoscaler class, which decides whether a scale to zero takes effect; the labels that route a model server's
    traffic; all of a Pod's labels, which decide the ReplicaSet that owns it), nor its owners: what runs stays what it
    was, and stays where revocation reaches it."""
    old, new = request.old_object, request.object
    if request.operation != "UPDATE" or old is None or new is None or old.get("spec") != new.get("spec"):
        return False

    def kept(obj: Mapping[str, Any]) -> tuple[Any, Any]:
        metadata = obj.get("metadata") or {}
        annotations = metadata.get("annotations") or {}
        ours = {
            k: v
            for k, v in annotations.items()
            if str(k).startswith("devmlops.io/") or k in (ANNOTATION_DEPLOYMENT_MODE, ANNOTATION_AUTOSCALER_CLASS)
        }
        labels = metadata.get("labels") or {}
        if request.resource == "pods":  # a relabelled Pod is released by its ReplicaSet and would run on, unowned
            return ours, labels
        return ours, {k: labels[k] for k in reserved_labels(labels)}

    def owners(obj: Mapping[str, Any]) -> list[Any]:
        refs = (obj.get("metadata") or {}).get("ownerReferences") or []
        return list(refs) if isinstance(refs, list) else [refs]

    # A new owner is a new claim, reviewed in full; an owner removed takes the object out of the chain that revocation
    # and scale-to-zero follow (an orphaning delete is refused for the same reason: decision.py).
    return kept(old) == kept(new) and owners(old) == owners(new)


def added_finalizers(request: AdmissionRequest) -> list[str]:
    """The finalizers a CREATE brings or an UPDATE adds (anything that is not a list of strings counts whole)."""

    def finalizers(obj: Mapping[str, Any] | None) -> list[str]:
        value = ((obj or {}).get("metadata") or {}).get("finalizers") or []
        return [str(f) for f in value] if isinstance(value, list) else [repr(value)]

    before = finalizers(request.old_object) if request.operation == "UPDATE" else []
    return sorted(f for f in finalizers(request.object) if f not in before)


def _finalizer_problem(request: AdmissionRequest, evidence: Evidence, name: str) -> Decision | None:
    """A finalizer that someone but the trusted writers adds to a model server's workload: a controller does nothing
    for a terminating object (the ReplicaSet controller no longer scales it, the Deployment controller only writes its
    status), so a deleted workload held by a finalizer nobody removes keeps its Pods running where revocation and
    scale-to-zero no longer reach them."""
    added = added_finalizers(request)
    ids = evidence.identities
    if not added or request.username in (ids.operator, ids.kserve, *ids.controllers):
        return None
    chain = evidence.chain
    model_server = (chain is not None and chain.model is not None) or any(
        serves_models(obj, evidence) for obj in (request.object or {}, request.old_object or {})
    )
    if not model_server:
        return None
    return _deny(
        f"{name}: metadata.finalizers: {request.username} adds {added}, expected none: a model server's workload "
        "that is being deleted is no longer scaled by its controller, so a finalizer would keep its Pods running "
        "where revocation and scale-to-zero no longer reach them",
        "do not add finalizers to a model server's workloads; delete the ModelDeployment to stop serving",
    )


# The Deployment controller's own notes on Deployments and ReplicaSets (revision, desired-replicas, max-replicas): it
# rewrites them in the very update that scales a ReplicaSet, and KServe's update of its predictor Deployment drops the
# revision. They say nothing about what runs.
_REPLICA_BOOKKEEPING = "deployment.kubernetes.io/"


def _scaled_down_only(request: AdmissionRequest, field: tuple[str, ...]) -> bool:
    """Everything equal but the replica field, which went down (metadata compared too, finalizers included; bookkeeping
    aside: the Deployment controller's annotations, which change with every scale of a ReplicaSet; were they compared,
    a revoked model's scale to zero stopped at its ReplicaSet, found by `make e2e`)."""
    if request.operation != "UPDATE" or request.old_object is None or request.object is None:
        return False

    def split(obj: Mapping[str, Any]) -> tuple[Any, Any, Any]:
        spec: dict[str, Any] = dict(obj.get("spec") or {})
        node = spec
        for key in field[:-1]:
            node[key] = dict(node.get(key) or {})
            node = node[key]
        value = node.pop(field[-1], None)
        metadata = obj.get("metadata") or {}
        kept = {k: metadata.get(k) for k in ("labels", "ownerReferences", "name", "namespace", "finalizers")}
        annotations = metadata.get("annotations") or {}
        if isinstance(annotations, Mapping):
            annotations = {k: v for k, v in annotations.items() if not str(k).startswith(_REPLICA_BOOKKEEPING)}
        kept["annotations"] = annotations or None
        return spec, kept, value

    new_spec, new_meta, new_value = split(request.object)
    old_spec, old_meta, old_value = split(request.old_object)
    return (
        new_spec == old_spec
        and new_meta == old_meta
        and isinstance(new_value, int)
        and isinstance(old_value, int)
        and new_value < old_value
    )


def reserved_labels(labels: Any) -> list[str]:
    """Labels that route a model server's traffic (its Service selects them), or that Prometheus reads as such (the
    guards' PodMonitor keeps a Pod by them): only a model server may wear them."""
    if not isinstance(labels, Mapping):
        return []
    return sorted(
        str(key)
        for key, value in labels.items()
        if str(key).startswith(RESERVED_LABEL_PREFIXES) or _routing_key(str(key), value)
    )


def _pod_labels(request: AdmissionRequest) -> Any:
    obj = request.object or {}
    holder = obj if request.resource == "pods" else _pod_template(obj)
    return (holder.get("metadata") or {}).get("labels")


def _exempt_or_deny(request: AdmissionRequest, evidence: Evidence, name: str) -> Decision:
    obj = request.object or {}
    template, where = (obj, "") if request.resource == "pods" else (_pod_template(obj), _template_path(obj))
    if not pod_images(template.get("spec") or {}):
        return _deny(f"{name}: no pod template or containers found; expected a Pod spec to review")
    worn = reserved_labels(_pod_labels(request))
    if request.resource != "pods":
        # A workload's own labels decide which controller adopts it: the Deployment controller adopts an orphan
        # ReplicaSet that wears its selector, and a refused adoption failed every sync of the model's Deployment (its
        # scale to zero never reached its ReplicaSet).
        worn = sorted({*worn, *reserved_labels((obj.get("metadata") or {}).get("labels"))})
    if worn:
        return _deny(
            f"{name}: labels {worn} (on it or its pod template) are a model server's: they route its traffic, and "
            "a model's Deployment adopts a workload that wears its selector; but it does not derive from an "
            "admitted ModelDeployment",
            "remove the devmlops.io/, serving.kserve.io/ and app=isvc.* labels; only model servers devmlops renders "
            "wear them",
        )
    why: list[str] = []
    for exemption in evidence.exemptions:
        problems = exemption.problems(request.namespace, template, where)
        if not problems:
            return _decision(
                "pass", f"{name}: exempt by ClusterWorkloadExemption {exemption.name} ({exemption.reason})"
            )
        why.append("; ".join(problems))
    ref = controller_of(obj)
    found = f"controlled by {ref.get('kind')} {ref.get('name')}" if ref else "controlled by nothing"
    if evidence.chain is not None and evidence.chain.broken:
        found += f" ({evidence.chain.broken})"
    detail = f" (exemptions: {' | '.join(why)})" if why else " (no ClusterWorkloadExemption covers this namespace)"
    return _deny(
        f"{name} in enforced namespace {request.namespace} is {found}, which does not lead to an admitted "
        f"ModelDeployment, and no exemption covers it{detail}",
        f"{_HINT}; for a workload that serves no model, {_EXEMPT_HINT}",
    )


def _break_glass(request: AdmissionRequest, evidence: Evidence, name: str, now: dt.datetime) -> Decision:
    if not _enforced(request, evidence):
        return _decision("pass", f"{name}: namespace {request.namespace} is not under enforcement", gate="breakglass")
    for glass in evidence.break_glass:
        if glass.covers(request.namespace, request.username, request.groups, now):
            reaching = _added_debug_container_problems(request)
            if reaching:
                return _decision(
                    "fail",
                    f"{name}: break-glass {glass.name} opens the Pod, not the node under it: {'; '.join(reaching)}",
                    "debug with a container that keeps to Pod Security baseline (kubectl debug --profile=baseline "
                    "or general, not sysadmin or netadmin)",
                    gate="breakglass",
                )
            return _decision(
                "pass",
                f"{name}: break-glass {glass.name} used by {request.username} until {glass.expires.isoformat()} "
                f"({glass.reason})",
                gate="breakglass",
            )
    worn = routing_labels(evidence.connected_pod_labels)
    where = (
        f"a model server's Pod (it wears {worn}, which a model's Service selects) in namespace {request.namespace}"
        if worn and evidence.namespace_labels.get(ENFORCE_LABEL) != "true"
        else f"a Pod of enforced namespace {request.namespace}"
    )
    return _decision(
        "fail",
        f"{name}: {request.sub_resource} changes what runs in {where}; "
        f"{request.username} holds no unexpired ClusterBreakGlass for it",
        "ask a cluster admin for a ClusterBreakGlass naming you, the namespace and an expiry (every use is audited)",
        gate="breakglass",
    )


def _added_debug_container_problems(request: AdmissionRequest) -> list[str]:
    """What the ephemeral containers this request adds (they can be neither changed nor removed once there) would
    reach past the Pod: Pod Security baseline, by field path."""
    if request.sub_resource != "ephemeralcontainers":
        return []

    def containers(obj: Mapping[str, Any] | None) -> list[Any]:
        found = ((obj or {}).get("spec") or {}).get("ephemeralContainers") or []
        return list(found) if isinstance(found, list) else [found]

    before = [c.get("name") for c in containers(request.old_object) if isinstance(c, Mapping)]
    problems: list[str] = []
    for index, container in enumerate(containers(request.object)):
        if not (isinstance(container, Mapping) and container.get("name") in before):
            problems += container_baseline_problems(container, f"spec.ephemeralContainers[{index}]")
    return problems


def _review_scale(request: AdmissionRequest, evidence: Evidence, name: str) -> Decision:
    def replicas(obj: Mapping[str, Any] | None) -> Any:
        if obj is None:
            return None
        return (obj.get("spec") or {}).get("replicas", 0)  # autoscaling/v1 Scale leaves a zero out

    new, old = replicas(request.object), replicas(request.old_object)
    if isinstance(new, int) and isinstance(old, int) and new <= old:
        return _decision("pass", f"{name}: scaling from {old} to {new} replicas is always allowed")
    target = evidence.scaled
    if target is None:
        if not _enforced(request, evidence) or request.resource not in ("deployments", "replicasets", "statefulsets"):
            return _decision("pass", f"{name}: scaled up; every Pod it makes is reviewed when it is created")
        return _deny(f"{name}: scaled up, but the webhook has no record of it; expected a reviewed workload")
    chain = evidence.chain or Chain()
    if chain.model is None and not chain.hops:
        if not _enforced(request, evidence):
            return _decision("pass", f"{name}: namespace {request.namespace} is not under enforcement")
        for exemption in evidence.exemptions:
            if not exemption.problems(request.namespace, _pod_template(target), _template_path(target)):
                return _decision("pass", f"{name}: exempt by ClusterWorkloadExemption {exemption.name}")
        return _deny(f"{name}: scaling up a workload that neither derives from a ModelDeployment nor is exempt")
    if chain.model is None:
        return _deny(f"{name}: scaling up a model server whose chain is broken: {chain.broken}")
    return _served_or_deny(chain, name, f"scaled from {old} to {new} replicas")


def _served_or_deny(chain: Chain, name: str, what: str) -> Decision:
    model_name = str(((chain.model or {}).get("metadata") or {}).get("name"))
    if chain.decision is None or not chain.decision.allowed:
        why = chain.decision.message if chain.decision else "it was not decided"
        return _deny(f"{name}: {what}, but its ModelDeployment {model_name} may not be served now: {why}")
    return _decision("pass", f"{name}: {what}; ModelDeployment {model_name} may be served")


def runtime_images(runtime: Mapping[str, Any]) -> list[str]:
    """Every image a (Cluster)ServingRuntime runs or mounts: its containers, init containers, worker containers and
    image volumes."""
    spec = runtime.get("spec") or {}
    return [*pod_images(spec), *pod_images(spec.get("workerSpec") or {})]


def _review_runtime(request: AdmissionRequest, evidence: Evidence, name: str) -> Decision:
    if request.resource == "servingruntimes":
        # KServe resolves a runtime name in the namespace before the cluster, and auto-selects among namespaced
        # runtimes too: a namespace editor's runtime would be picked for a devmlops model, with whatever command,
        # arguments or storage settings its author chose. Only devmlops writes InferenceServices, so a namespaced
        # runtime serves nothing else: devmlops models run on ClusterServingRuntimes, which cluster admins write.
        return _deny(
            f"{name}: namespaced ServingRuntimes are refused: one could shadow, or be auto-selected instead of, the "
            "ClusterServingRuntime a model is served by",
            "ask a cluster admin for a ClusterServingRuntime (pinned, allow-listed images)",
        )
    images = runtime_images(request.object or {})
    problems = [f"image {image!r} is not pinned by digest" for image in images if "@sha256:" not in image]
    spec = (request.object or {}).get("spec") or {}
    problems += namespace_reads(spec, "spec") + namespace_reads(spec.get("workerSpec") or {}, "spec.workerSpec")
    if not evidence.image_allow_lists:
        problems.append("no ClusterModelPolicy selecting this namespace allow-lists images (spec.allow.images)")
    for policy, globs in evidence.image_allow_lists:
        problems += [
            f"image {i!r} is not allow-listed by {policy} {list(globs)}"
            for i in images
            if matching_glob(globs, i) is None
        ]
    problems += unsigned_images(images, evidence.signed_images)
    if problems:
        return _deny(
            f"{name}: {'; '.join(problems)}",
            "pin every serving runtime image by digest, allow-list it in the ClusterModelPolicy (spec.allow.images) "
            "and sign it where the policy names imageSignatures; take no environment or files from ConfigMaps, "
            "Secrets or claims (they resolve in each model's namespace, which its editors write)",
        )
    signed = " and signed" if evidence.signed_images.demands else ""
    return _decision("pass", f"{name}: every image pinned by digest and allow-listed{signed}; reads nothing by name")


# -- the chain -------------------------------------------------------------------------------------------------


def _expected_writer(request: AdmissionRequest, evidence: Evidence) -> tuple[str, tuple[str, ...]]:
    """Who may write this object in a model server's chain: (role, usernames)."""
    ids = evidence.identities
    ref = controller_of(request.object or {}) or {}
    owner_kind = str(ref.get("kind") or "")
    if owner_kind == "InferenceService":
        return "the KServe controller", (ids.kserve,)
    if request.resource in ("inferenceservices", "services") or owner_kind == "ModelDeployment":
        return "the devmlops operator", (ids.operator,)
    return "the cluster's workload controllers", ids.controllers


def _review_chain_member(request: AdmissionRequest, evidence: Evidence, name: str) -> Decision:
    obj = request.object or {}
    replicas_field = ("predictor", "minReplicas") if request.resource == "inferenceservices" else ("replicas",)
    if _scaled_down_only(request, replicas_field):
        return _decision("pass", "scaling down is always allowed")
    role, writers = _expected_writer(request, evidence)
    ids = evidence.identities
    if _same_spec(request) and request.username in (ids.operator, ids.kserve, *ids.controllers):
        # Controllers keep their bookkeeping: KServe its finalizer, the Deployment controller its revision.
        return _decision("pass", f"{name}: metadata kept by {request.username}; spec unchanged")
    chain = evidence.chain or Chain()
    if chain.model is None:
        ref = controller_of(obj)
        found = f"controlled by {ref.get('kind')} {ref.get('name')}" if ref else "not owned by anything"
        broken = f" ({chain.broken})" if chain.broken else ""
        return _deny(f"{name} is {found}{broken}; expected the child of an admitted ModelDeployment")
    if request.username not in writers:
        return _deny(
            f"{name}: only {role} ({', '.join(writers)}) may write it as part of a model server's chain; "
            f"the request came from {request.username!r}"
        )
    try:
        problems = _chain_problems(request, obj, chain, evidence)
    except (KeyError, TypeError, ValueError, InvalidInputError) as exc:
        return _deny(f"{name}: its ModelDeployment cannot be rendered for comparison ({exc})")
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        model_name = (chain.model.get("metadata") or {}).get("name")
        return _deny(
            f"{name} differs from what devmlops renders for ModelDeployment {model_name}: {problems[0]}{more}",
            "children are written by devmlops only; change the ModelDeployment instead",
        )
    return _served_or_deny(chain, name, "matches what devmlops renders")


def _rendered(chain: Chain, evidence: Evidence) -> list[dict[str, Any]]:
    """What devmlops renders for the chain's ModelDeployment, as its stored status says what serves (a gated rollout:
    core/rollout.py); ``InvalidInputError`` when it does not parse."""
    stored = chain.model or {}
    return render_serving(
        parse_model_deployment(stored),
        stored.get("status"),
        plan_json=chain.plan_json,
        stable_plan_json=chain.stable_plan_json,
        verifier_image=evidence.verifier_image,
        baseline_json=chain.baseline_json,
        stable_baseline_json=chain.stable_baseline_json,
    )


def _compare_rendered(wanted: Mapping[str, Any], found: Mapping[str, Any], label: str) -> list[str]:
    problems = [f"{label} {p}" for p in differences(wanted.get("spec") or {}, found.get("spec") or {}, "spec")]
    problems += [
        f"{label} {p}"
        for p in metadata_differences(
            wanted.get("metadata") or {},
            found.get("metadata") or {},
            ignored=(ANNOTATION_POLICY_REVISION, "devmlops.io/spec-hash"),
            extra_ok=(*_KSERVE_METADATA, "deployment.kubernetes.io/"),
        )
    ]
    return problems


def _chain_problems(request: AdmissionRequest, obj: Mapping[str, Any], chain: Chain, evidence: Evidence) -> list[str]:
    """Compare the object and every stored hop of its chain with what they must be."""
    rendered = _rendered(chain, evidence)
    kserve = rendered[0]["kind"] == "InferenceService"
    problems: list[str] = []
    members = [obj, *chain.hops]  # nearest first; the last is the ModelDeployment's direct child
    top = members[-1]
    top_label = "it" if top is obj else f"its {top.get('kind')} {(top.get('metadata') or {}).get('name')}"
    top_name = (top.get("metadata") or {}).get("name")
    wanted = next((c for c in rendered if (c["kind"], c["metadata"]["name"]) == (top.get("kind"), top_name)), None)
    if wanted is None:
        return [f"{top_label}: devmlops renders no {top.get('kind')} named {top_name} for this ModelDeployment"]
    problems += _compare_rendered(wanted, top, top_label)
    for member, owner in itertools.pairwise(members):
        label = "it" if member is obj else f"its {member.get('kind')}"
        problems += _member_problems(
            member, owner, label, chain=chain, evidence=evidence, isvc=rendered[0] if kserve else None
        )
    return problems


_KSERVE_MODEL_CONTAINER = "kserve-container"


def _guarded(isvc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The rendered InferenceService's guard container (one, or none for a model without a guard)."""
    predictor = (isvc.get("spec") or {}).get("predictor") or {}
    return [c for c in predictor.get("containers") or [] if c.get("name") == KSERVE_GUARD_CONTAINER]


def _kserve_guard_problems(pod_spec: Mapping[str, Any], isvc: Mapping[str, Any]) -> list[str]:
    """KServe's predictor Deployment of a guarded model (core/render.py) runs the rendered guard, whose first port
    the predictor Service targets, and MLServer with the rendered loopback environment, and nothing else on the
    Pod's loopback. KServe merges the runtime's containers into it; this checks that the merge kept what devmlops
    rendered."""
    predictor = (isvc.get("spec") or {}).get("predictor") or {}
    wanted = _guarded(isvc)
    if not wanted:
        return []
    where = "spec.template.spec.containers"
    containers = [c for c in pod_spec.get("containers") or [] if isinstance(c, Mapping)]
    guards = [c for c in containers if c.get("name") == KSERVE_GUARD_CONTAINER]
    if len(guards) != 1:
        return [f"{where}: {len(guards)} {KSERVE_GUARD_CONTAINER} container(s), expected the devmlops guard"]
    problems = differences(_what_runs(wanted[0]), _what_runs(guards[0]), f"{where}[{KSERVE_GUARD_CONTAINER}]")
    ports = [p.get("containerPort") for p in guards[0].get("ports") or [] if isinstance(p, Mapping)]
    if ports[:1] != [GUARD_PORT]:
        problems.append(
            f"{where}[{KSERVE_GUARD_CONTAINER}].ports: got {ports}, expected the guard's {GUARD_PORT} first"
        )
    others = [
        c.get("name") for c in containers if c.get("name") not in (_KSERVE_MODEL_CONTAINER, KSERVE_GUARD_CONTAINER)
    ]
    if others:
        # Any other container shares the Pod's loopback, where MLServer listens: it could be a way around the guard.
        problems.append(f"{where}: {others} beside the model server and the guard, expected none")
    if pod_spec.get("hostNetwork"):
        problems.append("spec.template.spec.hostNetwork: true, expected the Pod's own network (its loopback)")
    models = [c for c in containers if c.get("name") == _KSERVE_MODEL_CONTAINER]
    env = [e for c in models for e in c.get("env") or [] if isinstance(e, Mapping)]
    for variable in (predictor.get("model") or {}).get("env") or []:
        found = [e for e in env if e.get("name") == variable["name"]]
        if found != [variable]:
            problems.append(
                f"{where}[{_KSERVE_MODEL_CONTAINER}].env {variable['name']}: got {found}, expected exactly {variable}"
            )
    return problems


def _member_problems(
    member: Mapping[str, Any],
    owner: Mapping[str, Any],
    label: str,
    *,
    chain: Chain,
    evidence: Evidence,
    isvc: Mapping[str, Any] | None,
) -> list[str]:
    """``isvc``: the rendered InferenceService, for a KServe model's chain."""
    kind, owner_kind = member.get("kind"), owner.get("kind")
    if kind == "ReplicaSet" and owner_kind == "Deployment":
        wanted = (owner.get("spec") or {}).get("template") or {}
        found = (member.get("spec") or {}).get("template") or {}
        problems = differences(wanted.get("spec") or {}, found.get("spec") or {}, "spec.template.spec")
        return [f"{label} {p}" for p in problems]
    if kind == "Service" and owner_kind == "InferenceService":
        return []  # KServe's predictor Service: only KServe's identity writes it (checked above)
    if kind == "Deployment" and owner_kind == "InferenceService":
        spec = _template_spec(member)
        images = list(pod_images(spec))
        guard = _kserve_guard_problems(spec, isvc or {})
        if _guarded(isvc or {}) and evidence.verifier_image in images:
            # The guard runs the devmlops image of this installation, checked above to be exactly the rendered one.
            images.remove(evidence.verifier_image)
        problems = [*guard, *_image_problems(images, chain), *unsigned_images(images, chain.signed_images)]
        problems += namespace_reads(spec, "spec.template.spec")  # the runtime's, merged in by KServe
        return [f"{label} {p}" for p in problems]
    if kind == "Pod" and owner_kind == "ReplicaSet":
        template = (owner.get("spec") or {}).get("template") or {}
        return [f"{label} {p}" for p in _pod_problems(member, template, chain=chain, evidence=evidence, isvc=isvc)]
    return [f"{label}: a {kind} controlled by a {owner_kind} is not part of any chain devmlops renders"]


def _image_problems(images: Sequence[str], chain: Chain) -> list[str]:
    problems = [f"image {image!r} is not pinned by digest" for image in images if "@sha256:" not in image]
    for policy, globs in chain.image_allow_lists:
        problems += [
            f"image {i!r} is not allow-listed by {policy} {list(globs)}"
            for i in images
            if matching_glob(globs, i) is None
        ]
    return problems


_RUNS = ("name", "image", "command", "args", "env", "envFrom", "workingDir", "securityContext")


def _what_runs(container: Any) -> dict[str, Any]:
    return {
        key: container.get(key) for key in _RUNS if isinstance(container, Mapping) and container.get(key) is not None
    }


def _pod_problems(
    pod: Mapping[str, Any],
    template: Mapping[str, Any],
    *,
    chain: Chain,
    evidence: Evidence,
    isvc: Mapping[str, Any] | None,
) -> list[str]:
    """A Pod runs what its ReplicaSet's template says, plus (KServe, ``isvc``: the rendered InferenceService) the
    devmlops storage initializer with the plan rendered from the ModelDeployment derived again; nothing from a host
    path; no ephemeral containers."""
    spec, wanted = pod.get("spec") or {}, template.get("spec") or {}
    problems = differences(
        [_what_runs(c) for c in wanted.get("containers") or []],
        [_what_runs(c) for c in spec.get("containers") or []],
        "spec.containers",
    )
    init = list(spec.get("initContainers") or [])
    if isvc is not None:
        initializers = [c for c in init if isinstance(c, Mapping) and c.get("name") == "storage-initializer"]
        init = [c for c in init if c not in initializers]
        predictor = (isvc.get("spec") or {}).get("predictor") or {}
        plan_json = str((predictor.get("annotations") or {}).get(ANNOTATION_VERIFICATION) or "")
        problems += _initializer_problems(initializers, pod, chain, evidence, plan_json=plan_json)
    problems += differences(
        [_what_runs(c) for c in wanted.get("initContainers") or []],
        [_what_runs(c) for c in init],
        "spec.initContainers",
    )
    if spec.get("ephemeralContainers"):
        problems.append("spec.ephemeralContainers: present, expected none")
    host = [v.get("name") for v in spec.get("volumes") or [] if isinstance(v, Mapping) and "hostPath" in v]
    if host:
        problems.append(f"spec.volumes: host paths {host}, expected none")
    return problems


def _initializer_problems(
    initializers: Sequence[Mapping[str, Any]],
    pod: Mapping[str, Any],
    chain: Chain,
    evidence: Evidence,
    *,
    plan_json: str,
) -> list[str]:
    """KServe picks the storage container by URI pattern from an unordered list: check that it picked devmlops's, that
    it runs and reads what the ClusterStorageContainer says (core/storageinit.py), and that the Pod carries the plan
    devmlops renders (``plan_json``: the rendered InferenceService's)."""
    model = (chain.model or {}).get("spec", {}).get("model") or {}
    if len(initializers) != 1:
        return [f"spec.initContainers: {len(initializers)} storage-initializer(s), expected devmlops's one"]
    initializer = initializers[0]
    problems = initializer_run_problems(initializer) + endpoint_problems(initializer, chain.s3_endpoint_allow_lists)
    if initializer.get("image") != evidence.verifier_image:
        problems.append(
            f"storage-initializer image {initializer.get('image')!r}, expected the devmlops verifier "
            f"{evidence.verifier_image!r} (another ClusterStorageContainer matched the URI)"
        )
    args = list(initializer.get("args") or [])
    expected_uri = VERIFY_URI_PREFIX + str(model.get("uri"))
    if args[:1] != [expected_uri] or MODEL_DIR not in args:
        problems.append(f"storage-initializer args {args}, expected [{expected_uri!r}, {MODEL_DIR!r}]")
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    try:
        found = VerificationPlan.from_json(str(annotations.get(ANNOTATION_VERIFICATION) or ""))
        expected = VerificationPlan.from_json(plan_json)
    except InvalidInputError as exc:
        return [*problems, f"annotation {ANNOTATION_VERIFICATION}: {exc.user_message}"]
    if not found.same_as(expected):
        problems.append(
            f"annotation {ANNOTATION_VERIFICATION}: not the plan devmlops derives from the ModelDeployment and policies"
        )
    return problems
