"""Attack review of the operator's inputs: Events an editor writes in her own namespace.

The built-in ``edit`` role lets a namespace editor create Events there (core and events.k8s.io) with any
involvedObject, reason and message; the API server only makes the involvedObject's namespace the Event's own. Every
uid is readable. The operator reads KServe's Warning Events on an InferenceService that has no Ready condition
(KServe could not render it) as the reason ServingReady is False (readiness.py), and it matched them by uid alone:
mallory's Warning in her own namespace, naming another team's InferenceService by its uid, became that model's
ServingReady reason and message, her words under "KServe cannot render InferenceService". Status only: nothing is
served, scaled or promoted on it (reconcile.py reads no gate from ServingReady).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s

from devmlops.harness.controlplane import ControlPlane
from tests.integration.attacks.conftest import ALLOWED_IMAGES as IMAGES
from tests.integration.attacks.conftest import (
    ATTACKER,
    Served,
    _namespace_name,
    attack_namespace,
    bind_role,
    policy_name,
    serve,
    user_subject,
)
from tests.integration.support import DevmlopsStack, SignedModel, eventually, md_status, trusting

MARK = "mallory-was-here: the model is revoked, call +1-555-0100"


def serving_ready(admin: k8s.ApiClient, namespace: str) -> dict[str, Any]:
    return next((c for c in md_status(admin, namespace).get("conditions") or [] if c["type"] == "ServingReady"), {})


@pytest.fixture
def unrendered(
    admin: k8s.ApiClient,
    control_plane: ControlPlane,
    stack: DevmlopsStack,
    attack_model: SignedModel,
    request: pytest.FixtureRequest,
) -> Iterator[Served]:
    """Team A's KServe model in a namespace long enough that KServe cannot render its InferenceService (predictor
    host name over 63 characters): ServingReady then reads KServe's Warning Events."""
    name = _namespace_name(request, "team-a") + "-unrendered-kserve"  # 59 characters: over 47 is enough
    assert len(name) > 47, name
    with (
        attack_namespace(admin, control_plane, name) as namespace,
        trusting(
            admin, stack, namespace, attack_model, policy=policy_name(name), allow={"images": list(IMAGES)}
        ) as policy,
    ):
        served = serve(admin, namespace, attack_model, policy)
        eventually(
            lambda: serving_ready(admin, namespace).get("reason") == "InternalError",
            what="ServingReady=False with KServe's own InternalError",
        )
        yield served


@pytest.mark.parametrize("api", ["core", "events.k8s.io"])
def test_an_event_in_her_namespace_naming_another_teams_inference_service_is_not_its_report(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, plain_namespace: str, unrendered: Served, api: str
) -> None:
    rbac = k8s.RbacAuthorizationV1Api(admin)
    # What `edit` grants beside the threat model's Role (Kubernetes 1.36 bootstrap policy): Events, in both groups.
    rules = [{"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create"]}]
    role: Any = {"metadata": {"name": "events"}, "rules": rules}
    rbac.create_namespaced_role(plain_namespace, role)
    bind_role(rbac, plain_namespace, "events", "events", user_subject(ATTACKER))
    auth = k8s.AuthorizationV1Api(mallory)
    for group in ("", "events.k8s.io"):  # the authorizer follows RoleBindings asynchronously
        attributes = {"namespace": plain_namespace, "verb": "create", "group": group, "resource": "events"}
        review: Any = {"spec": {"resourceAttributes": attributes}}
        eventually(
            lambda review=review: getattr(auth.create_self_subject_access_review(review).status, "allowed", False),
            timeout=15,
            what=f"mallory's Role for Events ({group or 'core'}) in {plain_namespace}",
        )
    uid = unrendered.child["metadata"]["uid"]
    forged: Any = {
        "metadata": {"generateName": "fraud."},
        "involvedObject": {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "name": "fraud",
            "namespace": plain_namespace,
            "uid": uid,
        },
        "type": "Warning",
        "reason": "Forged",
        "message": MARK,
        "source": {"component": "v1beta1Controllers"},
        "firstTimestamp": "2099-01-01T00:00:00Z",
        "lastTimestamp": "2099-01-01T00:00:00Z",
        "count": 1,
    }
    if api == "core":
        core = k8s.CoreV1Api(mallory)
        core.create_namespaced_event(plain_namespace, forged)
    else:
        modern: Any = {
            "metadata": {"generateName": "fraud-"},
            "regarding": forged["involvedObject"],
            "type": "Warning",
            "reason": "Forged",
            "action": "Reconcile",
            "note": MARK,
            "eventTime": dt.datetime(2099, 1, 1, microsecond=1, tzinfo=dt.UTC),  # a MicroTime: microseconds
            "reportingController": "v1beta1Controllers",
            "reportingInstance": "kserve-controller-manager",
        }
        events = k8s.EventsV1Api(mallory)
        events.create_namespaced_event(plain_namespace, modern)
    # A Warning on team A's own InferenceService makes the operator look again (kserveevents.py): its reconcile
    # after hers has read every Event there is.
    kserve: Any = {**forged, "metadata": {"generateName": "fraud."}}
    kserve["involvedObject"] = {**forged["involvedObject"], "namespace": unrendered.namespace}
    kserve["reason"], kserve["message"], kserve["lastTimestamp"] = "InternalError", "a nudge", "2000-01-01T00:00:00Z"
    k8s.CoreV1Api(admin).create_namespaced_event(unrendered.namespace, kserve)
    time.sleep(10)  # the reconcile the nudge triggers has read both Events (the operator's watch of Events)
    said = serving_ready(admin, unrendered.namespace)
    assert MARK not in said.get("message", ""), f"mallory's Event became team A's ServingReady: {said}"
    assert said.get("reason") != "Forged", said
