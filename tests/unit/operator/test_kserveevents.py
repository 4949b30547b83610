"""Which Warning Events are about a model's InferenceService: only those in its own namespace naming it whole.

Anyone who may write Events in a namespace (the built-in ``edit`` role) writes any involvedObject there, and every
uid is readable; what the operator reads from such an Event becomes the model's ServingReady message (readiness.py).
"""

from __future__ import annotations

from typing import Any

from devmlops.operator.kserveevents import events_about

CHILD = {"kind": "InferenceService", "metadata": {"namespace": "team-a", "name": "fraud", "uid": "u-1"}}


def event(
    namespace: str = "team-a", *, involved_namespace: str = "team-a", name: str = "fraud", uid: str = "u-1"
) -> dict[str, Any]:
    return {
        "metadata": {"namespace": namespace},
        "involvedObject": {"namespace": involved_namespace, "name": name, "uid": uid},
        "type": "Warning",
        "reason": "InternalError",
        "message": "StorageURI not supported",
    }


def test_kserves_warning_on_the_inference_service_is_about_it() -> None:
    assert events_about([event()], CHILD) == [event()]


def test_an_event_in_another_namespace_naming_the_uid_is_not_about_it() -> None:
    """Mallory's Warning in her own namespace, naming team-a's InferenceService by its uid (the API server makes an
    Event's involvedObject namespace its own): it was read as KServe's report on team-a's model."""
    forged: Any = event("mallory", involved_namespace="mallory")
    assert events_about([forged], CHILD) == []


def test_an_event_naming_another_object_or_an_old_one_of_the_same_name_is_not_about_it() -> None:
    assert events_about([event(name="other")], CHILD) == []
    assert events_about([event(uid="u-0")], CHILD) == []  # a deleted InferenceService of the same name
    assert events_about([event(involved_namespace="elsewhere")], CHILD) == []


def test_a_child_without_a_uid_has_no_events() -> None:
    bare = {"kind": "InferenceService", "metadata": {"namespace": "team-a", "name": "fraud"}}
    assert events_about([event(uid="")], bare) == []
