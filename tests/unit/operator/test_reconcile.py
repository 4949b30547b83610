"""The operator's reconcile as a pure plan: fake observations and a fake clock, no API server."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
from typing import Any

import pytest

from devmlops.core.manifests import parse_model_deployment
from devmlops.core.model import Decision, GateResult
from devmlops.core.render import render_children
from devmlops.operator.readiness import Readiness
from devmlops.operator.reconcile import (
    Approvals,
    ChildRef,
    DeleteChild,
    Observation,
    PostEvent,
    Retry,
    ScaleToZero,
    Serving,
    WriteChild,
    child_keys,
    due_for_recheck,
    plan,
    readiness_patch,
    released_by_approval,
    service_removals,
    slice_removals,
    status_write_needed,
    with_serving_message,
)

DIGEST = "sha256:" + "ab" * 32
T0 = dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(minutes=5)
PASS = Decision((GateResult(gate="signature", outcome="pass", reason="verified", policy="p"),), signer="release")
REVOKED = Decision((GateResult(gate="signature", outcome="fail", reason="key revoked", policy="p"),))
REGO_FAILS = Decision(
    (
        GateResult(gate="signature", outcome="pass", reason="verified", policy="p"),
        GateResult(gate="rego", outcome="fail", reason="license denied", policy="p"),
    )
)
OPA_DOWN = Decision((GateResult(gate="rego", outcome="error", reason="OPA unreachable", policy="p"),))
SERVING = Serving(
    digest=DIGEST, signer="release", plan_json='{"plan":1}', policy_revision="r1", verifier_image="devmlops@v1"
)
ISVC = ChildRef("serving.kserve.io/v1beta1", "InferenceService", "fraud")


def model(*, kind: str = "kserve", generation: int = 1, status: dict[str, Any] | None = None) -> dict[str, Any]:
    runtime: dict[str, Any] = {"kind": kind, "replicas": 2}
    if kind == "triton":
        runtime["image"] = "registry.local/triton@sha256:" + "1" * 64
    md: dict[str, Any] = {
        "apiVersion": "devmlops.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "fraud", "namespace": "ml", "uid": "md-uid", "generation": generation},
        "spec": {"model": {"name": "fraud", "uri": "s3://models/fraud", "digest": DIGEST}, "runtime": runtime},
    }
    if status is not None:
        md["status"] = status
    return md


def observed(md: dict[str, Any], decision: Decision = PASS, *, now: dt.datetime = T0, **more: Any) -> Observation:
    fields: dict[str, Any] = {"serving": SERVING if decision.allowed else None, **more}
    return Observation(model=md, decision=decision, now=now, **fields)


def rendered(md: dict[str, Any]) -> list[dict[str, Any]]:
    return render_children(
        parse_model_deployment(md), plan_json=SERVING.plan_json, verifier_image="devmlops@v1", policy_revision="r1"
    )


def as_kserve_stores_it(child: dict[str, Any], **status: Any) -> dict[str, Any]:
    """The InferenceService with KServe's defaults and bookkeeping, as the API server returns it."""
    stored = copy.deepcopy(child)
    stored["metadata"].update(uid="isvc-uid", resourceVersion="7", finalizers=["inferenceservice.finalizers"])
    stored["spec"]["predictor"]["model"].update(name="", resources={})
    stored["status"] = status
    return stored


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


def served(md: dict[str, Any], **child_status: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``md`` after its first reconcile (status written) and its InferenceService as stored."""
    first = plan(observed(md))
    assert first.status is not None
    return model(status=first.status), as_kserve_stores_it(rendered(md)[0], **child_status)


# -- phases ------------------------------------------------------------------------------------------------------


def test_a_new_admitted_model_gets_its_child_created_an_admitted_event_and_a_status_waiting_for_the_child() -> None:
    result = plan(observed(model()))
    assert result.outcome == "allowed"
    (write, event) = result.actions
    assert write == WriteChild(rendered(model())[0])
    assert event == PostEvent("Normal", "Admitted", f"{DIGEST} signed by release")
    status = result.status
    assert status is not None
    assert (status["phase"], status["observedGeneration"], status["verifiedDigest"], status["signer"]) == (
        "Admitted",
        1,
        DIGEST,
        "release",
    )
    assert status["child"] == {"apiVersion": ISVC.api_version, "kind": ISVC.kind, "name": ISVC.name}
    assert [(c["type"], c["status"], c["reason"]) for c in status["conditions"]] == [
        ("Admitted", "True", "AdmissionWebhook"),
        ("Degraded", "False", "PoliciesPass"),
        ("SignatureVerified", "True", "Verified"),
        ("ServingReady", "Unknown", "WaitingForChild"),
    ]
    assert {c["lastTransitionTime"] for c in status["conditions"]} == {"2026-11-30T09:00:00Z"}


def test_a_triton_model_gets_its_deployment_and_service_and_the_deployment_is_the_child_of_record() -> None:
    md = model(kind="triton")
    result = plan(observed(md))
    writes = [a for a in result.actions if isinstance(a, WriteChild)]
    assert [(w.wanted["kind"], w.current) for w in writes] == [("Deployment", None), ("Service", None)]
    assert result.status is not None
    assert result.status["child"]["kind"] == "Deployment"
    assert [(r.kind, r.name) for r in child_keys(md)][:2] == [("Deployment", "fraud"), ("Service", "fraud")]


def test_the_children_of_every_runtime_kind_are_observed_after_the_rendered_ones() -> None:
    """Operator deputy review: a spec switched from Triton to KServe (or back) leaves the other kind's children."""
    kserve = [(r.kind, r.name) for r in child_keys(model())]
    assert kserve[0] == ("InferenceService", "fraud")
    assert {("Deployment", "fraud"), ("Service", "fraud"), ("Deployment", "fraud-canary")} <= set(kserve[1:])
    triton = [(r.kind, r.name) for r in child_keys(model(kind="triton"))]
    assert ("InferenceService", "fraud") in triton[2:]
    assert len(triton) == len(set(triton))
    unparsed = model()
    unparsed["spec"] = {"runtime": "nonsense"}
    assert ("Deployment", "fraud") in [(r.kind, r.name) for r in child_keys(unparsed)]


def _left_by_triton(controller_uid: str = "md-uid") -> dict[tuple[str, str], dict[str, Any]]:
    """The Triton Deployment and Service of a model since switched to KServe (controlled by ``controller_uid``)."""
    left = {}
    for child in rendered(model(kind="triton")):
        stored = copy.deepcopy(child)
        stored["metadata"]["ownerReferences"][0]["uid"] = controller_uid
        left[(child["kind"], child["metadata"]["name"])] = stored
    return left


def test_a_model_switched_to_another_runtime_kind_has_the_old_kinds_children_deleted() -> None:
    md, isvc = served(model())
    children = {("InferenceService", "fraud"): isvc, **_left_by_triton()}
    result = plan(observed(md, children=children, now=T1))
    deleted = {(a.child.kind, a.child.name) for a in result.actions if isinstance(a, DeleteChild)}
    assert deleted == {("Deployment", "fraud"), ("Service", "fraud")}
    foreign = plan(observed(md, children={("InferenceService", "fraud"): isvc, **_left_by_triton("another")}))
    assert not [a for a in foreign.actions if isinstance(a, DeleteChild)]


def test_a_revoked_model_switched_to_another_runtime_kind_has_the_old_kinds_server_scaled_to_zero_too() -> None:
    md, isvc = served(model())
    children = {("InferenceService", "fraud"): isvc, **_left_by_triton()}
    result = plan(observed(md, REVOKED, scale_to_zero=True, children=children, now=T1))
    scaled = [a.child for a in result.actions if isinstance(a, ScaleToZero)]
    assert scaled == [ISVC, ChildRef("apps/v1", "Deployment", "fraud")]


def test_the_signed_baseline_of_serving_goes_into_the_guards_config_only_where_drift_is_monitored() -> None:
    baseline = '{"features":[{"edges":[1.0],"index":0,"name":"x","proportions":[0.5,0.5]}],"rows":2}'
    serving = dataclasses.replace(SERVING, baseline_json=baseline)

    def guard_config(guard: dict[str, Any]) -> dict[str, Any]:
        md = model(kind="triton")
        md["spec"]["guard"] = guard
        writes = [a for a in plan(observed(md, serving=serving)).actions if isinstance(a, WriteChild)]
        containers = writes[0].wanted["spec"]["template"]["spec"]["containers"]
        args = next(c["args"] for c in containers if c["name"] == "devmlops-guard")
        return dict(json.loads(next(a for a in args if a.startswith("--config=")).removeprefix("--config=")))

    assert guard_config({"protocol": "v2", "drift": {}})["baseline"] == json.loads(baseline)
    assert "baseline" not in guard_config({"protocol": "v2"})


def test_a_model_served_as_rendered_needs_no_write_and_no_event_and_its_serving_ready_follows_the_child() -> None:
    md, isvc = served(model(), conditions=[{"type": "Ready", "status": "True", "reason": "PredictorReady"}])
    result = plan(observed(md, children={("InferenceService", "fraud"): isvc}, now=T1))
    assert result.actions == ()
    assert result.status is not None
    assert condition(result.status, "ServingReady")["status"] == "True"
    # lastTransitionTime moves only where a status changed.
    assert condition(result.status, "Admitted")["lastTransitionTime"] == "2026-11-30T09:00:00Z"
    assert condition(result.status, "ServingReady")["lastTransitionTime"] == "2026-11-30T09:05:00Z"
    assert not status_write_needed(md, result.status)  # a re-check round writes nothing


def test_a_spec_change_is_written_at_its_generation_and_the_child_replaced_with_the_new_rendering() -> None:
    md, isvc = served(model())
    changed = model(generation=2, status=md["status"])
    changed["spec"]["model"]["uri"] = "s3://models/fraud-v2"
    result = plan(observed(changed, children={("InferenceService", "fraud"): isvc}, now=T1))
    (write, event) = result.actions
    assert isinstance(write, WriteChild)
    assert write.current is isvc
    assert write.wanted["spec"]["predictor"]["model"]["storageUri"] == "devmlops+s3://models/fraud-v2"
    assert event == PostEvent(
        "Warning", "DriftRepaired", "InferenceService fraud replaced whole: " + "; ".join(write.tampered)
    )
    assert result.status is not None
    assert {c["observedGeneration"] for c in result.status["conditions"]} == {2}
    assert status_write_needed(changed, result.status)


def test_drift_is_replaced_whole_with_a_warning_but_scaling_back_up_is_no_drift() -> None:
    md, isvc = served(model())
    tampered = copy.deepcopy(isvc)
    tampered["spec"]["predictor"]["containers"] = [{"name": "sidecar", "image": "evil"}]
    result = plan(observed(md, children={("InferenceService", "fraud"): tampered}))
    write, event = result.actions
    assert isinstance(write, WriteChild)
    assert write.tampered == (
        "spec.predictor.containers: got [{'name': 'sidecar', 'image': 'evil'}], expected nothing there",
    )
    assert isinstance(event, PostEvent)
    assert (event.type, event.reason) == ("Warning", "DriftRepaired")

    scaled_down = copy.deepcopy(isvc)
    scaled_down["spec"]["predictor"]["minReplicas"] = 0
    (write,) = plan(observed(md, children={("InferenceService", "fraud"): scaled_down})).actions
    assert isinstance(write, WriteChild)
    assert write.drift
    assert not write.tampered


# -- revocation, retries ----------------------------------------------------------------------------------------


def test_a_revoked_key_degrades_the_model_with_a_warning_and_scales_it_to_zero_when_the_policy_says_so() -> None:
    md, isvc = served(model())
    result = plan(observed(md, REVOKED, scale_to_zero=True, children={("InferenceService", "fraud"): isvc}, now=T1))
    assert result.outcome == "violation"
    scale, event = result.actions
    assert scale == ScaleToZero(ISVC, "policy onViolation: scaleToZero ({})")
    assert isinstance(event, PostEvent)
    assert (event.type, event.reason) == ("Warning", "Degraded")
    assert event.message == REVOKED.message
    status = result.status
    assert status is not None
    assert status["phase"] == "Degraded"
    assert (condition(status, "Degraded")["status"], condition(status, "Degraded")["message"]) == (
        "True",
        REVOKED.message,
    )
    assert condition(status, "SignatureVerified")["reason"] == "VerificationFailed"
    serving = condition(status, "ServingReady")
    assert (serving["status"], serving["reason"], serving["message"]) == (
        "False",
        "ScaledToZero",
        "policy onViolation: scaleToZero (InferenceService/fraud scaled to zero)",
    )
    assert "verifiedDigest" not in status  # the last verified digest is not claimed again


def test_with_on_violation_degrade_the_server_keeps_running_and_other_gates_leave_the_signature_verified() -> None:
    md, isvc = served(model())
    result = plan(observed(md, REGO_FAILS, children={("InferenceService", "fraud"): isvc}))
    assert [type(a) for a in result.actions] == [PostEvent]
    assert result.status is not None
    assert condition(result.status, "SignatureVerified")["status"] == "True"
    assert condition(result.status, "ServingReady")["reason"] == "WaitingForChild"  # untouched


def test_a_degraded_model_without_a_child_has_nothing_to_scale() -> None:
    result = plan(observed(model(), REVOKED, scale_to_zero=True))
    assert not [a for a in result.actions if isinstance(a, ScaleToZero)]
    assert result.status is not None
    assert condition(result.status, "ServingReady")["message"] == "policy onViolation: scaleToZero (no child yet)"


TRITON_DEPLOYMENT = ChildRef("apps/v1", "Deployment", "fraud")


def _stored_triton(md: dict[str, Any], controller_uid: str = "md-uid") -> dict[tuple[str, str], dict[str, Any]]:
    """The Triton Deployment as the operator wrote it (controlled by ``controller_uid``), and no Service: it could not
    be written, so no reconcile got as far as the status."""
    deployment = copy.deepcopy(rendered(md)[0])
    deployment["metadata"]["ownerReferences"][0]["uid"] = controller_uid
    return {("Deployment", "fraud"): deployment}


def test_a_revoked_model_server_is_scaled_to_zero_although_no_status_names_it_yet() -> None:
    """Operator deputy review: a Triton model named "fraud.v2" has a Deployment but never a Service (not a DNS label),
    so every reconcile failed before the status; revoked, it was "scaled to zero (no child yet)" and served on."""
    md = model(kind="triton")
    result = plan(observed(md, REVOKED, scale_to_zero=True, children=_stored_triton(md), now=T1))
    scales = [a for a in result.actions if isinstance(a, ScaleToZero)]
    assert scales == [ScaleToZero(TRITON_DEPLOYMENT, "policy onViolation: scaleToZero ({})")]
    assert result.status is not None
    assert condition(result.status, "ServingReady")["message"] == (
        "policy onViolation: scaleToZero (Deployment/fraud scaled to zero)"
    )


def test_a_model_server_no_status_names_is_scaled_to_zero_when_its_approval_is_missing() -> None:
    md = model(kind="triton")
    result = plan(observed(md, approvals=REQUIRED, children=_stored_triton(md), now=T1))
    assert [a for a in result.actions if isinstance(a, ScaleToZero)] == [
        ScaleToZero(TRITON_DEPLOYMENT, "approval no longer valid: {}")
    ]


def test_an_object_under_the_model_servers_name_that_another_owner_controls_is_not_scaled() -> None:
    md = model(kind="triton")
    result = plan(observed(md, REVOKED, scale_to_zero=True, children=_stored_triton(md, "another-uid"), now=T1))
    assert not [a for a in result.actions if isinstance(a, ScaleToZero)]


@pytest.mark.parametrize(
    ("api_version", "kind"),
    [("v1", "ConfigMap"), ("other.example/v1", "ModelDeployment"), ("devmlops.io/v1alpha1", "ModelPolicy")],
)
def test_a_controller_reference_of_another_kind_with_the_models_uid_is_another_owner(
    api_version: str, kind: str
) -> None:
    """Round 3 review: the uid alone made mallory's own object, under a child's name with a reference to "a ConfigMap"
    that carries the model's uid (the webhook reviews it as a ConfigMap's), the model's to delete or scale."""
    md = model(kind="triton")
    stored = _stored_triton(md)
    stored[("Deployment", "fraud")]["metadata"]["ownerReferences"][0].update(apiVersion=api_version, kind=kind)
    revoked = plan(observed(md, REVOKED, scale_to_zero=True, children=stored, now=T1))
    assert not [a for a in revoked.actions if isinstance(a, ScaleToZero)]
    md_kserve, isvc = served(model())
    left = {("InferenceService", "fraud"): isvc, **stored}
    passing = plan(observed(md_kserve, children=left, now=T1))
    assert not [a for a in passing.actions if isinstance(a, DeleteChild)]


def test_a_scale_to_zero_that_failed_says_so_in_serving_ready() -> None:
    md, _ = served(model())
    result = plan(observed(md, REVOKED, scale_to_zero=True))
    (scale, _event) = result.actions
    assert isinstance(scale, ScaleToZero)
    assert result.status is not None
    failed = with_serving_message(result.status, scale.outcome("403"))
    assert condition(failed, "ServingReady")["message"] == "policy onViolation: scaleToZero (scaling failed: 403)"
    assert condition(failed, "Degraded") == condition(result.status, "Degraded")


def test_a_degraded_model_whose_policies_pass_again_is_served_again() -> None:
    md, isvc = served(model())
    degraded = plan(observed(md, REVOKED, scale_to_zero=True, now=T1)).status
    assert degraded is not None
    scaled = copy.deepcopy(isvc)
    scaled["spec"]["predictor"]["minReplicas"] = 0
    later = T1 + dt.timedelta(minutes=1)
    result = plan(observed(model(status=degraded), children={("InferenceService", "fraud"): scaled}, now=later))
    write, event = result.actions
    assert isinstance(write, WriteChild)
    assert write.wanted["spec"]["predictor"]["minReplicas"] == 2
    assert event == PostEvent("Normal", "Admitted", f"{DIGEST} signed by release")
    assert result.status is not None
    assert condition(result.status, "Degraded")["lastTransitionTime"] == "2026-11-30T09:06:00Z"


@pytest.mark.parametrize("stored", [None, "Admitted", "Degraded"])
def test_when_nothing_can_be_decided_state_and_server_are_kept_and_a_retry_is_asked(stored: str | None) -> None:
    md = model(status={"phase": stored} if stored else None)
    result = plan(observed(md, OPA_DOWN, scale_to_zero=True))
    assert result.outcome == "error"
    assert result.status is None
    (retry,) = result.actions
    assert isinstance(retry, Retry)
    assert "OPA unreachable" in retry.reason


def test_a_signature_that_no_longer_verifies_just_after_an_allowing_decision_is_retried_not_served() -> None:
    result = plan(Observation(model=model(), decision=PASS, serving=None, now=T0))
    assert result.status is None
    assert [type(a) for a in result.actions] == [Retry]


def test_a_model_being_deleted_gets_no_status_and_no_action() -> None:
    md, isvc = served(model())
    md["metadata"]["deletionTimestamp"] = "2026-11-30T09:01:00Z"
    result = plan(observed(md, REVOKED, scale_to_zero=True, children={("InferenceService", "fraud"): isvc}))
    assert (result.outcome, result.status, result.actions) == ("skipped", None, ())
    assert not due_for_recheck(md)


# -- approvals --------------------------------------------------------------------------------------------------

REQUIRED = Approvals(required_by=("eu-high",))
APPROVED = Approvals(required_by=("eu-high",), approved=True, approver="bob", name="bob-approves")


def test_a_model_that_needs_an_approval_waits_without_a_child() -> None:
    result = plan(observed(model(), approvals=REQUIRED))
    assert result.outcome == "allowed"
    (event,) = result.actions
    assert isinstance(event, PostEvent)
    assert (event.type, event.reason) == ("Normal", "AwaitingApproval")
    status = result.status
    assert status is not None
    assert status["phase"] == "AwaitingApproval"
    assert "child" not in status
    waiting = condition(status, "AwaitingApproval")
    assert (waiting["status"], waiting["reason"]) == ("True", "NoValidApproval")
    assert f"a ModelApproval for {DIGEST} by a second person (eu-high)" in waiting["message"]
    assert condition(status, "ServingReady")["message"] == "no child until approved"
    assert released_by_approval(model(status=status))


def test_an_approval_arriving_releases_the_model_and_its_child_is_created() -> None:
    waiting = plan(observed(model(), approvals=REQUIRED)).status
    assert waiting is not None
    result = plan(observed(model(status=waiting), approvals=APPROVED, now=T1))
    write, event = result.actions
    assert write == WriteChild(rendered(model())[0])
    assert isinstance(event, PostEvent)
    assert event.reason == "Admitted"
    assert result.status is not None
    approved = condition(result.status, "AwaitingApproval")
    assert (approved["status"], approved["reason"], approved["message"]) == (
        "False",
        "Approved",
        "approved by bob (bob-approves)",
    )
    assert approved["lastTransitionTime"] == "2026-11-30T09:05:00Z"
    assert not released_by_approval(model(status=result.status))


def test_an_approval_that_expired_scales_the_served_child_to_zero() -> None:
    md, isvc = served(model())
    result = plan(observed(md, approvals=REQUIRED, children={("InferenceService", "fraud"): isvc}, now=T1))
    scale, event = result.actions
    assert scale == ScaleToZero(ISVC, "approval no longer valid: {}")
    assert isinstance(event, PostEvent)
    assert event.reason == "AwaitingApproval"
    assert result.status is not None
    assert condition(result.status, "ServingReady")["message"] == (
        "approval no longer valid: InferenceService/fraud scaled to zero"
    )


# -- what KServe reports ----------------------------------------------------------------------------------------

STORAGE = 'fails to reconcile predictor: StorageURI not supported: storageUri, "devmlops+s3://models/fraud"'


def test_an_inference_service_kserve_cannot_render_makes_serving_ready_false_with_kserves_reason() -> None:
    md, isvc = served(model(), deploymentMode="Standard")  # no conditions: KServe rendered nothing
    warning = {
        "type": "Warning",
        "reason": "InternalError",
        "message": STORAGE,
        "lastTimestamp": "2026-11-30T09:00:01Z",
    }
    result = plan(observed(md, children={("InferenceService", "fraud"): isvc}, warnings=(warning,), now=T1))
    assert result.actions == ()
    assert result.status is not None
    serving = condition(result.status, "ServingReady")
    assert (serving["status"], serving["reason"]) == ("False", "InternalError")
    assert serving["message"] == f"KServe cannot render InferenceService fraud: {STORAGE}"
    assert result.status["phase"] == "Admitted"  # admitted and verified; KServe is what fails


def test_a_childs_report_is_mirrored_only_into_an_admitted_model_and_only_when_it_changes_something() -> None:
    md, _ = served(model())
    refused = Readiness("False", "InternalError", "KServe cannot render InferenceService fraud: x")
    patch = readiness_patch(md, refused, T1)
    assert patch is not None
    serving = condition(patch["status"], "ServingReady")
    assert (serving["status"], serving["reason"], serving["lastTransitionTime"]) == (
        "False",
        "InternalError",
        "2026-11-30T09:05:00Z",
    )
    assert readiness_patch(model(status=patch["status"]), refused, T1) is None
    degraded = plan(observed(md, REVOKED)).status
    assert readiness_patch(model(status=degraded), refused, T1) is None
    assert readiness_patch(model(), refused, T1) is None  # not decided yet


def test_only_the_child_the_status_names_is_mirrored_not_kserves_predictor_deployment() -> None:
    """KServe's predictor Deployment carries the model's label (KServe passes the InferenceService's labels on), so
    the operator's Deployment watch sees it too: its "0 of 1 replicas ready" overwrote the InferenceService's report,
    and with it the reason a model never serves (found by `make e2e`)."""
    stored, isvc = served(model())
    refused = Readiness("False", "StorageInitializerFailed", "the storage initializer in Pod p exited 1: ...")
    predictor = {"kind": "Deployment", "metadata": {"name": "fraud-predictor"}}
    assert readiness_patch(stored, Readiness("False", "ChildNotReady", "Deployment has 0 of 1"), T1, predictor) is None
    assert readiness_patch(stored, refused, T1, isvc) is not None


def test_re_check_rounds_take_only_decided_models() -> None:
    assert not due_for_recheck(model())
    assert due_for_recheck(model(status={"phase": "Admitted"}))


# -- EndpointSlices under the model's Service names ----------------------------------------------------------------


def _slice(name: str, service: str, owner_uid: str = "") -> dict[str, Any]:
    refs = [{"kind": "Service", "name": service, "uid": owner_uid, "controller": True}] if owner_uid else []
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service}, "ownerReferences": refs},
        "endpoints": [{"addresses": ["10.0.0.250"]}],
    }


def test_the_slices_its_service_does_not_control_are_removed_each_named_with_its_label_and_namespace() -> None:
    md = model(kind="triton")
    slices = [_slice("fraud-abc", "fraud", "svc-uid"), _slice("raced", "fraud"), _slice("early", "fraud-canary")]
    removals = slice_removals(md, slices, {"fraud": "svc-uid"})
    assert [(r.slice.name, r.slice.service, r.namespace) for r in removals] == [
        ("raced", "fraud", "ml"),
        ("early", "fraud-canary", "ml"),
    ]
    assert removals[0].message().endswith("; removed")
    assert "not removed (HTTP 403 Forbidden), tried again" in removals[0].message("HTTP 403 Forbidden")
    # KServe's Service names carry suffixes only: a slice under "fraud" is not this model's to judge.
    kserve = slice_removals(model(), [_slice("raced", "fraud"), _slice("p", "fraud-predictor")], {})
    assert [r.slice.name for r in kserve] == ["p"]


def test_a_model_being_deleted_removes_no_slice() -> None:
    md = model(kind="triton")
    going = {**md, "metadata": {**md["metadata"], "deletionTimestamp": "2026-11-30T09:00:00Z"}}
    assert slice_removals(going, [_slice("raced", "fraud")], {}) == ()


# -- Services under a KServe model's Service names -----------------------------------------------------------------


def _service(name: str, owner_uid: str = "", **spec: Any) -> dict[str, Any]:
    refs = [{"kind": "InferenceService", "name": "fraud", "uid": owner_uid, "controller": True}] if owner_uid else []
    return {"metadata": {"name": name, "ownerReferences": refs}, "spec": spec}


def _isvc(controller_uid: str = "md-uid") -> dict[str, Any]:
    refs = [{"kind": "ModelDeployment", "name": "fraud", "uid": controller_uid, "controller": True}]
    return {"kind": "InferenceService", "metadata": {"name": "fraud", "uid": "isvc-uid", "ownerReferences": refs}}


def test_the_services_its_inference_service_does_not_control_are_removed_each_named_with_where_it_points() -> None:
    hers = _service("fraud-predictor", type="ExternalName", externalName="model.mallory.example.com")
    kserves = _service("fraud-predictor", "isvc-uid", type="ClusterIP")
    removals = service_removals(model(), [hers], None)  # the race's moment: no InferenceService yet
    assert [(r.service.name, r.namespace, r.inference_service) for r in removals] == [
        ("fraud-predictor", "ml", "fraud")
    ]
    assert "Service ml/fraud-predictor (type ExternalName -> model.mallory.example.com)" in removals[0].message()
    assert removals[0].message().endswith("; removed")
    assert "not removed (HTTP 403 Forbidden), tried again" in removals[0].message("HTTP 403 Forbidden")
    assert service_removals(model(), [kserves], _isvc()) == ()
    assert [r.service.name for r in service_removals(model(), [hers, kserves], _isvc())] == ["fraud-predictor"]
    # An InferenceService this ModelDeployment does not control (a deleted model's, going away) vouches for nothing:
    # its Service is left to the garbage collector only while it names an InferenceService fraud as its controller.
    assert service_removals(model(), [kserves], _isvc("old-md-uid")) == ()
    assert [r.service.name for r in service_removals(model(), [hers], _isvc("old-md-uid"))] == ["fraud-predictor"]


def test_a_triton_model_or_one_being_deleted_removes_no_service() -> None:
    """Triton's Services are the operator's children: one under its names that it does not control is replaced
    whole with the rendering (drift), never removed here."""
    hers = _service("fraud-canary", type="ExternalName", externalName="model.mallory.example.com")
    assert service_removals(model(kind="triton"), [hers], None) == ()
    md = model()
    going = {**md, "metadata": {**md["metadata"], "deletionTimestamp": "2026-11-30T09:00:00Z"}}
    assert service_removals(going, [_service("fraud-predictor")], None) == ()
