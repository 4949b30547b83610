"""Property 1 at apply time: every workload kind (Deployment, StatefulSet, ReplicaSet, DaemonSet, Job, CronJob) in
a namespace under enforcement is judged on its pod template as its Pods would be: a chain child written by the
identity expected for it, or a cluster admin's exemption. So a namespace editor gets the denial from ``kubectl
apply``, whatever the workload is called, labelled or says it is owned by."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.integration.attacks.conftest import (
    BENIGN,
    LOG_SHIPPER,
    ROGUE,
    TOOLBOX,
    TRITON,
    KServePods,
    Served,
    admitted,
    as_dict,
    create_workload,
    denied,
    exemption,
    installed_exemption,
    owned_by,
    owner_ref,
    pod_spec,
    workload,
)
from tests.integration.support import eventually

KINDS = ["Deployment", "StatefulSet", "ReplicaSet", "DaemonSet", "Job", "CronJob"]


def shipper_exemption(namespace: str) -> dict[str, Any]:
    return exemption(f"atk-{namespace}", [namespace], images=[TOOLBOX, LOG_SHIPPER], service_accounts=["shipper"])


def copy_of(deployment: dict[str, Any], name: str, owners: list[dict[str, Any]]) -> Any:
    """``deployment``'s spec under another name, claiming ``owners``."""
    metadata = deployment["metadata"]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "labels": dict(metadata.get("labels") or {}),
            "annotations": {k: v for k, v in (metadata.get("annotations") or {}).items() if k.startswith("devmlops")},
            "ownerReferences": owners,
        },
        "spec": {
            "replicas": 1,
            "selector": deployment["spec"]["selector"],
            "template": deployment["spec"]["template"],
        },
    }


def replica_set_of(deployment: dict[str, Any], name: str) -> Any:
    """A ReplicaSet as the deployment controller would write it for ``deployment``, owner uid included."""
    template = {**deployment["spec"]["template"]}
    labels = {**(template.get("metadata") or {}).get("labels", {}), "pod-template-hash": "5d8f7c9b6"}
    template["metadata"] = {**(template.get("metadata") or {}), "labels": labels}
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": name, "labels": labels, "ownerReferences": [owner_ref(deployment)]},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": template},
    }


# -- no chain, no exemption: denied at apply time, for every kind ------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_workload_running_a_model_server_without_the_model_server_label_is_denied(
    mallory: k8s.ApiClient, enforced_namespace: str, kind: str
) -> None:
    body = workload(kind, "server", pod_spec(TRITON))
    denied(create_workload, mallory, enforced_namespace, body)


@pytest.mark.parametrize("kind", KINDS)
def test_a_workload_running_a_harmless_looking_image_is_denied(
    mallory: k8s.ApiClient, enforced_namespace: str, kind: str
) -> None:
    """Image names never decide safety: "log-shipper" is whatever its author says it is."""
    body = workload(kind, "log-shipper", pod_spec(BENIGN))
    denied(create_workload, mallory, enforced_namespace, body)


def test_a_deployment_that_copies_the_operators_triton_deployment_and_its_owner_uid_is_denied(
    mallory: k8s.ApiClient, served_triton: Served
) -> None:
    """Same spec, same labels and annotations, same ModelDeployment uid: but mallory, not the operator, wrote it."""
    body = copy_of(served_triton.child, "fraud-2", [owner_ref(served_triton.model_deployment)])
    denied(k8s.AppsV1Api(mallory).create_namespaced_deployment, served_triton.namespace, body)


def test_a_replica_set_that_claims_the_operators_triton_deployment_as_owner_is_denied(
    mallory: k8s.ApiClient, served_triton: Served
) -> None:
    body = replica_set_of(served_triton.child, "fraud-5d8f7c9b6")
    denied(k8s.AppsV1Api(mallory).create_namespaced_replica_set, served_triton.namespace, body)


def test_a_replica_set_that_claims_the_operators_deployment_with_one_image_changed_is_denied(
    mallory: k8s.ApiClient, served_triton: Served
) -> None:
    body = replica_set_of(served_triton.child, "fraud-7f6d5c4b3")
    body["spec"]["template"]["spec"]["containers"][0]["image"] = ROGUE
    denied(k8s.AppsV1Api(mallory).create_namespaced_replica_set, served_triton.namespace, body)


def test_a_stateful_set_that_claims_the_model_deployment_as_owner_is_denied(
    mallory: k8s.ApiClient, served_triton: Served
) -> None:
    body = workload("StatefulSet", "fraud-sts", served_triton.child["spec"]["template"]["spec"])
    body["metadata"]["ownerReferences"] = [owner_ref(served_triton.model_deployment)]
    denied(k8s.AppsV1Api(mallory).create_namespaced_stateful_set, served_triton.namespace, body)


def test_a_job_dressed_as_the_child_of_an_exempt_cron_job_is_denied(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, enforced_namespace: str
) -> None:
    """The CronJob is the platform team's and exempt; a Job that names it as controller runs what the Job says."""
    with installed_exemption(admin, shipper_exemption(enforced_namespace)):
        cron = workload("CronJob", "rotate-logs", pod_spec(TOOLBOX, service_account="shipper"))
        stored = as_dict(admitted(create_workload, admin, enforced_namespace, cron))
        stored.update(apiVersion="batch/v1", kind="CronJob")
        job = workload("Job", "rotate-logs-29000000", pod_spec(TRITON, service_account="shipper"))
        job["metadata"]["ownerReferences"] = [owner_ref(stored)]
        job["metadata"]["labels"] = {"batch.kubernetes.io/job-name": "rotate-logs-29000000"}
        job["metadata"]["annotations"] = {"batch.kubernetes.io/cronjob-scheduled-timestamp": "2026-11-30T04:00:00Z"}
        denied(create_workload, mallory, enforced_namespace, job)


def test_a_job_that_names_a_cron_job_that_does_not_exist_is_denied(
    mallory: k8s.ApiClient, enforced_namespace: str
) -> None:
    job = workload("Job", "nightly-29000000", pod_spec(BENIGN))
    job["metadata"]["ownerReferences"] = [
        {"apiVersion": "batch/v1", "kind": "CronJob", "name": "nightly", "uid": str(uuid.uuid4()), "controller": True}
    ]
    denied(create_workload, mallory, enforced_namespace, job)


def test_a_workload_with_the_exempt_images_but_another_service_account_is_denied(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, enforced_namespace: str
) -> None:
    with installed_exemption(admin, shipper_exemption(enforced_namespace)):
        body = workload("Deployment", "shipper", pod_spec(TOOLBOX, service_account="ci-deployer"))
        denied(create_workload, mallory, enforced_namespace, body)


def test_adding_an_unlisted_container_to_an_exempt_deployment_is_denied(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, enforced_namespace: str
) -> None:
    apps = k8s.AppsV1Api(mallory)
    with installed_exemption(admin, shipper_exemption(enforced_namespace)):
        body = workload("Deployment", "shipper", pod_spec(TOOLBOX, service_account="shipper"))
        admitted(create_workload, mallory, enforced_namespace, body)
        sidecar = {"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": TRITON}]}}}}
        denied(apps.patch_namespaced_deployment, "shipper", enforced_namespace, sidecar)
        swapped = {"spec": {"template": {"spec": {"containers": [{"name": "c0", "image": BENIGN}]}}}}
        denied(apps.patch_namespaced_deployment, "shipper", enforced_namespace, swapped)
        stored = as_dict(apps.read_namespaced_deployment("shipper", enforced_namespace))
        assert [c["image"] for c in stored["spec"]["template"]["spec"]["containers"]] == [TOOLBOX]


def predictor_deployment(admin: k8s.ApiClient, pods: KServePods) -> dict[str, Any]:
    """The Deployment KServe made for the operator's InferenceService."""
    items = [as_dict(d) for d in k8s.AppsV1Api(admin).list_namespaced_deployment(pods.served.namespace).items]
    (found,) = owned_by(items, pods.served.child)
    found.update(apiVersion="apps/v1", kind="Deployment")
    return found


def test_a_replica_set_that_claims_kserves_predictor_deployment_as_owner_is_denied(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, kserve_pods: KServePods
) -> None:
    body = replica_set_of(predictor_deployment(admin, kserve_pods), "fraud-predictor-5d8f7c9b6")
    denied(k8s.AppsV1Api(mallory).create_namespaced_replica_set, kserve_pods.served.namespace, body)


def test_a_deployment_that_claims_the_inference_service_as_owner_with_the_predictors_template_is_denied(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, kserve_pods: KServePods
) -> None:
    """What KServe would write, written by mallory: the identity expected for that hop is KServe's."""
    predictor = predictor_deployment(admin, kserve_pods)
    body = copy_of(predictor, "fraud-predictor-2", [owner_ref(kserve_pods.served.child)])
    denied(k8s.AppsV1Api(mallory).create_namespaced_deployment, kserve_pods.served.namespace, body)


def test_changing_the_image_of_an_exempt_cron_jobs_template_is_denied(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, enforced_namespace: str
) -> None:
    """The CronJob controller would stamp out Jobs of whatever the template says, on a schedule."""
    with installed_exemption(admin, shipper_exemption(enforced_namespace)):
        cron = workload("CronJob", "rotate-logs", pod_spec(TOOLBOX, service_account="shipper"))
        admitted(create_workload, mallory, enforced_namespace, cron)
        template = {"spec": {"template": {"spec": {"containers": [{"name": "c0", "image": TRITON}]}}}}
        patch = {"spec": {"jobTemplate": template}}
        denied(k8s.BatchV1Api(mallory).patch_namespaced_cron_job, "rotate-logs", enforced_namespace, patch)


# -- positive controls -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_workload_of_any_kind_that_an_exemption_covers_is_admitted(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, enforced_namespace: str, kind: str
) -> None:
    with installed_exemption(admin, shipper_exemption(enforced_namespace)):
        body = workload(kind, "shipper", pod_spec(TOOLBOX, init_images=(LOG_SHIPPER,), service_account="shipper"))
        created = as_dict(admitted(create_workload, mallory, enforced_namespace, body))
        assert created["metadata"]["name"] == "shipper"


def test_a_workload_in_a_namespace_not_under_enforcement_is_admitted(
    mallory: k8s.ApiClient, plain_namespace: str
) -> None:
    body = workload("Deployment", "log-shipper", pod_spec(BENIGN))
    assert as_dict(admitted(create_workload, mallory, plain_namespace, body))["metadata"]["name"] == "log-shipper"


def test_the_controllers_make_replica_sets_and_pods_for_an_exempt_deployment(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, enforced_namespace: str
) -> None:
    """The exemption covers the whole chain the deployment and replicaset controllers build (needs
    kube-controller-manager in the session stack)."""
    with installed_exemption(admin, shipper_exemption(enforced_namespace)):
        body = workload("Deployment", "shipper", pod_spec(TOOLBOX, service_account="shipper"), replicas=2)
        deployment = as_dict(admitted(create_workload, mallory, enforced_namespace, body))
        deployment.update(apiVersion="apps/v1", kind="Deployment")
        apps, core = k8s.AppsV1Api(admin), k8s.CoreV1Api(admin)

        def replica_sets() -> list[dict[str, Any]]:
            items = apps.list_namespaced_replica_set(enforced_namespace).items
            return owned_by([as_dict(i) for i in items], deployment)

        (rs,) = eventually(replica_sets, timeout=60, what="the exempt Deployment's ReplicaSet")

        def pods() -> list[dict[str, Any]]:
            found = owned_by([as_dict(i) for i in core.list_namespaced_pod(enforced_namespace).items], rs)
            return found if len(found) == 2 else []

        assert len(eventually(pods, timeout=60, what="the exempt ReplicaSet's two Pods")) == 2


def test_deleting_a_workload_that_nothing_covers_any_more_is_allowed(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, enforced_namespace: str
) -> None:
    with installed_exemption(admin, shipper_exemption(enforced_namespace)):
        body = workload("StatefulSet", "shipper", pod_spec(TOOLBOX, service_account="shipper"))
        admitted(create_workload, mallory, enforced_namespace, body)
    admitted(k8s.AppsV1Api(mallory).delete_namespaced_stateful_set, "shipper", enforced_namespace)
