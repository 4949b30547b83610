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


REFUSAL = (
    "devmlops: NOT serving devmlops+https://store/iris/model.joblib: the fetched model differs from its signature: "
    "model.joblib: got sha256:1f2e..., signed sha256:9a8b..."
)


def predictor_pod(*, current: dict[str, Any] | None = None, last: dict[str, Any] | None = None) -> dict[str, Any]:
    """A predictor Pod whose storage initializer is in ``current`` state after ``last`` (as the kubelet reports)."""
    initializer: dict[str, Any] = {"name": "storage-initializer", "state": current or {"waiting": {}}}
    if last is not None:
        initializer["lastState"] = last
    return {"metadata": {"name": "fraud-predictor-5d9f-x2k"}, "status": {"initContainerStatuses": [initializer]}}


NOT_READY = isvc(
    conditions=[{"type": "Ready", "status": "False", "message": "Deployment does not have minimum availability."}]
)


def test_a_storage_initializer_that_refused_the_model_is_why_the_child_is_not_ready() -> None:
    """KServe keeps saying "minimum availability" (it does not look at the Pods again); the Pod says why."""
    log_tail = f"INFO:kserve.storage: Copying contents of https://store/iris/model.joblib to local\n{REFUSAL}\n"
    crashed = {"terminated": {"exitCode": 1, "reason": "Error", "message": log_tail}}
    for pod in (
        predictor_pod(current=crashed),
        predictor_pod(current={"waiting": {"reason": "CrashLoopBackOff"}}, last=crashed),
    ):
        assert child_readiness(NOT_READY, [], [pod]) == Readiness(
            "False",
            "StorageInitializerFailed",
            "the storage initializer in Pod fraud-predictor-5d9f-x2k exited 1, the model server never started: "
            + REFUSAL,
        )


def test_without_a_refusal_line_the_last_line_of_the_termination_message_is_the_reason() -> None:
    crashed = {"terminated": {"exitCode": 2, "message": "Traceback (most recent call last):\n  ...\nOSError: boom\n"}}
    readiness = child_readiness(NOT_READY, [], [predictor_pod(current=crashed)])
    assert readiness.reason == "StorageInitializerFailed"
    assert readiness.message.endswith("exited 2, the model server never started: OSError: boom")


def test_an_initializer_that_finished_or_still_runs_for_the_first_time_is_no_reason() -> None:
    done = predictor_pod(
        current={"terminated": {"exitCode": 0}}, last={"terminated": {"exitCode": 1, "message": REFUSAL}}
    )
    running = predictor_pod(current={"running": {}})
    for pods in ([done], [running], []):
        assert child_readiness(NOT_READY, [], pods) == Readiness(
            "False", "ChildNotReady", "InferenceService Ready=False: Deployment does not have minimum availability."
        )


def test_a_ready_inference_service_is_ready_whatever_an_old_pod_said() -> None:
    ready = isvc(conditions=[{"type": "Ready", "status": "True", "reason": "PredictorReady"}])
    crashed = predictor_pod(current={"terminated": {"exitCode": 1, "message": REFUSAL}})
    assert child_readiness(ready, [], [crashed]).status == "True"
