"""Whether a ModelDeployment's child serves, read from what its controller reports (no I/O here).

KServe reports three ways. A rendered InferenceService gets status conditions (``Ready`` among them). A spec it cannot
serve (no runtime for the model format, say) gets ``status.modelStatus`` with ``transitionStatus: InvalidSpec`` and a
``lastFailureInfo``. And when it cannot render the InferenceService at all (no ClusterStorageContainer claims the
storage URI: "StorageURI not supported"; a predictor host name over 63 characters), its controller only posts a
Warning Event on the InferenceService (reason ``InternalError``) and retries, leaving no condition: the
ModelDeployment then says so instead of waiting for a Ready that never comes.

When devmlops's storage initializer refuses a model (bytes that differ from the signature, a signature that no longer
verifies) the Pod never serves, but KServe (v0.16) looks at the Pods only when something it owns changes, so for
minutes its report stays "Deployment does not have minimum availability". The predictor's Pods then say why: the
initializer's exit and its termination message (KServe sets FallbackToLogsOnError, so its last log lines).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from devmlops.operator.conditions import ConditionStatus

__all__ = ["INITIALIZER", "Readiness", "child_readiness", "initializer_failure", "waiting_for"]

_FAILED_TRANSITIONS = ("InvalidSpec", "BlockedByFailedLoad")
INITIALIZER = (
    "storage-initializer"  # the init container KServe's pod mutator makes (devmlops's ClusterStorageContainer)
)
_REFUSAL = "NOT serving"  # what `devmlops storage-initializer` prints when it refuses a model (cli.py)
_REASON = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")  # metav1.Condition's reason


@dataclass(frozen=True, slots=True)
class Readiness:
    """The ServingReady condition a child's report makes."""

    status: ConditionStatus
    reason: str
    message: str


def waiting_for(kind: str) -> Readiness:
    return Readiness("Unknown", "WaitingForChild", f"waiting for the {kind} to report Ready")


def _reason(found: Any, fallback: str) -> str:
    text = str(found or "")
    return text if _REASON.match(text) else fallback


def _latest(events: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    def when(event: Mapping[str, Any]) -> str:
        series = event.get("series") or {}
        return str(event.get("lastTimestamp") or series.get("lastObservedTime") or event.get("eventTime") or "")

    warnings = [e for e in events if e.get("type") == "Warning"]
    return max(warnings, key=when) if warnings else None


def initializer_failure(pods: Sequence[Mapping[str, Any]]) -> Readiness | None:
    """The storage initializer of one of ``pods`` (an InferenceService's predictor Pods) exited non-zero, now or on
    its last run: ServingReady False with its own words (the line where devmlops says why it does not serve, else
    the last line of its termination message)."""
    for pod in pods:
        name = (pod.get("metadata") or {}).get("name")
        for container in (pod.get("status") or {}).get("initContainerStatuses") or []:
            if container.get("name") != INITIALIZER:
                continue
            current = (container.get("state") or {}).get("terminated")
            if current is not None and not current.get("exitCode"):
                continue  # it finished: the model verified (an earlier failed run is history)
            for state in (current, (container.get("lastState") or {}).get("terminated")):
                if not state or not state.get("exitCode"):
                    continue
                lines = [line.strip() for line in str(state.get("message") or "").splitlines() if line.strip()]
                said = next((line for line in reversed(lines) if _REFUSAL in line), lines[-1] if lines else "")
                said = said if len(said) <= 800 else said[:797] + "..."
                return Readiness(
                    "False",
                    "StorageInitializerFailed",
                    f"the storage initializer in Pod {name} exited {state['exitCode']}, the model server never "
                    f"started: {said or state.get('reason') or 'no message'}",
                )
    return None


def _inference_service(
    child: Mapping[str, Any], warnings: Sequence[Mapping[str, Any]], pods: Sequence[Mapping[str, Any]] = ()
) -> Readiness:
    name = (child.get("metadata") or {}).get("name")
    status = child.get("status") or {}
    model_status = status.get("modelStatus") or {}
    failure = model_status.get("lastFailureInfo") or {}
    transition = model_status.get("transitionStatus")
    if transition in _FAILED_TRANSITIONS and failure:
        return Readiness(
            "False",
            _reason(failure.get("reason"), "KServeFailed"),
            f"KServe cannot serve InferenceService {name} ({transition}): {failure.get('message') or ''}".strip(),
        )
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    if ready is not None:
        value = ready.get("status")
        message = f"InferenceService Ready={value}: {ready.get('message') or ready.get('reason') or ''}".strip()
        if value == "True":
            return Readiness("True", "ChildReady", message)
        return initializer_failure(pods) or Readiness("False", "ChildNotReady", message)
    event = _latest(warnings)
    if event is not None:
        return Readiness(
            "False",
            _reason(event.get("reason"), "KServeFailed"),
            f"KServe cannot render InferenceService {name}: {event.get('message') or ''}".strip(),
        )
    return waiting_for("InferenceService")


def _deployment(child: Mapping[str, Any]) -> Readiness:
    if "observedGeneration" not in (child.get("status") or {}):
        return waiting_for("Deployment")  # its controller has not looked at it yet
    wanted = int((child.get("spec") or {}).get("replicas") or 0)
    ready = int((child.get("status") or {}).get("readyReplicas") or 0)
    message = f"Deployment has {ready} of {wanted} replicas ready"
    if wanted > 0 and ready >= wanted:
        return Readiness("True", "ChildReady", message)
    return Readiness("False", "ChildNotReady", message)


def child_readiness(
    child: Mapping[str, Any], warnings: Sequence[Mapping[str, Any]] = (), pods: Sequence[Mapping[str, Any]] = ()
) -> Readiness:
    """ServingReady for ``child`` as stored, with the Warning Events its controller posted about it (KServe's) and,
    for an InferenceService that is not Ready, its predictor's Pods."""
    kind = str(child.get("kind") or "")
    if kind == "InferenceService":
        return _inference_service(child, warnings, pods)
    if kind == "Deployment":
        return _deployment(child)
    return waiting_for(kind or "child")
