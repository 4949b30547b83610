"""The cluster the API-server benchmarks share: control plane, webhook, OPA and operator, a namespace "bench"
with the signature in a labelled ConfigMap, and a ClusterModelPolicy trusting its key."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client as k8s

from devmlops.adapters.kube import api_client
from devmlops.harness.controlplane import ControlPlane, find_tools
from devmlops.harness.kserve import install_kserve_crds
from devmlops.harness.stack import DevmlopsStack
from tests.integration.support import SignedModel, cluster_policy, evidence_config_map, signed_model

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "bench"


@dataclass(frozen=True)
class BenchCluster:
    cp: ControlPlane
    stack: DevmlopsStack
    admin: k8s.ApiClient
    model: SignedModel


@contextmanager
def bench_cluster() -> Iterator[BenchCluster]:
    tools = find_tools(Path(os.environ["DEVMLOPS_TOOLS_DIR"]))
    # As measured before KServe and the controller manager joined the local stack: the benchmarks time devmlops,
    # and 1,000 models rendered into Deployments and Pods would time KServe and the controllers too. Only KServe's
    # CRDs are installed (before the operator starts, which watches InferenceServices).
    with (
        tempfile.TemporaryDirectory() as tmp,
        ControlPlane(bin_dir=tools, crd_paths=[ROOT / "crds"], controller_manager=False) as cp,
    ):
        install_kserve_crds(cp)
        with DevmlopsStack(cp, policies=ROOT / "policies") as stack, api_client(cp.kubeconfig()) as admin:
            yield _prepared(cp, stack, admin, Path(tmp))


def _prepared(cp: ControlPlane, stack: DevmlopsStack, admin: k8s.ApiClient, tmp: Path) -> BenchCluster:
    """The namespace, the signed model's evidence and the policy trusting its key, the webhook knowing it."""
    model = signed_model(tmp, "fraud")
    core = k8s.CoreV1Api(admin)
    core.create_namespace({"metadata": {"name": NAMESPACE}})
    core.create_namespaced_config_map(
        NAMESPACE, evidence_config_map("evidence", NAMESPACE, {"model.sig": model.bundle})
    )
    k8s.CustomObjectsApi(admin).create_cluster_custom_object(
        "devmlops.io", "v1alpha1", "clustermodelpolicies", cluster_policy("bench", NAMESPACE, model.key.public_pem)
    )
    stack.wait_for_policies(present=["bench"])
    return BenchCluster(cp, stack, admin, model)
