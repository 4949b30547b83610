from __future__ import annotations

from typing import Any

from devmlops.core.decision import decide
from devmlops.core.model import Decision, GateResult
from devmlops.core.review import AdmissionRequest, GroupVersionKind

MD = GroupVersionKind("devmlops.io", "v1alpha1", "ModelDeployment")


def request(obj: dict[str, Any] | None, *, operation: str = "CREATE", kind: GroupVersionKind = MD) -> AdmissionRequest:
    return AdmissionRequest(
        uid="u",
        kind=kind,
        operation=operation,  # type: ignore[arg-type]
        namespace="ns",
        name="m",
        username="alice",
        groups=(),
        object=obj,
        old_object=None,
    )


def model_deployment(**spec: Any) -> dict[str, Any]:
    return {"spec": {"model": {"name": "m"}, "runtime": {"kind": "kserve"}, **spec}}


def test_a_model_deployment_without_a_signature_is_denied_with_a_fix_hint() -> None:
    decision = decide(request(model_deployment()))
    assert not decision.allowed
    assert decision.message.startswith("denied by devmlops: signature gate: spec.signature is missing")
    assert "devmlops sign" in decision.message


def test_a_model_deployment_naming_a_signature_bundle_passes_the_presence_check() -> None:
    decision = decide(request(model_deployment(signature={"configMapKeyRef": {"name": "s", "key": "k"}})))
    assert decision.allowed
    assert [r.outcome for r in decision.results] == ["pass"]


def test_an_empty_signature_object_is_not_a_signature() -> None:
    assert not decide(request(model_deployment(signature={}))).allowed
    assert not decide(request(model_deployment(signature={"inline": ""}))).allowed


def test_deletion_is_always_allowed() -> None:
    assert decide(request(None, operation="DELETE")).allowed


def test_an_object_without_spec_fails_closed() -> None:
    decision = decide(request({"metadata": {}}))
    assert not decision.allowed
    assert decision.results[0].outcome == "error"


def test_a_kind_devmlops_has_no_rule_for_is_denied_not_admitted() -> None:
    decision = decide(request({"spec": {}}, kind=GroupVersionKind("", "v1", "ConfigMap")))
    assert not decision.allowed
    assert "ConfigMap.core" in decision.message


def test_a_decision_without_results_never_admits() -> None:
    assert not Decision(()).allowed
    assert "never an admission" in Decision(()).message


def test_an_error_in_warn_mode_warns_and_an_error_in_enforce_mode_denies() -> None:
    warn = GateResult(gate="g", outcome="error", reason="r", mode="warn")
    enforce = GateResult(gate="g", outcome="error", reason="r")
    assert Decision((warn,)).allowed
    assert not Decision((warn, enforce)).allowed
    assert Decision((warn, enforce)).warnings == ("g gate: r",)
