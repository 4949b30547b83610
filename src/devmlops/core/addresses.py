"""Nothing but a model's own Service takes its address: EndpointSlices and externalIPs.

kube-proxy sends a Service's traffic to the endpoints of every EndpointSlice labelled
``kubernetes.io/service-name: <Service>``, whoever wrote it and whatever its ``endpointslice.kubernetes.io/managed-by``
says: a namespace editor's slice under a model's Service name (``<md>``, ``<md>-canary``, ``<md>-predictor``, ...)
adds her address to the model's backends. Only the EndpointSlice controller writes a model's slices (it derives them
from the Service's selector, which devmlops reviews); any other writer is refused, on a create, on an update of the
controller's own slice, and on a relabel onto (or off) a model's Service. A slice written before the model existed
named no model's Service when it was admitted, and the EndpointSlice controller leaves alone the slices it does not
manage: a new ModelDeployment whose Service names such a slice already carries is refused, naming the slice
(``waiting_slices``, ``waiting_slice_result``). Both checks read, neither locks: a slice written in the instant
between a new ModelDeployment's admission and its storage is seen by neither, so the operator looks again at each
reconcile (``foreign_slices``) and removes every slice under the model's Service names that its Service does not
control by uid; a slice that does not even name its Service as its controller (``names_its_service``) makes it look
at once.

A Service is no different: the webhook refuses a Service under a model's Service name once the model exists, and a new
ModelDeployment whose names a Service no model owns already carries; both read, neither locks. KServe keeps a Service
it finds under its name when ports and selector match, whatever its type and owner, so a Service written in that same
instant (an ExternalName to mallory's host, with the ports and selector KServe renders) became the new model's address.
At each reconcile of a KServe model the operator removes every Service under the model's KServe names that the
model's own InferenceService does not control by uid (``foreign_services``); KServe then writes its own.

kube-proxy also sends traffic for any Service's ``spec.externalIPs`` address, on every node, to that Service's
endpoints (CVE-2020-8554): a Service in any namespace naming a model Service's ClusterIP (or a Pod's, or a node's)
intercepts that address in the cluster. As Kubernetes' own DenyServiceExternalIPs admission plugin does, no Service
the webhook sees may add an externalIP; those a Service already has may stay or go.

A model's Service is deleted only by the operator, KServe or the garbage collector (``review_service_deletion``):
a deleted Service's ClusterIP is anyone's to ask for (``spec.clusterIP``), and a namespace editor who deleted the
model's Service and took its address at once received what the model's clients still sent there (the service
environment variables of Pods started before, cached DNS answers), while the operator wrote the Service again under
a new address.

The shell (``webhook/service.py``) finds which model a Service name or an address belongs to
(``Evidence.model_addresses``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from devmlops.core.evidence import Evidence
from devmlops.core.model import Decision, GateResult, Outcome
from devmlops.core.review import AdmissionRequest

__all__ = [
    "ENDPOINT_SLICES",
    "MODEL_OWNER_KINDS",
    "SERVICE_NAME_LABEL",
    "ForeignService",
    "ForeignSlice",
    "added_external_ips",
    "foreign_services",
    "foreign_slices",
    "model_owner",
    "names_its_service",
    "review_endpoint_slice",
    "review_external_ips",
    "review_service_deletion",
    "sliced_services",
    "waiting_slice_result",
    "waiting_slices",
]

GATE = "address"
ENDPOINT_SLICES = "endpointslices"
# The label by which kube-proxy (and cluster DNS) joins an EndpointSlice to a Service of the same namespace.
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def _decision(outcome: Outcome, reason: str, hint: str = "") -> Decision:
    return Decision((GateResult(gate=GATE, outcome=outcome, reason=reason, hint=hint),))


def _label(obj: Mapping[str, Any] | None) -> str:
    labels = ((obj or {}).get("metadata") or {}).get("labels") or {}
    value = labels.get(SERVICE_NAME_LABEL) if isinstance(labels, Mapping) else None
    return value if isinstance(value, str) else ""


def sliced_services(request: AdmissionRequest) -> tuple[str, ...]:
    """The Services an EndpointSlice under review joins: its label, and on an update the label it had (a slice
    relabelled off a model's Service takes endpoints from it as surely as one relabelled onto it adds them)."""
    old = request.old_object if request.operation == "UPDATE" else None
    names = (_label(request.object), _label(old))
    return tuple(dict.fromkeys(n for n in names if n))


def review_endpoint_slice(request: AdmissionRequest, evidence: Evidence) -> Decision:
    """Only the EndpointSlice controller (``Identities.endpoint_slices``) writes a slice that names a model's
    Service; a slice naming no model's Service is anyone's."""
    what = f"EndpointSlice {request.namespace}/{request.name or _name(request.object)}"
    taken = [(s, evidence.model_addresses[s]) for s in sliced_services(request) if s in evidence.model_addresses]
    if not taken:
        return _decision("pass", f"{what}: names no model's Service")
    writers = evidence.identities.endpoint_slices
    service, model = taken[0]
    if request.username in writers:
        return _decision("pass", f"{what}: the EndpointSlice controller keeps {model}'s Service {service}")
    return _decision(
        "fail",
        f"{what}: labelled {SERVICE_NAME_LABEL}={service}, it would add its endpoints to the Service of {model} "
        f"(the model's address: kube-proxy routes to every slice so labelled, whoever wrote it); written by "
        f"'{request.username}', expected only the EndpointSlice controller ({', '.join(writers)})",
        f"label the slice with a Service of your own (or none); the EndpointSlice controller writes {service}'s "
        "endpoints from the Pods its selector matches",
    )


def waiting_slices(slices: Iterable[Mapping[str, Any]], service: str, model_service_uid: str) -> tuple[str, ...]:
    """The names of the EndpointSlices labelled as joining ``service`` that a new model whose Service ``service`` will
    be must not find there: every one but those the EndpointSlice controller keeps for the stored Service of that
    name when a model owns it (``model_service_uid``, '' when no model owns a Service so named): the controller names
    the Service, by uid, as its slice's controlling owner (a model recreated while its old Service lingers)."""

    return tuple(_name(obj) for obj in slices if _label(obj) == service and not _controlled_by(obj, model_service_uid))


def _controlling_service(obj: Mapping[str, Any], field: str, value: str) -> bool:
    """The object's controlling owner is a Service whose ownerReference ``field`` is ``value`` (never so for '')."""
    return _controlling(obj, "Service", field, value)


def _controlled_by(obj: Mapping[str, Any], service_uid: str) -> bool:
    """The slice's controlling owner is the Service of uid ``service_uid`` (never so for '')."""
    return _controlling_service(obj, "uid", service_uid)


@dataclass(frozen=True, slots=True)
class ForeignSlice:
    """An EndpointSlice under a model's Service name that the Service of that name does not control: kube-proxy
    sends part of the model's traffic to its endpoints (``addresses``)."""

    name: str
    service: str
    addresses: tuple[str, ...]

    def describe(self, namespace: str) -> str:
        where = ", ".join(self.addresses) if self.addresses else "no address yet"
        return (
            f"EndpointSlice {namespace}/{self.name} labelled {SERVICE_NAME_LABEL}={self.service} has no controlling "
            f"owner that is the model's Service {self.service} (by uid): kube-proxy would send part of the model's "
            f"traffic to its endpoints ({where})"
        )


def foreign_slices(
    slices: Iterable[Mapping[str, Any]], services: Sequence[str], service_uids: Mapping[str, str]
) -> tuple[ForeignSlice, ...]:
    """The EndpointSlices labelled with one of a model's Service names (``services``) that the stored Service of that
    name does not control by uid (``service_uids``: the uid of each that exists). The EndpointSlice controller names
    the Service, by uid, as the controlling owner of every slice it writes; a slice written before the Service existed
    cannot know its uid, and once the model exists the webhook refuses every other writer. Under a name with no
    Service (yet, or any more: a finished rollout's ``-canary``) every slice is foreign but one that names a Service of
    that name as its controller: a deleted Service's, which the garbage collector removes (as it removes a forged
    one, whose owner does not exist); it is judged by uid once a Service of that name exists again."""
    names = set(services)

    def foreign(obj: Mapping[str, Any]) -> bool:
        uid = service_uids.get(_label(obj), "")
        return not _controlled_by(obj, uid) if uid else not names_its_service(obj)

    return tuple(
        ForeignSlice(_name(obj), _label(obj), _addresses(obj))
        for obj in slices
        if _label(obj) in names and foreign(obj)
    )


def names_its_service(obj: Mapping[str, Any]) -> bool:
    """The EndpointSlice names, as its controlling owner, a Service of the name its label joins it to (as every slice
    the EndpointSlice controller writes does); whether it is that Service by uid is checked when the model's slices
    are listed (``foreign_slices``). Any other slice under a model's Service name is looked at at once."""
    return _controlling_service(obj, "name", _label(obj))


def _addresses(obj: Mapping[str, Any]) -> tuple[str, ...]:
    endpoints = obj.get("endpoints") or []
    found = [
        str(address)
        for endpoint in (endpoints if isinstance(endpoints, list) else [])
        if isinstance(endpoint, Mapping)
        for address in (endpoint.get("addresses") or [])
    ]
    return tuple(dict.fromkeys(found))


@dataclass(frozen=True, slots=True)
class ForeignService:
    """A Service under one of a KServe model's Service names that the model's own InferenceService does not control:
    KServe keeps it as the model's address when its ports and selector match (``points_to``: where it sends clients)."""

    name: str
    points_to: str
    owner: str  # its controlling owner as written ('' when it has none)

    def describe(self, namespace: str, inference_service: str) -> str:
        owned = f"controlled by {self.owner}" if self.owner else "with no controlling owner"
        return (
            f"Service {namespace}/{self.name} ({self.points_to}), {owned}, is not the model's InferenceService "
            f"{inference_service}'s (by uid): KServe keeps a Service it finds under its name when ports and selector "
            "match, whatever its type, so the model's clients would reach whatever it points to"
        )


def foreign_services(
    services: Iterable[Mapping[str, Any]], names: Sequence[str], *, inference_service: str, uid: str
) -> tuple[ForeignService, ...]:
    """The Services under a KServe model's Service names (``names``) that its InferenceService (named
    ``inference_service``; ``uid`` '' while the model has none of its own yet) does not control by uid. KServe names
    its InferenceService, by uid, as the controlling owner of every Service it writes; a Service written before the
    InferenceService existed cannot know its uid, and once the model exists the webhook refuses every other Service
    under those names. While the model has no InferenceService every Service there is foreign but one that names an
    InferenceService of that name as its controller: a deleted one's, which the garbage collector removes."""
    wanted = set(names)

    def own(obj: Mapping[str, Any]) -> bool:
        if uid:
            return _controlling(obj, "InferenceService", "uid", uid)
        return _controlling(obj, "InferenceService", "name", inference_service)

    return tuple(
        ForeignService(_name(obj), _points_to(obj), _controller(obj))
        for obj in services
        if _name(obj) in wanted and not own(obj)
    )


def _controlling(obj: Mapping[str, Any], kind: str, field: str, value: str) -> bool:
    """The object's controlling owner is a ``kind`` whose ownerReference ``field`` is ``value`` (never so for '')."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return bool(value) and any(
        isinstance(ref, Mapping)
        and ref.get("kind") == kind
        and ref.get("controller") is True
        and ref.get(field) == value
        for ref in refs
    )


def _controller(obj: Mapping[str, Any]) -> str:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    ref = next((r for r in refs if isinstance(r, Mapping) and r.get("controller") is True), None)
    return f"{ref.get('kind')} {ref.get('name')} (uid {ref.get('uid')})" if ref is not None else ""


def _points_to(obj: Mapping[str, Any]) -> str:
    spec = obj.get("spec") or {}
    kind = str(spec.get("type") or "ClusterIP")
    if kind == "ExternalName":
        return f"type ExternalName -> {spec.get('externalName') or ''}"
    selector = spec.get("selector") or {}
    chosen = ",".join(f"{k}={v}" for k, v in sorted(selector.items())) if isinstance(selector, Mapping) else ""
    return f"type {kind}, selector {chosen or 'none'}"


def waiting_slice_result(namespace: str, name: str, service: str) -> GateResult:
    """A new ModelDeployment's refusal: the EndpointSlice ``name`` already joins its Service ``service``."""
    return GateResult(
        gate=GATE,
        outcome="fail",
        reason=f"EndpointSlice {namespace}/{name} labelled {SERVICE_NAME_LABEL}={service} already exists and the "
        f"EndpointSlice controller does not keep it for a model's Service: kube-proxy joins every slice so labelled, "
        f"whoever wrote it, to this model's Service {service}, so its endpoints would receive the model's traffic",
        hint=f"delete EndpointSlice {name} (or label it with a Service of its own) first",
    )


# The kinds whose owner reference makes a Service a model's (the Triton Service, KServe's predictor Service).
MODEL_OWNER_KINDS = ("ModelDeployment", "InferenceService")


def model_owner(obj: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The owner reference by which a model owns ``obj`` (a ModelDeployment or an InferenceService), or None."""
    refs = ((obj or {}).get("metadata") or {}).get("ownerReferences") or []
    return next((r for r in refs if isinstance(r, Mapping) and r.get("kind") in MODEL_OWNER_KINDS), None)


def review_service_deletion(request: AdmissionRequest, evidence: Evidence) -> Decision | None:
    """A Service a model owns is deleted only by the operator, KServe or the garbage collector and the namespace
    controller (``Identities.service_deleters``). None: no model owns it (its deletion is anyone's)."""
    old = request.old_object or {}
    owner = model_owner(old)
    if owner is None:
        return None
    ids = evidence.identities
    deleters = (ids.operator, ids.kserve, *ids.service_deleters)
    what = f"Service {request.namespace}/{request.name or _name(old)}"
    model = f"{owner.get('kind')} {request.namespace}/{owner.get('name')}"
    if request.username in deleters:
        return _decision("pass", f"{what}: the Service of {model}, deleted by '{request.username}'")
    ip = str((old.get("spec") or {}).get("clusterIP") or "")
    freed = f"its ClusterIP {ip}" if ip and ip != "None" else "its address"
    return _decision(
        "fail",
        f"{what}: the Service of {model} (the model's address); deleting it frees {freed}, which any Service may then "
        "ask for (spec.clusterIP) while the model's clients still dial it (the service environment variables of Pods "
        f"started before, cached DNS answers); deleted by '{request.username}', expected only the operator, KServe "
        f"or the garbage collector ({', '.join(deleters)})",
        f"delete {model} (its children go with it); the operator repairs its Service",
    )


def _external_ips(obj: Mapping[str, Any] | None) -> tuple[str, ...]:
    ips = ((obj or {}).get("spec") or {}).get("externalIPs") or []
    return tuple(str(ip) for ip in ips) if isinstance(ips, Sequence) and not isinstance(ips, str) else ()


def added_external_ips(request: AdmissionRequest) -> tuple[str, ...]:
    """The ``spec.externalIPs`` a Service create or update adds (all of a create's; an update's that the stored
    Service did not have)."""
    before = set(_external_ips(request.old_object)) if request.operation == "UPDATE" else set()
    return tuple(ip for ip in dict.fromkeys(_external_ips(request.object)) if ip not in before)


def review_external_ips(request: AdmissionRequest, evidence: Evidence) -> Decision | None:
    """A Service may add no externalIP (None: it adds none, decide the rest of it as before)."""
    added = added_external_ips(request)
    if not added:
        return None
    what = f"Service {request.namespace}/{request.name or _name(request.object)}"
    models = [
        f"{ip} is the ClusterIP of {evidence.model_addresses[ip]}" for ip in added if ip in evidence.model_addresses
    ]
    whose = "; ".join(models) if models else "any address in it could be a model's, a Pod's or a node's"
    return _decision(
        "fail",
        f"{what}: spec.externalIPs adds {', '.join(added)} ({whose}); kube-proxy sends traffic for an external IP, "
        f"on every node, to this Service's endpoints, so it would intercept that address in the cluster "
        f"(CVE-2020-8554); written by '{request.username}', expected no new externalIPs from anyone",
        "remove spec.externalIPs; expose the Service as type LoadBalancer or NodePort (or an Ingress or Gateway)",
    )


def _name(obj: Mapping[str, Any] | None) -> str:
    return str(((obj or {}).get("metadata") or {}).get("name") or "")
