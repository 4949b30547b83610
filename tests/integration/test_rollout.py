"""A gated rollout for real: the API server, its Deployment and ReplicaSet controllers, the webhook, the operator
(its analysis reading a real Prometheus), and the guard of each version running as a process in front of a model
server on loopback (tests/support/standin.py plays the node: no Triton image can be built here).

A good new version is promoted step by step; a version whose model server errors is rolled back to the verified
stable one as soon as the analysis sees it (the time from its first error to the rollback is printed: a figure
issue 17 asks for); a version that fails a gate (signed by a key no policy trusts) never gets a Pod or a request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from devmlops.harness.processes import ManagedProcess
from devmlops.harness.prometheus import Prometheus, ScrapeTarget
from devmlops.harness.stack import DevmlopsStack
from tests.integration.attacks.conftest import TRITON, VERIFIER, admitted, denial_message, wait_until_allowed
from tests.integration.support import (
    GROUP,
    VERSION,
    SignedModel,
    cluster_policy,
    eventually,
    evidence_config_map,
    from_config_map,
    installed_policy,
    model_deployment,
    operator_instead,
    signed_model,
)
from tests.support.modelservers import V2Server
from tests.support.standin import GuardPods, StandInNode

pytestmark = pytest.mark.timeout(600)

STEP_SECONDS = 5
CANARY = {
    "trafficPercent": 20,
    "steps": [20, 50],
    "stepSeconds": STEP_SECONDS,
    "readySeconds": 60,
    "analysis": {"maxErrorRate": 0.05, "minRequests": 20},
}
GUARD = {"rateLimit": {"requestsPerSecond": 1000, "burst": 1000}, "protocol": "v2"}
INFER = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [[5.1, 3.5, 1.4, 0.2]]}]}


@pytest.fixture
def rollout_operator(stack: DevmlopsStack, namespace: str, prometheus: Prometheus) -> Iterator[ManagedProcess]:
    """The operator, reading the analysis's figures from ``prometheus`` (the shared one has none configured)."""
    extra = ("--prometheus-url", prometheus.url)
    with operator_instead(stack, "operator-rollout", namespaces=(namespace,), extra=extra) as process:
        yield process


class Load:
    """Inference requests to the stable version's guard (the model's Service) at about ``rate`` per second."""

    def __init__(self, pods: GuardPods, rate: float = 50.0) -> None:
        self._pods, self._pause = pods, 1.0 / rate
        self.codes: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        with httpx.Client(timeout=5) as client:
            deadline = time.monotonic() + 400  # bounded even if a test forgets to stop it
            while not self._stop.wait(self._pause) and time.monotonic() < deadline:
                url = self._pods.url("fraud")
                if url is None:
                    continue
                try:
                    code = client.post(url + "/v2/models/m/infer", json=INFER).status_code
                except httpx.HTTPError:
                    code = 0  # a guard restarting for a new step
                self.codes[code] = self.codes.get(code, 0) + 1


def _rollout(admin: k8s.ApiClient, namespace: str) -> dict[str, Any]:
    md = k8s.CustomObjectsApi(admin).get_namespaced_custom_object(
        GROUP, VERSION, namespace, "modeldeployments", "fraud"
    )
    return dict((md.get("status") or {}).get("rollout") or {})


def _until_phase(admin: k8s.ApiClient, namespace: str, phase: str, *, timeout: float, what: str) -> dict[str, Any]:
    """The rollout status once it reaches ``phase``; the test fails with the last status seen after ``timeout``."""
    deadline = time.monotonic() + timeout
    rollout: dict[str, Any] = {}
    while time.monotonic() < deadline:
        rollout = _rollout(admin, namespace)
        if rollout.get("phase") == phase:
            return rollout
        time.sleep(0.2)
    shown = {k: v for k, v in rollout.items() if k != "stableSpec"}
    pytest.fail(f"{what} did not happen within {timeout:.0f}s; the rollout status: {shown}")


def _deployments(admin: k8s.ApiClient, namespace: str) -> dict[str, str]:
    """Deployment name: the digest it serves."""
    items = k8s.AppsV1Api(admin).list_namespaced_deployment(namespace).items
    return {d.metadata.name: (d.metadata.annotations or {}).get("devmlops.io/model-digest", "") for d in items}


def _events(admin: k8s.ApiClient, namespace: str) -> list[str]:
    return [e.reason for e in k8s.CoreV1Api(admin).list_namespaced_event(namespace).items]


def _new_version(admin: k8s.ApiClient, namespace: str, model: SignedModel, key: str) -> None:
    patch = {"spec": {"model": {"digest": model.digest}, "signature": from_config_map("evidence", key)}}
    admitted(
        k8s.CustomObjectsApi(admin).patch_namespaced_custom_object,
        GROUP, VERSION, namespace, "modeldeployments", "fraud", patch,
    )  # fmt: skip


def test_a_good_version_is_promoted_a_failing_one_rolled_back_and_an_untrusted_one_never_served(
    admin: k8s.ApiClient,
    stack: DevmlopsStack,
    namespace: str,
    prometheus: Prometheus,
    rollout_operator: ManagedProcess,
    tmp_path: Path,
) -> None:
    v1, v2, v3, untrusted = (
        signed_model(tmp_path / version, "fraud", {"weights.bin": version.encode() * 64, "config.json": b"{}"})
        for version in ("v1", "v2", "v3", "untrusted")
    )
    bundles = {"v1.sig": v1.bundle, "v2.sig": v2.bundle, "v3.sig": v3.bundle, "untrusted.sig": untrusted.bundle}
    k8s.CoreV1Api(admin).create_namespaced_config_map(namespace, evidence_config_map("evidence", namespace, bundles))
    keys = (v1.key.public_pem, v2.key.public_pem, v3.key.public_pem)
    policy = cluster_policy(f"rollout-{namespace}"[:63], namespace, *keys, allow={"images": [TRITON, VERIFIER]})
    stable_server, good_server, bad_server = V2Server(), V2Server(), V2Server(fail_every=2)
    doc = model_deployment(
        "fraud",
        v1.digest,
        signature=from_config_map("evidence", "v1.sig"),
        runtime={"kind": "triton", "image": TRITON, "replicas": 1},
        guard=GUARD,
        rollout={"strategy": "canary", "canary": CANARY},
    )
    doc["metadata"]["labels"] = {"devmlops.io/eu-ai-act-risk": "minimal"}
    api = k8s.CustomObjectsApi(admin)

    def targets(addresses: list[str]) -> None:
        prometheus.set_targets([ScrapeTarget(a, {"namespace": namespace}) for a in addresses])

    upstreams = {"fraud": stable_server.url, "fraud-canary": good_server.url}
    with (
        stable_server,
        good_server,
        bad_server,
        installed_policy(admin, stack, policy),
        StandInNode(admin, namespace),
        GuardPods(admin, namespace, upstreams, tmp_path, targets) as pods,
    ):
        create = api.create_namespaced_custom_object
        wait_until_allowed(
            lambda: create(GROUP, VERSION, namespace, "modeldeployments", doc, dry_run="All"), what="version 1"
        )
        admitted(create, GROUP, VERSION, namespace, "modeldeployments", doc)
        _until_phase(admin, namespace, "Stable", timeout=60, what="v1 stable")
        eventually(lambda: pods.url("fraud"), timeout=60, what="v1's guard")
        with Load(pods) as load:
            # A good version: tried at 20 %, then 50 %, then promoted; the canary's children are removed.
            _new_version(admin, namespace, v2, "v2.sig")
            _until_phase(admin, namespace, "Promoted", timeout=120, what="v2 promoted")
            rollout = _rollout(admin, namespace)
            assert rollout["stableDigest"] == v2.digest
            assert all(check["passed"] for check in rollout["analysis"])
            assert eventually(
                lambda: _deployments(admin, namespace) == {"fraud": v2.digest}, timeout=30, what="canary removed"
            )
            assert good_server.served > 0, "the new version got its share of the traffic before promotion"
            eventually(
                lambda: {"RolloutStarted", "RolloutStep", "Promoted"} <= set(_events(admin, namespace)),
                timeout=45,  # kopf posts Events from a queue: seconds late on a loaded machine
                what="the rollout's Events",
            )

            # A version whose model server errors: rolled back at the first analysis that sees it.
            pods.upstreams["fraud-canary"] = bad_server.url
            pods.upstreams["fraud"] = good_server.url  # v2 is the stable version now
            _new_version(admin, namespace, v3, "v3.sig")
            eventually(lambda: bad_server.served > 0, timeout=90, what="v3 receiving its share")
            first_error = time.monotonic()
            _until_phase(admin, namespace, "RolledBack", timeout=60, what="v3 rolled back")
            seconds = time.monotonic() - first_error
            rollout = _rollout(admin, namespace)
            assert "errorRate" in rollout["message"]
            assert rollout["stableDigest"] == v2.digest
            print(f"\nfrom the bad version's first errors to its rollback: {seconds:.1f} s")
            eventually(
                lambda: _deployments(admin, namespace) == {"fraud": v2.digest}, timeout=30, what="v3's children gone"
            )
            eventually(lambda: not pods.splits("fraud"), timeout=30, what="the stable guard without its split")
            served_then = bad_server.served
            time.sleep(3)
            assert bad_server.served == served_then, "the rolled-back version still gets requests"
            eventually(lambda: "RolledBack" in _events(admin, namespace), timeout=45, what="the RolledBack Event")

            # A version that fails a gate: its spec is never admitted, so nothing of it ever runs.
            patch = {
                "spec": {
                    "model": {"digest": untrusted.digest},
                    "signature": from_config_map("evidence", "untrusted.sig"),
                }
            }
            with pytest.raises(ApiException) as caught:
                api.patch_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", "fraud", patch)
            assert caught.value.status == 403, denial_message(caught.value)
            time.sleep(STEP_SECONDS)
            assert _deployments(admin, namespace) == {"fraud": v2.digest}
        assert load.codes.get(200, 0) > 100
    spec = cast(
        dict[str, Any], api.get_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", "fraud")
    )
    assert spec["spec"]["model"]["digest"] == v3.digest  # what was asked stays asked; the status says it was refused
