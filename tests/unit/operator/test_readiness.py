"""ServingReady from what KServe (or the Deployment controller) reports about a child."""

from __future__ import annotations

from typing import Any

from devmlops.operator.readiness import Readiness, child_readiness

STORAGE = 'fails to reconcile predictor: StorageURI not supported: storageUri, "devmlops+s3://models/fraud"'


def isvc(**status: Any) -> dict[str, Any]:
    return {"kind": "InferenceService", "metadata": {"name": "fraud", "uid": "u1"}, "status": status}


def warning(message: str, when: str, reason: str = "InternalError") -> dict[str, Any]:
    return {"type": "Warning", "reason": reason, "message": message, "lastTimestamp": when}


def test_a_fresh_inference_service_with_no_report_is_waited_for() -> None:
    assert child_readiness(isvc()) == Readiness(
        "Unknown", "WaitingForChild", "waiting for the InferenceService to report Ready"
    )


def test_kserves_ready_condition_is_mirrored() -> None:
    ready = child_readiness(isvc(conditions=[{"type": "Ready", "status": "True", "reason": "PredictorReady"}]))
    assert ready == Readiness("True", "ChildReady", "InferenceService Ready=True: PredictorReady")
    pending = child_readiness(
        isvc(conditions=[{"type": "Ready", "status": "False", "message": "Predictor is not ready"}])
    )
    assert pending == Readiness("False", "ChildNotReady", "InferenceService Ready=False: Predictor is not ready")


def test_a_warning_event_on_an_inference_service_without_conditions_is_kserves_refusal_with_its_reason() -> None:
    events = [
        warning("an older failure", "2026-11-30T10:00:00Z"),
        warning(STORAGE, "2026-11-30T10:00:05Z"),
        {
            "type": "Normal",
            "reason": "Created",
            "message": "later but not a warning",
            "lastTimestamp": "2026-12-01T00:00:00Z",
        },
    ]
    assert child_readiness(isvc(deploymentMode="Standard"), events) == Readiness(
        "False", "InternalError", f"KServe cannot render InferenceService fraud: {STORAGE}"
    )


def test_once_kserve_writes_conditions_they_win_over_old_warning_events() -> None:
    ready = isvc(conditions=[{"type": "Ready", "status": "True", "reason": "PredictorReady"}])
    assert child_readiness(ready, [warning(STORAGE, "2026-11-30T10:00:05Z")]).status == "True"


def test_an_invalid_spec_is_reported_with_kserves_failure_reason_even_over_a_ready_condition() -> None:
    status = {
        "conditions": [{"type": "Ready", "status": "True"}],
        "modelStatus": {
            "transitionStatus": "InvalidSpec",
            "lastFailureInfo": {"reason": "NoSupportingRuntime", "message": "no runtime for model format onnx"},
        },
    }
    assert child_readiness(isvc(**status)) == Readiness(
        "False",
        "NoSupportingRuntime",
        "KServe cannot serve InferenceService fraud (InvalidSpec): no runtime for model format onnx",
    )


def test_a_reason_that_is_no_condition_reason_becomes_a_generic_one() -> None:
    assert child_readiness(isvc(), [warning("x", "2026-11-30T10:00:00Z", reason="not a reason!")]).reason == (
        "KServeFailed"
    )


def test_a_deployment_is_ready_when_every_wanted_replica_is_and_waited_for_until_its_controller_looked() -> None:
    def deployment(wanted: int, **status: Any) -> dict[str, Any]:
        return {"kind": "Deployment", "spec": {"replicas": wanted}, "status": status}

    assert child_readiness(deployment(2)).status == "Unknown"
    assert child_readiness(deployment(2, observedGeneration=1, readyReplicas=1)) == Readiness(
        "False", "ChildNotReady", "Deployment has 1 of 2 replicas ready"
    )
    assert child_readiness(deployment(2, observedGeneration=1, readyReplicas=2)).status == "True"
    assert child_readiness(deployment(0, observedGeneration=1)).status == "False"  # scaled to zero serves nothing
