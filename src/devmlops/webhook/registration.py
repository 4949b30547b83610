"""What the API server sends to the webhook: the one list of webhook entries that the local stack registers and the
Helm chart renders (a test holds the two together).

- devmlops kinds and the KServe kinds: every namespace but the excluded ones, every API version ("*"), so that an
  older or newer version of a kind is no way around the review.
- In namespaces under enforcement (label ``devmlops.io/enforce: "true"``, set by cluster admins): every Pod, its
  ephemeral containers, exec, attach and port-forward, and every workload kind with its scale subresource.
- Elsewhere, Deployments and StatefulSets that look like model servers (a courtesy, for early denials); and every
  Pod and workload that wears (or wore) a label by which a model's Service selects its Pods, on itself or its pod
  template (``ROUTING_CONDITION``): the model's Service would send its clients there, so it must derive from the
  model (an unlabelled namespace's Pod of mallory's own image, labelled as the model, took its traffic).
- Elsewhere too, every exec, attach and port-forward (a CONNECT names the Pod but carries none of its labels, so no
  condition can narrow it): into a Pod that wears a model's routing labels it needs a ClusterBreakGlass (mallory's
  exec into a model's own Pod there ran what she liked beside the signed server, and from its guard's container
  took the loopback port the guard forwards the model's clients to); any other Pod's is let through.
- Services a ModelDeployment or an InferenceService owns (or owned before the update), wherever they are: they
  route a model server's traffic (a Triton model's Service is a child like its Deployment; KServe's predictor
  Service is KServe's to write); and, outside enforcement too, every Service named like a model's address
  (``-predictor``, ``-transformer``, ``-explainer``, ``-canary``): KServe keeps a Service it finds under its name,
  so an unowned one there would take the model's traffic (the webhook refuses it when that model exists); and,
  everywhere, every Service that sets ``spec.externalIPs`` (kube-proxy intercepts those addresses in the cluster).
- EndpointSlices, wherever they are, that carry (or carried, before the update) the label
  ``kubernetes.io/service-name`` and that anyone but the EndpointSlice controller writes: kube-proxy joins every
  slice so labelled to the Service it names, so a slice under a model's Service name takes the model's address. The
  controller's own writes (one per Pod readiness change, cluster-wide) never wait on the webhook.
- The deletion of a Service a ModelDeployment or an InferenceService owns, wherever it is (a DELETE carries the
  stored Service as ``oldObject``): its ClusterIP, once free, is anyone's to ask for, while the model's clients still
  dial it. Any other deletion never waits on the webhook, nor does the garbage collector's, the namespace
  controller's or the controller manager's (deleting a ModelDeployment or a namespace works with the webhook down).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from devmlops.core.addresses import SERVICE_NAME_LABEL
from devmlops.core.evidence import DEFAULT_SERVER_IMAGES, Identities
from devmlops.core.render import LABEL_MODEL_DEPLOYMENT, LABEL_MODEL_SERVER
from devmlops.core.workloads import (
    ENFORCE_LABEL,
    KSERVE_APP_PREFIX,
    ROUTING_LABEL_KEYS,
    SCRAPED_LABEL_KEYS,
    SERVICE_SUFFIXES,
    lookalike_pattern,
)

__all__ = [
    "EXCLUDED_NAMESPACES",
    "MUTATING_ENTRIES",
    "ROUTING_CONDITION",
    "VALIDATING_ENTRIES",
    "Entry",
    "model_server_condition",
    "service_slice_condition",
    "webhook_entry",
]

EXCLUDED_NAMESPACES = ("kube-system", "devmlops-system")
Where = Literal["all", "enforced", "unenforced"]
_CREATE_UPDATE = ("CREATE", "UPDATE")


@dataclass(frozen=True, slots=True)
class Rule:
    group: str
    resources: tuple[str, ...]
    operations: tuple[str, ...] = _CREATE_UPDATE
    versions: tuple[str, ...] = ("*",)
    scope: Literal["Namespaced", "Cluster"] = "Namespaced"


@dataclass(frozen=True, slots=True)
class Entry:
    name: str
    rules: tuple[Rule, ...]
    where: Where = "all"
    model_servers_only: bool = False  # matchConditions: labelled as, or running, a model server image
    model_service: bool = False  # matchConditions: a model owns it (or did, before), or its name is a model's address
    routing: bool = False  # matchConditions: it or its pod template wears (or wore) a model's routing labels
    orphaning_only: bool = False  # matchConditions: a DELETE with propagationPolicy Orphan
    service_slices: bool = False  # matchConditions: a Service's EndpointSlice, not written by its controller
    model_service_deletes: bool = False  # matchConditions: the deletion of a Service a model owns

    @property
    def namespaced(self) -> bool:
        return all(rule.scope == "Namespaced" for rule in self.rules)


def _devmlops(resource: str, scope: Literal["Namespaced", "Cluster"] = "Namespaced") -> Entry:
    return Entry(resource, (Rule("devmlops.io", (resource,), scope=scope),))


def _kserve(resource: str, scope: Literal["Namespaced", "Cluster"] = "Namespaced") -> Entry:
    return Entry(resource, (Rule("serving.kserve.io", (resource,), scope=scope),))


_WORKLOADS = ("deployments", "replicasets", "statefulsets", "daemonsets")
VALIDATING_ENTRIES: tuple[Entry, ...] = (
    _devmlops("modeldeployments"),
    _devmlops("clustermodelpolicies", "Cluster"),
    _devmlops("modelpolicies"),
    _devmlops("modelapprovals"),
    _devmlops("clusterworkloadexemptions", "Cluster"),
    _devmlops("clusterbreakglasses", "Cluster"),
    _kserve("inferenceservices"),
    _kserve("servingruntimes"),
    _kserve("clusterservingruntimes", "Cluster"),
    _kserve("trainedmodels"),
    _kserve("inferencegraphs"),
    _kserve("llminferenceservices"),
    Entry(
        "pods-enforced",
        (
            Rule("", ("pods",)),
            Rule("", ("pods/ephemeralcontainers",), operations=("UPDATE",)),
            # A port-forward dials the Pod's own loopback, where a guarded model server listens (docs/guard.md).
            Rule("", ("pods/exec", "pods/attach", "pods/portforward"), operations=("CONNECT",)),
        ),
        where="enforced",
    ),
    Entry(
        "workloads-enforced",
        (
            Rule("apps", _WORKLOADS + tuple(f"{r}/scale" for r in _WORKLOADS if r != "daemonsets")),
            Rule("batch", ("jobs", "cronjobs")),
        ),
        where="enforced",
    ),
    # Every Service in an enforced namespace (none may take a model's address); elsewhere those models own(ed).
    Entry("services-enforced", (Rule("", ("services",)),), where="enforced"),
    Entry("services", (Rule("", ("services",)),), where="unenforced", model_service=True),
    Entry("endpointslices", (Rule("discovery.k8s.io", ("endpointslices",)),), service_slices=True),
    Entry("model-service-deletes", (Rule("", ("services",), operations=("DELETE",)),), model_service_deletes=True),
    Entry(
        "orphaning",
        (
            Rule("devmlops.io", ("modeldeployments",), operations=("DELETE",)),
            Rule("serving.kserve.io", ("inferenceservices",), operations=("DELETE",)),
            Rule("apps", ("deployments", "replicasets", "statefulsets"), operations=("DELETE",)),
        ),
        orphaning_only=True,
    ),
    # Outside enforcement, what a model's Service would select (core/workloads.py: routing_labels).
    # An ephemeral container may mount the Pod's volumes (the verified model's among them) and shares its loopback.
    Entry(
        "routed-pods",
        (Rule("", ("pods",)), Rule("", ("pods/ephemeralcontainers",), operations=("UPDATE",))),
        where="unenforced",
        routing=True,
    ),
    # Outside enforcement, exec, attach and port-forward: a CONNECT carries only its options (PodExecOptions, ...), no
    # Pod whose labels a matchCondition could read, so every one is sent; the webhook reads the Pod, and one that
    # wears a model's routing labels needs a ClusterBreakGlass as under enforcement (core/workloads.py: _enforced).
    Entry(
        "connects",
        (Rule("", ("pods/exec", "pods/attach", "pods/portforward"), operations=("CONNECT",)),),
        where="unenforced",
    ),
    Entry(
        "routed-workloads",
        (Rule("apps", _WORKLOADS), Rule("batch", ("jobs", "cronjobs"))),
        where="unenforced",
        routing=True,
    ),
    Entry("deployments", (Rule("apps", ("deployments",)),), where="unenforced", model_servers_only=True),
    Entry("statefulsets", (Rule("apps", ("statefulsets",)),), where="unenforced", model_servers_only=True),
)
MUTATING_ENTRIES: tuple[Entry, ...] = (
    _devmlops("modeldeployments"),
    Entry("modelapprovals", (Rule("devmlops.io", ("modelapprovals",), operations=("CREATE",)),)),
)


def model_server_condition(image_patterns: Iterable[str] = DEFAULT_SERVER_IMAGES) -> str:
    """CEL for matchConditions: only workloads that are, or were before this update, a model server reach the
    webhook: labelled as one (or as a ModelDeployment's), owned by a ModelDeployment or InferenceService, or running a
    model server image. The old object counts too: an update that drops the labels, the owner or the image must not
    slip past the webhook by the very change it makes."""
    images = " || ".join(f"c.image.contains('{p}')" for p in image_patterns)

    def server(obj: str) -> str:
        return (
            f"(has({obj}.metadata.labels) && ('{LABEL_MODEL_SERVER}' in {obj}.metadata.labels || "
            f"'{LABEL_MODEL_DEPLOYMENT}' in {obj}.metadata.labels)) || "
            f"{obj}.spec.template.spec.containers.exists(c, {images}) || "
            f"(has({obj}.spec.template.spec.initContainers) && "
            f"{obj}.spec.template.spec.initContainers.exists(c, {images}))"
        )

    return f"{server('object')} || (oldObject != null && ({server('oldObject')})) || {OWNED_BY_MODEL}"


def _routing_condition() -> str:
    """CEL: the object or its old version wears a model's routing label on its own metadata, its pod template (a
    Deployment's, ReplicaSet's, StatefulSet's, DaemonSet's or Job's) or its job template's pod template (a CronJob's).
    Every step is guarded by has(): an error in a matchCondition would fail the request closed for every Pod. A key
    Prometheus reads as one the guards' PodMonitor keeps a Pod by is one too (core/workloads.py: lookalike_pattern)."""
    keys = ", ".join(f"'{key}'" for key in ROUTING_LABEL_KEYS)
    lookalike = " || ".join(f"k.matches('{lookalike_pattern(key)}')" for key in SCRAPED_LABEL_KEYS)

    def labels_at(obj: str, path: tuple[str, ...]) -> str:
        steps = [obj]
        guards = []
        for field in (*path, "labels"):
            steps.append(field)
            guards.append(f"has({'.'.join(steps)})")
        labels = ".".join(steps)
        wears = (
            f"({labels}.exists(k, k in [{keys}] || {lookalike}) || "
            f"('app' in {labels} && {labels}['app'].startsWith('{KSERVE_APP_PREFIX}')))"
        )
        return "(" + " && ".join([*guards, wears]) + ")"

    paths = (("metadata",), ("spec", "template", "metadata"), ("spec", "jobTemplate", "spec", "template", "metadata"))
    any_of = " || ".join(labels_at("OBJ", path) for path in paths)
    return f"({any_of.replace('OBJ', 'object')}) || (oldObject != null && ({any_of.replace('OBJ', 'oldObject')}))"


ROUTING_CONDITION = _routing_condition()

# Only orphaning deletes reach the webhook: any other deletion is allowed, and must not wait on it.
ORPHANING = (
    "has(request.options) && ((has(request.options.propagationPolicy) && "
    "request.options.propagationPolicy == 'Orphan') || "
    "(has(request.options.orphanDependents) && request.options.orphanDependents == true))"
)
# A model owned it before this request (a DELETE carries the stored object as oldObject, and object is null then):
# alone, the condition on a Service's deletion (core/addresses.py: review_service_deletion).
MODEL_SERVICE_DELETED = (
    "oldObject != null && has(oldObject.metadata.ownerReferences) && "
    "oldObject.metadata.ownerReferences.exists(r, r.kind in ['ModelDeployment', 'InferenceService'])"
)
# Sent for any deleter but the garbage collector, the namespace controller and the controller manager: deleting a
# ModelDeployment or a namespace never waits on the webhook (it may be down, or being uninstalled), and those
# deletions are the model's own end (Identities.service_deleters; the webhook allows them too).
MODEL_SERVICE_DELETION = (
    "!(request.userInfo.username in ["
    + ", ".join(f"'{user}'" for user in Identities().service_deleters)
    + f"]) && {MODEL_SERVICE_DELETED}"
)
OWNED_BY_MODEL = (
    "(has(object.metadata.ownerReferences) && "
    "object.metadata.ownerReferences.exists(r, r.kind in ['ModelDeployment', 'InferenceService'])) || "
    f"({MODEL_SERVICE_DELETED})"
)

# A Service named like one of KServe's per component (or a rollout's new version): the name decides whose traffic
# it takes, so it is sent whoever owns it. (A Triton model's own Service, named as the ModelDeployment, cannot be
# told by its name; the operator replaces whatever it finds under that name.) And a Service with externalIPs: it
# takes those addresses in the cluster, a model Service's ClusterIP among them (core/addresses.py).
MODEL_SERVICE = (
    OWNED_BY_MODEL
    + " || "
    + " || ".join(f"object.metadata.name.endsWith('{suffix}')" for suffix in SERVICE_SUFFIXES if suffix)
    + " || (has(object.spec.externalIPs) && size(object.spec.externalIPs) > 0)"
)


def service_slice_condition(writers: Iterable[str] = Identities().endpoint_slices) -> str:
    """CEL for matchConditions: an EndpointSlice that joins (or joined, before this update) a Service, written by
    anyone but the EndpointSlice controller (``writers``; the webhook refuses those that name a model's Service)."""
    names = ", ".join(f"'{w}'" for w in writers)

    def joins(obj: str) -> str:
        return f"has({obj}.metadata.labels) && '{SERVICE_NAME_LABEL}' in {obj}.metadata.labels"

    joined = f"({joins('object')}) || (oldObject != null && {joins('oldObject')})"
    return f"!(request.userInfo.username in [{names}]) && ({joined})"


def namespace_selector(where: Where, excluded: Iterable[str] = EXCLUDED_NAMESPACES) -> dict[str, Any]:
    expressions: list[dict[str, Any]] = [
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": list(excluded)}
    ]
    if where == "enforced":
        expressions.append({"key": ENFORCE_LABEL, "operator": "In", "values": ["true"]})
    elif where == "unenforced":
        expressions.append({"key": ENFORCE_LABEL, "operator": "NotIn", "values": ["true"]})
    return {"matchExpressions": expressions}


def webhook_entry(entry: Entry, url: str, ca_pem: bytes, timeout_seconds: int, suffix: str) -> dict[str, Any]:
    """One webhook of a configuration; an empty ``ca_pem`` leaves the caBundle to the operator's certificate keeper."""
    client_config: dict[str, Any] = {"url": url}
    if ca_pem:
        client_config["caBundle"] = base64.b64encode(ca_pem).decode()
    webhook: dict[str, Any] = {
        "name": f"{entry.name}.{suffix}.devmlops.io",
        "clientConfig": client_config,
        "rules": [
            {
                "apiGroups": [rule.group],
                "apiVersions": list(rule.versions),
                "operations": list(rule.operations),
                "resources": list(rule.resources),
                "scope": rule.scope,
            }
            for rule in entry.rules
        ],
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "failurePolicy": "Fail",
        "timeoutSeconds": timeout_seconds,
    }
    if entry.namespaced:
        webhook["namespaceSelector"] = namespace_selector(entry.where)
    if entry.model_servers_only:
        webhook["matchConditions"] = [{"name": "runs-a-model-server", "expression": model_server_condition()}]
    if entry.model_service:
        webhook["matchConditions"] = [{"name": "a-models-service", "expression": MODEL_SERVICE}]
    if entry.service_slices:
        webhook["matchConditions"] = [{"name": "joins-a-service", "expression": service_slice_condition()}]
    if entry.model_service_deletes:
        webhook["matchConditions"] = [{"name": "deletes-a-models-service", "expression": MODEL_SERVICE_DELETION}]
    if entry.routing:
        webhook["matchConditions"] = [{"name": "wears-a-models-routing-labels", "expression": ROUTING_CONDITION}]
    if entry.orphaning_only:
        webhook["matchConditions"] = [{"name": "orphans-its-dependents", "expression": ORPHANING}]
    return webhook
