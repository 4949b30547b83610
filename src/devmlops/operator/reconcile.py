"""What the operator must do for one ModelDeployment, decided from what it observed and the time (no I/O here).

The shells (kopf's handlers, the retry and re-check loop, a child's report) observe (observe.py), ask ``plan`` and
run its actions in order (execute.py): write or replace a child, scale the model server to zero, post an Event,
write the status. Before all that, and whatever comes of it, the EndpointSlices under the model's Service names that
their Service does not keep are removed (``slice_removals``), and so are the Services under a KServe model's Service
names that its InferenceService does not control (``service_removals``). The rules live here, in functions tested on
fake observations (tests/unit/operator/test_reconcile.py); the certificate keeper (certplan.py) is built the same way.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from devmlops.core.addresses import ForeignService, ForeignSlice, foreign_services, foreign_slices
from devmlops.core.compare import differences, metadata_differences
from devmlops.core.manifests import ModelDeployment, parse_model_deployment
from devmlops.core.model import Decision
from devmlops.core.render import ANNOTATION_POLICY_REVISION, CANARY_SUFFIX, CanaryRendering, render_children
from devmlops.core.rollout import render_serving, what_serves
from devmlops.core.workloads import controller_of, model_service_names
from devmlops.errors import InvalidInputError
from devmlops.operator.conditions import ConditionStatus, set_condition
from devmlops.operator.readiness import Readiness, child_readiness, waiting_for
from devmlops.operator.retrain import RequestRetrain, retrain_step
from devmlops.operator.rollout import Measured, RolloutStep, next_step

__all__ = [
    "Approvals",
    "ChildRef",
    "DeleteChild",
    "Observation",
    "Plan",
    "PostEvent",
    "RemoveService",
    "RemoveSlice",
    "Retry",
    "ScaleToZero",
    "Serving",
    "WriteChild",
    "child_keys",
    "drift_of",
    "due_for_recheck",
    "going_away",
    "plan",
    "readiness_patch",
    "released_by_approval",
    "service_removals",
    "slice_removals",
    "status_write_needed",
    "timestamp",
    "with_serving_message",
]

Outcome = Literal["allowed", "violation", "error", "skipped"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Approvals:
    """The approval demands of the policies that select the model, and the approval found (if any)."""

    required_by: tuple[str, ...] = ()
    approved: bool = False
    approver: str = ""
    name: str = ""

    @property
    def awaiting(self) -> bool:
        return bool(self.required_by) and not self.approved


@dataclass(frozen=True, slots=True, kw_only=True)
class Serving:
    """What rendering needs once the model may be served: the verified signature and the verification plan."""

    digest: str
    signer: str
    plan_json: str
    policy_revision: str
    verifier_image: str
    baseline_json: str = ""  # the signed drift baseline (core/baseline.py), '' when none


@dataclass(frozen=True, slots=True, kw_only=True)
class Observation:
    model: Mapping[str, Any]  # the ModelDeployment as read
    decision: Decision  # decided again with today's policies, trust roots and Rego (admission stage)
    approvals: Approvals = Approvals()
    scale_to_zero: bool = False  # a selecting policy says onViolation: scaleToZero
    serving: Serving | None = None  # None: the signature did not verify again
    children: Mapping[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)  # stored, by (kind, name)
    warnings: Sequence[Mapping[str, Any]] = ()  # the controller's Warning Events about the first child (KServe's)
    pods: Sequence[Mapping[str, Any]] = ()  # a not-Ready InferenceService's predictor Pods (readiness.py)
    now: dt.datetime
    # A gated rollout (operator/rollout.py): the stable version's rendering inputs, verified again (None: it did not
    # verify, or no stable version differs from the spec), whether the new version is ready (and why not), and its
    # figures over the running step (None: no step is running).
    stable_serving: Serving | None = None
    canary_ready: tuple[bool, str] = (False, "the new version's Deployment is not there yet")
    measured: Measured | None = None
    drift: Mapping[str, float] | None = None  # the serving version's PSI per feature (None: not measured)
    # That stable version decided again (None: no stable version other than the spec's was decided) and its approval,
    # which it needs as the spec's version does: it is what serves.
    stable_decision: Decision | None = None
    stable_approvals: Approvals = Approvals()


@dataclass(frozen=True, slots=True)
class ChildRef:
    api_version: str
    kind: str
    name: str


@dataclass(frozen=True, slots=True)
class WriteChild:
    """Create the child (``current`` None) or replace the stored one whole with the rendering (never merge)."""

    wanted: dict[str, Any]
    current: Mapping[str, Any] | None = None
    drift: tuple[str, ...] = ()  # what differed, replicas aside: a Warning Event and a count each

    @property
    def tampered(self) -> tuple[str, ...]:
        return tuple(d for d in self.drift if "replicas" not in d.lower())  # a scale back up is no drift


@dataclass(frozen=True, slots=True)
class DeleteChild:
    """Remove a child the rendering no longer has (a finished rollout's new-version Deployment and Service)."""

    child: ChildRef


@dataclass(frozen=True, slots=True)
class ScaleToZero:
    """Scale the child down (always admitted). ``said`` is the ServingReady message with ``{}`` for the outcome."""

    child: ChildRef
    said: str = "{}"

    def outcome(self, error: str = "") -> str:
        return self.said.format(
            f"scaling failed: {error}" if error else f"{self.child.kind}/{self.child.name} scaled to zero"
        )


@dataclass(frozen=True, slots=True)
class PostEvent:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class RemoveSlice:
    """Delete an EndpointSlice that joins the model's Service without being its Service's (kube-proxy routes to every
    slice so labelled), and say so in a Warning Event on the model."""

    slice: ForeignSlice
    namespace: str

    def message(self, error: str = "") -> str:
        said = self.slice.describe(self.namespace)
        return f"{said}; not removed ({error}), tried again" if error else f"{said}; removed"


@dataclass(frozen=True, slots=True)
class RemoveService:
    """Delete a Service under a KServe model's Service name that the model's InferenceService does not control (KServe
    would keep it as the model's address; it writes its own once the name is free), and say so in a Warning Event."""

    service: ForeignService
    namespace: str
    inference_service: str

    def message(self, error: str = "") -> str:
        said = self.service.describe(self.namespace, self.inference_service)
        return f"{said}; not removed ({error}), tried again" if error else f"{said}; removed"


@dataclass(frozen=True, slots=True)
class Retry:
    """Nothing can be decided now (OPA down, a deadline): keep state and server as they are, try again soon."""

    reason: str


Action = WriteChild | DeleteChild | ScaleToZero | PostEvent | RequestRetrain | Retry


@dataclass(frozen=True, slots=True)
class Plan:
    outcome: Outcome
    status: dict[str, Any] | None = None  # the status to write (None: write nothing)
    actions: tuple[Action, ...] = ()
    status_first: bool = False  # the children are rendered from the new status (a rollout's step): write it first


def timestamp(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def child_keys(model: Mapping[str, Any]) -> list[ChildRef]:
    """The children the model renders into (to observe them before planning), from the renderer itself, first; then
    every other child a ModelDeployment of this name renders under any runtime kind. Only the former for a
    ModelDeployment that does not parse (decide() denies it, naming the field) would leave a server it had running
    unobserved; and so did a change of ``spec.runtime.kind``: mallory switched a served Triton model to KServe, the
    operator looked only for the InferenceService, and the Triton Deployment, still the model's, served on after its
    key was revoked, decided by nobody (operator deputy review). What is observed and controlled by the model but not
    rendered is deleted once the model passes, and scaled to zero with it when it does not (``plan``)."""
    rendered: list[ChildRef] = []
    try:
        parsed = parse_model_deployment(model)
    except InvalidInputError:
        parsed = None
    if parsed is not None:
        # A gated rollout may have the new version's children too: observed, so that a finished rollout removes
        # them; and so does a rollout the spec no longer asks for (spec.rollout removed mid-rollout: the status still
        # records it), or a model server nothing renders would run on beyond revocation.
        rolled_out = parsed.spec.gated_rollout is not None or bool((model.get("status") or {}).get("rollout"))
        canary = CanaryRendering(parsed, "", 0) if rolled_out else None
        rendered = [
            ChildRef(child["apiVersion"], child["kind"], child["metadata"]["name"])
            for child in render_children(parsed, plan_json="", verifier_image="", canary=canary)
        ]
    seen = {(ref.kind, ref.name) for ref in rendered}
    return rendered + [ref for ref in _any_kind(model) if (ref.kind, ref.name) not in seen]


def _any_kind(model: Mapping[str, Any]) -> list[ChildRef]:
    """Every child core/render.py writes for a ModelDeployment of this name, whatever its runtime kind and rollout."""
    name = str((model.get("metadata") or {}).get("name") or "")
    if not name:
        return []
    canary = f"{name}{CANARY_SUFFIX}"
    return [
        ChildRef("apps/v1", "Deployment", name),
        ChildRef("v1", "Service", name),
        ChildRef("apps/v1", "Deployment", canary),
        ChildRef("v1", "Service", canary),
        ChildRef("serving.kserve.io/v1beta1", "InferenceService", name),
    ]


def _controlled_by(child: Mapping[str, Any], model: Mapping[str, Any]) -> bool:
    """The child's controller reference names this ModelDeployment: its kind, its group and its uid. The uid alone
    was not enough: an editor may write a controller reference of another kind (a ConfigMap's, say) with the model's
    uid on an object of her own, which the webhook reviews as a reference to a ConfigMap (round 3 review)."""
    ref = controller_of(child)  # the API server allows one controller reference at most
    return (
        ref is not None
        and ref.get("uid") == (model.get("metadata") or {}).get("uid")
        and ref.get("kind") == "ModelDeployment"
        and str(ref.get("apiVersion") or "").startswith("devmlops.io/")
    )


def drift_of(wanted: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """How a stored child differs from its rendering (the comparison the webhook admits children by)."""
    problems = differences(wanted.get("spec") or {}, current.get("spec") or {}, "spec")
    problems += metadata_differences(
        wanted["metadata"],
        current.get("metadata") or {},
        ignored=(ANNOTATION_POLICY_REVISION, "devmlops.io/spec-hash"),
        extra_ok=("serving.kserve.io/", "internal.serving.kserve.io/", "deployment.kubernetes.io/"),
    )
    refs = (current.get("metadata") or {}).get("ownerReferences") or []
    if [r.get("uid") for r in refs if r.get("controller")] != [r["uid"] for r in wanted["metadata"]["ownerReferences"]]:
        problems.append("metadata.ownerReferences: not controlled by this ModelDeployment")
    return problems


class _Status:
    """The status being planned: conditions merged the Kubernetes way at one generation and time."""

    def __init__(self, model: Mapping[str, Any], now: dt.datetime) -> None:
        self.conditions: list[dict[str, Any]] = list((model.get("status") or {}).get("conditions") or [])
        self.generation = int((model.get("metadata") or {}).get("generation") or 0)
        self.now = timestamp(now)

    def set(self, type_: str, value: ConditionStatus, reason: str, message: str) -> None:
        self.conditions = set_condition(
            self.conditions,
            type_=type_,
            status=value,
            reason=reason,
            message=message,
            generation=self.generation,
            now=self.now,
        )

    def result(self, phase: str, **more: Any) -> dict[str, Any]:
        return {"conditions": self.conditions, "observedGeneration": self.generation, "phase": phase, **more}


def _status_child(model: Mapping[str, Any]) -> ChildRef | None:
    child = (model.get("status") or {}).get("child") or {}
    if not child:
        return None
    return ChildRef(str(child["apiVersion"]), str(child["kind"]), str(child["name"]))


def with_serving_message(status: Mapping[str, Any], message: str) -> dict[str, Any]:
    """``status`` with ServingReady's message replaced (a scale to zero that failed says so)."""
    conditions = [
        {**c, "message": message} if c.get("type") == "ServingReady" else dict(c)
        for c in status.get("conditions") or []
    ]
    return {**status, "conditions": conditions}


def _phase_event(model: Mapping[str, Any], status: Mapping[str, Any]) -> tuple[PostEvent, ...]:
    """An Event on each phase transition (Degraded as a Warning); routine progress goes to the log only."""
    if status["phase"] == (model.get("status") or {}).get("phase"):
        return ()
    message = next((c["message"] for c in reversed(status["conditions"]) if c["type"] != "ServingReady"), "")
    kind: Literal["Normal", "Warning"] = "Warning" if status["phase"] == "Degraded" else "Normal"
    return (PostEvent(kind, status["phase"], message),)


def going_away(model: Mapping[str, Any]) -> bool:
    """Being deleted: never served, re-checked or observed again (a shell asks before observing)."""
    return bool((model.get("metadata") or {}).get("deletionTimestamp"))


def slice_removals(
    model: Mapping[str, Any], slices: Sequence[Mapping[str, Any]], service_uids: Mapping[str, str]
) -> tuple[RemoveSlice, ...]:
    """One removal per EndpointSlice (``slices``: those labelled with the model's Service names) that the Service of
    that name (``service_uids``: the uid of each that exists) does not control. Planned apart from ``plan``, before
    it: whatever the model's verdict, and even when its evidence cannot be read, its address is its Service's alone."""
    if going_away(model):
        return ()
    namespace = str((model.get("metadata") or {}).get("namespace") or "")
    services = model_service_names(model)
    return tuple(RemoveSlice(found, namespace) for found in foreign_slices(slices, services, service_uids))


def service_removals(
    model: Mapping[str, Any], services: Sequence[Mapping[str, Any]], inference_service: Mapping[str, Any] | None
) -> tuple[RemoveService, ...]:
    """One removal per Service under a KServe model's Service names (``services``: those stored under them) that the
    model's own InferenceService (``inference_service``: the one stored under the model's name, its own only when
    this ModelDeployment controls it by uid) does not control by uid. Triton's Services are the operator's children,
    compared with their rendering and replaced whole (``plan``): nothing to remove there. Planned before ``plan``,
    like the slices, whatever the model's verdict."""
    if going_away(model) or ((model.get("spec") or {}).get("runtime") or {}).get("kind") == "triton":
        return ()
    metadata = model.get("metadata") or {}
    name, namespace = str(metadata.get("name") or ""), str(metadata.get("namespace") or "")
    uid = ""
    if inference_service is not None and _controlled_by(inference_service, model):
        uid = str((inference_service.get("metadata") or {}).get("uid") or "")
    found = foreign_services(services, model_service_names(model), inference_service=name, uid=uid)
    return tuple(RemoveService(service, namespace, name) for service in found)


def plan(observed: Observation) -> Plan:
    """The status and the actions for ``observed``; an empty plan for a model that is being deleted."""
    model, decision = observed.model, observed.decision
    if going_away(model):
        return Plan("skipped")
    undecided = _undecided(decision)
    if undecided is not None:
        return undecided
    status = _Status(model, observed.now)
    status.set("Admitted", "True", "AdmissionWebhook", "the devmlops admission webhook admitted this ModelDeployment")
    if not decision.allowed:
        return _degraded(observed, status, decision)
    status.set("Degraded", "False", "PoliciesPass", "every selecting policy passes")
    approvals = observed.approvals
    if approvals.awaiting:
        return _awaiting_approval(observed, status, approvals, str(model["spec"]["model"]["digest"]))
    if approvals.required_by:
        status.set("AwaitingApproval", "False", "Approved", f"approved by {approvals.approver} ({approvals.name})")
    return _admitted(observed, status)


def _undecided(decision: Decision) -> Plan | None:
    """Not a verdict on the model (every blocking result an error: OPA down, a deadline): keep the server as it is
    and try again instead of degrading it."""
    blocking = [r for r in decision.results if r.blocking]
    if blocking and all(r.outcome == "error" for r in blocking):
        return Plan("error", actions=(Retry(f"could not re-decide, state kept and retried: {decision.message}"),))
    return None


_SERVER_KINDS = {"Deployment": "apps/v1", "InferenceService": "serving.kserve.io/v1beta1"}


def _servers(observed: Observation, *, stable_only: bool) -> list[ChildRef]:
    """The model servers to scale to zero: the child the status names and every model server observed under a
    child's name (``child_keys``) that this ModelDeployment controls, but, where only the stable version is to stop
    (``stable_only``), the spec's version that a rollout tries beside it (``<md>-canary``). Before, a revoked (or no
    longer approved) new version was left running there, whose own Service lets anyone in the cluster call it, while
    the stable version, which still passed, was scaled to zero. The status names the child only once a reconcile got
    as far as writing it, after every child: a Triton model whose Service could never be written (named "fraud.v2",
    a DNS subdomain but no DNS label; a Service quota full) ran its Deployment and, its key revoked, was "scaled to
    zero (no child yet)" while it served on; and a server of the runtime kind the spec named before was never looked
    at (operator deputy review)."""
    model = observed.model
    child = _status_child(model)
    servers = [child] if child is not None else []
    canary = f"{(model.get('metadata') or {}).get('name')}{CANARY_SUFFIX}"
    for (kind, name), stored in observed.children.items():
        if kind not in _SERVER_KINDS or (stable_only and name == canary) or not _controlled_by(stored, model):
            continue
        if not any((s.kind, s.name) == (kind, name) for s in servers):
            servers.append(ChildRef(str(stored.get("apiVersion") or _SERVER_KINDS[kind]), kind, name))
    return servers


def _degraded(observed: Observation, status: _Status, decision: Decision, about: str = "") -> Plan:
    """``about`` names the version that failed when it is not the spec's (a rollout's stable version)."""
    model = observed.model
    status.set("Degraded", "True", "PolicyViolation", about + decision.message)
    if not about and any(r.gate == "signature" and r.blocking for r in decision.results):
        status.set("SignatureVerified", "False", "VerificationFailed", decision.message)
    actions: list[Action] = []
    if observed.scale_to_zero:
        said = "policy onViolation: scaleToZero ({})"
        scales = [ScaleToZero(server, said) for server in _servers(observed, stable_only=bool(about))]
        actions += scales
        outcome = scales[0].outcome() if scales else said.format("no child yet")
        status.set("ServingReady", "False", "ScaledToZero", outcome)
    result = status.result("Degraded")
    return Plan("violation", result, (*actions, *_phase_event(model, result)))


def _awaiting_approval(
    observed: Observation, status: _Status, approvals: Approvals, digest: str, about: str = ""
) -> Plan:
    """``approvals`` of the version ``digest`` that would serve; ``about`` names it when it is not the spec's."""
    model = observed.model
    status.set(
        "AwaitingApproval",
        "True",
        "NoValidApproval",
        f"{about}risk tier requires a ModelApproval for {digest} by a second person "
        f"({', '.join(approvals.required_by)}); not served until then",
    )
    # The approval expired, or a new digest awaits one.
    scales = [
        ScaleToZero(server, "approval no longer valid: {}") for server in _servers(observed, stable_only=bool(about))
    ]
    actions: list[Action] = [*scales]
    serving = scales[0].outcome() if scales else "no child until approved"
    status.set("ServingReady", "False", "AwaitingApproval", serving)
    result = status.result("AwaitingApproval")
    return Plan("allowed", result, (*actions, *_phase_event(model, result)))


def _rollout_step(observed: Observation, parsed: ModelDeployment) -> RolloutStep | None:
    if parsed.spec.gated_rollout is None:
        return None
    return next_step(
        observed.model, parsed, canary_ready=observed.canary_ready, measured=observed.measured, now=observed.now
    )


def _admitted(observed: Observation, status: _Status) -> Plan:
    model, serving = observed.model, observed.serving
    if serving is None:  # admitted by decide() but not verified again just after: a race with a revocation
        return Plan("error", actions=(Retry("the signature did not verify again after the decision; retried"),))
    status.set("SignatureVerified", "True", "Verified", f"{serving.digest} signed by {serving.signer}")
    parsed = parse_model_deployment(model)  # admitted: decide() parsed it
    step = _rollout_step(observed, parsed)
    stored_rollout = (model.get("status") or {}).get("rollout")
    rollout = step.status if step is not None and step.status is not None else stored_rollout
    serves = what_serves(parsed, {"rollout": rollout}, parsed.metadata.generation)
    stable = observed.stable_serving
    held = _stable_held(observed, status, serves.stable.spec.model.digest) if serves.stable is not None else None
    if held is not None:
        return held
    if serves.stable is not None and stable is None:
        why = "the stable version's signature did not verify again; children kept as they are, retried"
        return Plan("error", actions=(Retry(why),))
    rendered = render_serving(
        parsed,
        {"rollout": rollout},
        plan_json=serving.plan_json,
        stable_plan_json=stable.plan_json if stable is not None else "",
        verifier_image=serving.verifier_image,
        policy_revision=serving.policy_revision,
        baseline_json=serving.baseline_json,
        stable_baseline_json=stable.baseline_json if stable is not None else "",
    )
    # A step of the rollout changes the children on purpose (a share, a version): written without a drift report.
    moved = step is not None and step.status is not None and step.status != stored_rollout
    reshaped = moved and serves != what_serves(parsed, {"rollout": stored_rollout}, parsed.metadata.generation)
    actions: list[Action] = [*_child_writes(observed, rendered, expected=reshaped)]
    wanted_keys = {(child["kind"], child["metadata"]["name"]) for child in rendered}
    # Only what this ModelDeployment controls: an object under a child's name that another owner controls (another
    # ModelDeployment's, say) is not the operator's to remove.
    actions += [
        DeleteChild(ChildRef(str(child["apiVersion"]), kind, name))
        for (kind, name), child in observed.children.items()
        if (kind, name) not in wanted_keys and _controlled_by(child, model)
    ]
    first = rendered[0]
    stored = observed.children.get((first["kind"], first["metadata"]["name"]))
    readiness = (
        child_readiness(stored, observed.warnings, observed.pods) if stored is not None else waiting_for(first["kind"])
    )
    status.set("ServingReady", readiness.status, readiness.reason, readiness.message)
    if rollout and parsed.spec.gated_rollout is not None:
        # True: the spec's version serves alone; Unknown: it is being tried; False: it was rolled back.
        said = _ROLLOUT_CONDITION.get(str(rollout.get("phase")), "Unknown")
        status.set("RolledOut", said, str(rollout.get("phase")), str(rollout.get("message") or ""))
    # Drift of the version that serves (the stable one while a new one is tried): a retrain request per episode.
    guard = (serves.stable or parsed).spec.guard
    # The request names the serving version whole (its uri with its digest), never the new version's uri beside it.
    serving_model = {**model, "spec": rollout["stableSpec"]} if serves.stable is not None and rollout else model
    retrain, request = retrain_step(
        serving_model,
        digest=(serves.stable or parsed).spec.model.digest,
        threshold=guard.drift.threshold if guard is not None and guard.drift is not None else None,
        drift=observed.drift,
        now=status.now,
    )
    stored_retrain = (model.get("status") or {}).get("retrain")
    if request is not None:
        actions += [request, PostEvent("Warning", "RetrainRequested", request.message)]
    # The version a registry reference resolved to, as the registry gate found it (its reason names it whole).
    resolved = [r.reason for r in observed.decision.results if r.gate == "registry" and r.outcome == "pass"]
    result = status.result(
        "Admitted",
        verifiedDigest=serving.digest,
        signer=serving.signer,
        child={"apiVersion": first["apiVersion"], "kind": first["kind"], "name": first["metadata"]["name"]},
        **({"registryVersion": resolved[0]} if resolved else {}),
        **({"rollout": rollout} if rollout is not None and parsed.spec.gated_rollout is not None else {}),
        # spec.rollout dropped: the record goes too (null removes it in the status merge patch), once the new
        # version's children are deleted above.
        **({"rollout": None} if stored_rollout and parsed.spec.gated_rollout is None else {}),
        **({"retrain": retrain or stored_retrain} if retrain or stored_retrain else {}),
    )
    events = [PostEvent(kind, reason, message) for kind, reason, message in (step.events if step else ())]
    return Plan("allowed", result, (*actions, *events, *_phase_event(model, result)), status_first=moved)


def _stable_held(observed: Observation, status: _Status, digest: str) -> Plan | None:
    """A rollout's stable version serves (beside the new one, or alone after a rollback): it is held to its own
    decision and approval as the spec's version is. Before, a stable version that no longer passed (a revoked key)
    was only retried with its children kept, and its approval was never looked at, so it served on for as long as
    the rollout's state lasted (a rollback lasts until the spec changes)."""
    decision = observed.stable_decision
    if decision is None:
        return None
    about = (
        f"the stable version {digest}, which serves while the spec's version is tried or after its rollback (remove "
        "spec.rollout to serve the spec's version alone): "
    )
    undecided = _undecided(decision)
    if undecided is not None:
        return undecided
    if not decision.allowed:
        return _degraded(observed, status, decision, about)
    if observed.stable_approvals.awaiting:
        return _awaiting_approval(observed, status, observed.stable_approvals, digest, about)
    return None


_ROLLOUT_CONDITION: dict[str, ConditionStatus] = {"Stable": "True", "Promoted": "True", "RolledBack": "False"}


def _child_writes(observed: Observation, rendered: Sequence[dict[str, Any]], *, expected: bool) -> list[Action]:
    """Create or replace what differs from the rendering; a difference nobody planned (``expected`` False) is drift:
    repaired, and reported."""
    actions: list[Action] = []
    for wanted in rendered:
        current = observed.children.get((wanted["kind"], wanted["metadata"]["name"]))
        if current is None:
            actions.append(WriteChild(wanted))
            continue
        drift = drift_of(wanted, current)
        if drift and expected:
            actions.append(WriteChild(wanted, current))
        elif drift:
            write = WriteChild(wanted, current, tuple(drift))
            actions.append(write)
            if write.tampered:
                name = f"{wanted['kind']} {wanted['metadata']['name']}"
                message = f"{name} replaced whole: {'; '.join(write.tampered[:5])}"
                actions.append(PostEvent("Warning", "DriftRepaired", message))
    return actions


def status_write_needed(model: Mapping[str, Any], result: Mapping[str, Any]) -> bool:
    """For a model read outside kopf's handler (a re-check round): write only when the phase changed or the stored
    status is of an older spec; a round that changes nothing writes nothing."""
    status = model.get("status") or {}
    generation = int((model.get("metadata") or {}).get("generation") or 0)
    return (
        result.get("phase") != status.get("phase")
        or status.get("observedGeneration") != generation
        or result.get("retrain") != status.get("retrain")  # a retrain episode began or ended: asked once each
    )


def due_for_recheck(model: Mapping[str, Any]) -> bool:
    """Re-check rounds take models that were decided (a create or resume handler, or its parked retry, decides the
    others) and are not being deleted."""
    return bool((model.get("status") or {}).get("phase")) and not going_away(model)


def released_by_approval(model: Mapping[str, Any]) -> bool:
    """A new approval changes something only for a model not decided yet or waiting for one."""
    return (model.get("status") or {}).get("phase") in (None, "", "AwaitingApproval")


def readiness_patch(
    model: Mapping[str, Any], readiness: Readiness, now: dt.datetime, child: Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
    """The status patch that mirrors a child's report into ServingReady: only for an Admitted model, only from the
    child its status names (``child``; KServe's predictor Deployment carries the model's label too, but its report is
    the InferenceService's to make), and only when it changes something (None otherwise)."""
    status = model.get("status") or {}
    if status.get("phase") != "Admitted" or going_away(model):
        return None
    named = status.get("child") or {}
    if child is not None and (named.get("kind"), named.get("name")) != (
        child.get("kind"),
        (child.get("metadata") or {}).get("name"),
    ):
        return None
    current: Mapping[str, Any] = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "ServingReady"), {}
    )
    if (current.get("status"), current.get("reason"), current.get("message")) == (
        readiness.status,
        readiness.reason,
        readiness.message,
    ):
        return None
    conditions = set_condition(
        status.get("conditions") or [],
        type_="ServingReady",
        status=readiness.status,
        reason=readiness.reason,
        message=readiness.message,
        generation=int((model.get("metadata") or {}).get("generation") or 0),
        now=timestamp(now),
    )
    return {"status": {"conditions": conditions}}
