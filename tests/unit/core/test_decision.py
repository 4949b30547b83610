from __future__ import annotations

import dataclasses
from typing import Any

from devmlops.core.decision import decide
from devmlops.core.evidence import Evidence
from devmlops.core.model import Decision, GateResult
from devmlops.core.policy import PolicySet
from devmlops.core.review import AdmissionRequest, GroupVersionKind
from tests.unit.core.fakes import FakeVerifier

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


def run(req: AdmissionRequest) -> Decision:
    return decide(req, PolicySet(), Evidence(), FakeVerifier())


def test_deletion_is_always_allowed() -> None:
    assert run(request(None, operation="DELETE")).allowed


def update(old: dict[str, Any], new: dict[str, Any], kind: GroupVersionKind = MD) -> AdmissionRequest:
    return dataclasses.replace(request(new, operation="UPDATE", kind=kind), old_object=old)


SPEC = {"model": {"name": "m"}, "runtime": {"kind": "kserve"}}
DELETING = {"deletionTimestamp": "2026-11-26T09:00:00Z"}
ISVC = GroupVersionKind("serving.kserve.io", "v1beta1", "InferenceService")


def test_removing_a_finalizer_from_an_object_being_deleted_is_allowed_although_no_policy_admits_it() -> None:
    for kind in (MD, ISVC):
        old = {"metadata": {**DELETING, "finalizers": ["kserve", "other"], "resourceVersion": "7"}, "spec": SPEC}
        new = {"metadata": {**DELETING, "finalizers": ["other"], "resourceVersion": "8"}, "spec": SPEC}
        decision = run(update(old, new, kind))
        assert decision.allowed, kind
        assert "being deleted" in decision.results[0].reason


def test_anything_else_about_an_object_being_deleted_is_decided_in_full() -> None:
    """Each of these is denied because no policy admits the model: the deletion rule did not let it through."""
    finalizing = {**DELETING, "finalizers": ["kserve"]}
    changed = {"model": {"name": "other"}, "runtime": {"kind": "kserve"}}
    cases = {
        "spec changed": ({"metadata": finalizing, "spec": SPEC}, {"metadata": DELETING, "spec": changed}),
        "label changed": (
            {"metadata": finalizing, "spec": SPEC},
            {"metadata": {**DELETING, "labels": {"devmlops.io/eu-ai-act-risk": "minimal"}}, "spec": SPEC},
        ),
        "annotation only": (
            {"metadata": finalizing, "spec": SPEC},
            {"metadata": {**finalizing, "annotations": {"devmlops.io/approved-by": "mallory"}}, "spec": SPEC},
        ),
        "finalizer added": (
            {"metadata": finalizing, "spec": SPEC},
            {"metadata": {**DELETING, "finalizers": ["kserve", "x"]}, "spec": SPEC},
        ),
        "the stored object decided again": (
            {"metadata": finalizing, "spec": SPEC},
            {"metadata": finalizing, "spec": SPEC},
        ),
        "malformed finalizers": (
            {"metadata": {**DELETING, "finalizers": [{"a": 1}, "x"]}, "spec": SPEC},
            {"metadata": {**DELETING, "finalizers": [{"a": 1}]}, "spec": SPEC},
        ),
        "not being deleted": ({"metadata": {"finalizers": ["x"]}, "spec": SPEC}, {"metadata": {}, "spec": SPEC}),
    }
    for case, (old, new) in cases.items():
        assert not run(update(old, new)).allowed, case


def test_an_object_without_spec_fails_closed_naming_the_field() -> None:
    decision = run(request({"metadata": {}}))
    assert not decision.allowed
    assert decision.results[0].gate == "manifest"
    assert "spec: missing" in decision.message


def test_a_kind_devmlops_has_no_rule_for_is_denied_not_admitted() -> None:
    decision = run(request({"spec": {}}, kind=GroupVersionKind("", "v1", "ConfigMap")))
    assert not decision.allowed
    assert "ConfigMap.core" in decision.message


def test_with_no_policies_at_all_a_model_is_denied_by_default() -> None:
    model = {"name": "m", "uri": "s3://models/m", "digest": "sha256:" + "ab" * 32}
    decision = run(request({"spec": {"model": model, "runtime": {"kind": "kserve"}}}))
    assert not decision.allowed
    assert "nothing matched means deny" in decision.message


def test_a_decision_without_results_never_admits() -> None:
    assert not Decision(()).allowed
    assert "never an admission" in Decision(()).message


def test_an_error_in_warn_mode_warns_and_an_error_in_enforce_mode_denies() -> None:
    warn = GateResult(gate="g", outcome="error", reason="r", mode="warn")
    enforce = GateResult(gate="g", outcome="error", reason="r")
    assert Decision((warn,)).allowed
    assert not Decision((warn, enforce)).allowed
    assert Decision((warn, enforce)).warnings == ("g gate: r",)
