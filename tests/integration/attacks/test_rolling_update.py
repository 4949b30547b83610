"""Property 1c: revocation reaches the Pods of a version that a ModelDeployment no longer names.

A ModelDeployment without a gated rollout is updated in place: the operator writes the new version into its Triton
Deployment (or its InferenceService, which KServe writes into its predictor Deployment), and the Deployment
controller's rolling update (the apps/v1 default, and KServe's: 25 % surge, 25 % unavailable, so with one replica
none) keeps the old version's available Pods until the new version's Pods are available. The operator decides only
the version the spec names. So mallory, who switched "fraud" to a second signed version that never becomes ready
(here no kubelet runs it; anywhere else a version she breaks on purpose, a storage URI with no bytes behind it), kept
the first version serving at full scale after the cluster admin revoked its key: nothing decided it any more. Version
one's Pods report Ready as a kubelet would (``_report_ready``). Both tests failed before the fix (version one's
ReplicaSet stayed at one replica, its Pod ran on, and the status said every selecting policy passes).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from devmlops.core.render import ANNOTATION_DIGEST, ANNOTATION_VERIFICATION
from devmlops.harness.stack import DevmlopsStack
from tests.integration.attacks.conftest import (
    SKLEARN_SERVER,
    TRITON,
    as_dict,
    cluster_serving_runtime,
    owned_by,
    serve,
    serving_runtime,
)
from tests.integration.attacks.test_rollout_stable import _set_policy, _try_version_two, _version_two
from tests.integration.support import SignedModel, eventually, md_status
from tests.support.models import make_key


def _runs(template: dict[str, Any], digest: str) -> bool:
    """Whether a pod template (or a Pod) runs the version ``digest``: Triton's carries the digest, KServe's the plan
    the storage initializer verifies by, which names it."""
    annotations = (template.get("metadata") or {}).get("annotations") or {}
    return annotations.get(ANNOTATION_DIGEST) == digest or digest in str(annotations.get(ANNOTATION_VERIFICATION, ""))


def _version_replica_sets(admin: k8s.ApiClient, namespace: str, deployment: dict[str, Any], digest: str) -> list[Any]:
    """The ReplicaSets of the model server's Deployment whose Pods run the version ``digest``."""
    items = [as_dict(rs) for rs in k8s.AppsV1Api(admin).list_namespaced_replica_set(namespace).items]
    return [rs for rs in owned_by(items, deployment) if _runs(rs["spec"]["template"], digest)]


def _serving(admin: k8s.ApiClient, namespace: str, deployment: dict[str, Any], digest: str) -> list[str]:
    """What still runs the version ``digest``: its ReplicaSets with replicas wanted, and their Pods."""
    replica_sets = _version_replica_sets(admin, namespace, deployment, digest)
    found = [
        f"ReplicaSet {rs['metadata']['name']} at {rs['spec'].get('replicas')} replica(s)"
        for rs in replica_sets
        if rs["spec"].get("replicas")
    ]
    pods = [as_dict(p) for p in k8s.CoreV1Api(admin).list_namespaced_pod(namespace).items]
    found += [
        f"Pod {p['metadata']['name']}"
        for rs in replica_sets
        for p in owned_by(pods, rs)
        if not p["metadata"].get("deletionTimestamp")
    ]
    return found


def _report_ready(admin: k8s.ApiClient, namespace: str, deployment: dict[str, Any], digest: str) -> None:
    """Version one serves: its Pods report Ready, as the kubelet would once the verified server answered its probe
    (no kubelet runs here; nothing else is stood in for). The Deployment controller then counts them available, and
    a rolling update keeps them until a new version's Pods are available in their place. Pods the ReplicaSet
    controller has not made yet are reported as they appear (on a loaded machine they came after the first look)."""
    core = k8s.CoreV1Api(admin)
    ready = [{"type": kind, "status": "True"} for kind in ("ContainersReady", "Ready")]

    def available() -> bool:
        pods = [as_dict(p) for p in core.list_namespaced_pod(namespace).items]
        now = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
        for rs in _version_replica_sets(admin, namespace, deployment, digest):
            for pod in owned_by(pods, rs):
                if (pod.get("status") or {}).get("phase") != "Running":
                    conditions = [{**condition, "lastTransitionTime": now} for condition in ready]
                    body = {"status": {"phase": "Running", "conditions": conditions}}
                    core.patch_namespaced_pod_status(pod["metadata"]["name"], namespace, body)
        found = k8s.AppsV1Api(admin).read_namespaced_deployment(deployment["metadata"]["name"], namespace)
        return bool(found.status and found.status.available_replicas)

    eventually(available, timeout=30, what="version one's Pods counted available by the Deployment controller")


def _two_keys(
    admin: k8s.ApiClient, stack: DevmlopsStack, policy: str, attack_model: SignedModel, tmp_path: Path
) -> Any:
    """The policy trusts two release keys and scales a model that no longer passes to zero; returns (key one, key
    two, version two's bundle, version two's digest)."""
    second_key = make_key(tmp_path, "release-2")
    bundle, digest = _version_two(tmp_path, second_key)
    key_one = {"name": "key-0", "key": {"publicKey": attack_model.key.public_pem}}
    key_two = {"name": "key-1", "key": {"publicKey": second_key.public_pem}}
    _set_policy(admin, stack, policy, {"authorities": [key_one, key_two], "onViolation": "scaleToZero"})
    return key_one, key_two, bundle, digest


def _switch_then_revoke(
    admin: k8s.ApiClient,
    stack: DevmlopsStack,
    mallory: k8s.ApiClient,
    namespace: str,
    policy: str,
    deployment: dict[str, Any],
    version_one: str,
    version_two: tuple[dict[str, Any], str, str],
) -> None:
    """Version one runs; mallory switches to version two, the cluster admin revokes key one: nothing of version one
    may run on."""
    key_two, bundle, digest = version_two
    eventually(lambda: _serving(admin, namespace, deployment, version_one), timeout=60, what="version one's Pods")
    _report_ready(admin, namespace, deployment, version_one)
    _try_version_two(mallory, namespace, bundle, digest)
    eventually(
        lambda: _version_replica_sets(admin, namespace, deployment, digest),
        timeout=60,
        what="version two's ReplicaSet (the update begun)",
    )
    _set_policy(admin, stack, policy, {"authorities": [key_two]})  # key one revoked
    deadline = time.monotonic() + 60
    while (left := _serving(admin, namespace, deployment, version_one)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, (
        f"the revoked version one still runs 60s after its key was revoked: {left}; "
        f"status: {md_status(admin, namespace).get('conditions')}"
    )


def test_a_revoked_version_does_not_serve_on_behind_an_update_that_never_becomes_ready(
    admin: k8s.ApiClient,
    stack: DevmlopsStack,
    mallory: k8s.ApiClient,
    enforced_namespace: str,
    attack_model: SignedModel,
    trusted: dict[str, Any],
    tmp_path: Path,
) -> None:
    """The policy trusts two release keys and scales a model that no longer passes to zero. "fraud" serves version
    one (key one) on Triton, no gated rollout; mallory switches it to version two (key two), which never becomes
    ready. The cluster admin revokes key one: no Pod of version one may run on (before: its ReplicaSet kept one
    replica, and the operator, deciding version two, which passes, never looked at it)."""
    namespace, policy = enforced_namespace, trusted["metadata"]["name"]
    _key_one, key_two, bundle, digest = _two_keys(admin, stack, policy, attack_model, tmp_path)
    served = serve(admin, namespace, attack_model, trusted, runtime={"kind": "triton", "image": TRITON})
    deployment = {**served.child, "apiVersion": "apps/v1", "kind": "Deployment"}
    _switch_then_revoke(
        admin, stack, mallory, namespace, policy, deployment, attack_model.digest, (key_two, bundle, digest)
    )


def test_a_revoked_kserve_version_does_not_serve_on_behind_an_update_that_never_becomes_ready(
    admin: k8s.ApiClient,
    stack: DevmlopsStack,
    mallory: k8s.ApiClient,
    enforced_namespace: str,
    attack_model: SignedModel,
    trusted: dict[str, Any],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """The same on KServe: KServe's predictor Deployment rolled from version one to version two by KServe's
    default, and version one's predictor Pods ran on after its key was revoked (needs the real KServe controller)."""
    namespace, policy = enforced_namespace, trusted["metadata"]["name"]
    _key_one, key_two, bundle, digest = _two_keys(admin, stack, policy, attack_model, tmp_path)
    runtime = "atk-sklearn-" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:8]
    with cluster_serving_runtime(admin, serving_runtime(runtime, SKLEARN_SERVER, kind="ClusterServingRuntime")):
        serve(admin, namespace, attack_model, trusted, runtime={"kind": "kserve", "servingRuntime": runtime})
        apps = k8s.AppsV1Api(admin)
        predictor = eventually(
            lambda: next(
                iter(apps.list_namespaced_deployment(namespace, field_selector="metadata.name=fraud-predictor").items),
                None,
            ),
            timeout=60,
            what="KServe's predictor Deployment",
        )
        deployment = {**as_dict(predictor), "apiVersion": "apps/v1", "kind": "Deployment"}
        _switch_then_revoke(
            admin, stack, mallory, namespace, policy, deployment, attack_model.digest, (key_two, bundle, digest)
        )
