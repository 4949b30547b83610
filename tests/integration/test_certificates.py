"""The operator keeps the webhook's TLS as the Helm install has it: CA and serving certificate in Secrets, the CA in
the caBundles, a forced CA rotation in the middle of a stream of admissions with none of them failing.

A control plane of its own: the managed stack registers the same webhook configuration names as the shared one.
The kubelet's Secret volume is played by ``SecretVolume``."""

from __future__ import annotations

import base64
import datetime as dt
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from devmlops.adapters.kube import api_client
from devmlops.harness.kserve import local_cluster
from devmlops.harness.stack import (
    MANAGED_CA_SECRET,
    MANAGED_TLS_SECRET,
    MUTATING_CONFIG_NAME,
    WEBHOOK_CONFIG_NAME,
    DevmlopsStack,
)
from devmlops.operator.certificates import ROTATE_ANNOTATION
from devmlops.operator.certplan import signed_by
from devmlops.webhook.registration import MUTATING_ENTRIES, VALIDATING_ENTRIES
from tests.conftest import ROOT
from tests.integration.support import (
    GROUP,
    VERSION,
    SignedModel,
    eventually,
    model_deployment,
    served_certificate,
    signed_by_evidence,
    signed_model,
    trusting,
)


@pytest.fixture(scope="module")
def managed(tools_dir: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevmlopsStack]:
    with (
        local_cluster(bin_dir=tools_dir, project_dir=ROOT) as (cp, _kserve),
        DevmlopsStack(cp, managed_certificates=True) as stack,
    ):
        yield stack


@pytest.fixture
def client(managed: DevmlopsStack) -> Iterator[k8s.ApiClient]:
    with api_client(managed.cp.kubeconfig()) as api:
        yield api


def secret(client: k8s.ApiClient, where: tuple[str, str]) -> Any:
    return k8s.CoreV1Api(client).read_namespaced_secret(where[1], where[0])


def decoded(obj: Any, key: str) -> bytes:
    return base64.b64decode(obj.data[key])


def ca_bundles(client: k8s.ApiClient) -> list[bytes]:
    api = k8s.AdmissionregistrationV1Api(client)
    configs = [
        api.read_validating_webhook_configuration(WEBHOOK_CONFIG_NAME),
        api.read_mutating_webhook_configuration(MUTATING_CONFIG_NAME),
    ]
    return [base64.b64decode(w.client_config.ca_bundle or "") for c in configs for w in c.webhooks]


def pem_certificates(bundle: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(bundle) if bundle.strip() else []


def served(stack: DevmlopsStack) -> x509.Certificate:
    return served_certificate(stack.ca_file, stack.webhook_port)


def test_the_operator_makes_a_ca_and_serving_certificate_and_patches_every_ca_bundle(
    managed: DevmlopsStack, client: k8s.ApiClient
) -> None:
    ca_secret, tls_secret = secret(client, MANAGED_CA_SECRET), secret(client, MANAGED_TLS_SECRET)
    ca = x509.load_pem_x509_certificate(decoded(ca_secret, "ca.crt"))
    leaf = x509.load_pem_x509_certificate(decoded(tls_secret, "tls.crt"))
    assert tls_secret.type == "kubernetes.io/tls"
    assert all(bundle == decoded(ca_secret, "ca.crt") for bundle in ca_bundles(client))
    assert len(ca_bundles(client)) == len(VALIDATING_ENTRIES) + len(MUTATING_ENTRIES)  # every webhook of both
    leaf.verify_directly_issued_by(ca)
    assert served(managed).serial_number == leaf.serial_number
    # No certificate valid for more than a year; the serving one for the default 90 days.
    assert ca.not_valid_after_utc - ca.not_valid_before_utc <= dt.timedelta(days=365, minutes=5)
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc <= dt.timedelta(days=90, minutes=5)
    # The webhook never sees the CA key; uninstalling (deleting the configuration) lets the collector take both.
    assert "ca.key" not in tls_secret.data
    config = k8s.AdmissionregistrationV1Api(client).read_validating_webhook_configuration(WEBHOOK_CONFIG_NAME)
    for obj in (ca_secret, tls_secret):
        assert [(o.kind, o.uid) for o in obj.metadata.owner_references] == [
            ("ValidatingWebhookConfiguration", config.metadata.uid)
        ]


def test_a_ca_bundle_reset_by_an_upgrade_is_patched_back(managed: DevmlopsStack, client: k8s.ApiClient) -> None:
    api = k8s.AdmissionregistrationV1Api(client)
    config = api.read_mutating_webhook_configuration(MUTATING_CONFIG_NAME)
    for webhook in config.webhooks:
        webhook.client_config.ca_bundle = None
    api.replace_mutating_webhook_configuration(MUTATING_CONFIG_NAME, config)
    expected = decoded(secret(client, MANAGED_CA_SECRET), "ca.crt")
    eventually(lambda: all(b == expected for b in ca_bundles(client)), timeout=15, what="caBundle patched back")


def test_a_re_created_webhook_configuration_owns_the_secrets_again(
    managed: DevmlopsStack, client: k8s.ApiClient
) -> None:
    api = k8s.AdmissionregistrationV1Api(client)
    old = api.read_validating_webhook_configuration(WEBHOOK_CONFIG_NAME)
    body = client.sanitize_for_serialization(old)
    for key in ("uid", "resourceVersion", "creationTimestamp", "managedFields", "generation"):
        body["metadata"].pop(key, None)
    api.delete_validating_webhook_configuration(WEBHOOK_CONFIG_NAME)
    new_uid = api.create_validating_webhook_configuration(body).metadata.uid

    def owned() -> bool:
        # The garbage collector may take the Secrets of the deleted configuration first; the operator then makes
        # new ones. Either way both end up owned by the new configuration.
        try:
            secrets = (secret(client, MANAGED_CA_SECRET), secret(client, MANAGED_TLS_SECRET))
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return all([o.uid for o in s.metadata.owner_references or []] == [new_uid] for s in secrets)

    eventually(owned, timeout=15, what="the Secrets adopted by the re-created configuration")
    assert new_uid != old.metadata.uid

    def serving_again() -> bool:
        """After new Secrets, a new CA: the webhook serves its leaf and every caBundle names it (no stale half)."""
        ca = decoded(secret(client, MANAGED_CA_SECRET), "ca.crt")
        if not all(bundle == ca for bundle in ca_bundles(client)):
            return False
        try:
            served(managed).verify_directly_issued_by(x509.load_pem_x509_certificate(ca))
        except (OSError, ValueError, TypeError, InvalidSignature):
            return False
        return True

    eventually(serving_again, timeout=30, what="the webhook serving under the Secrets' CA again")


@pytest.fixture
def trusted(managed: DevmlopsStack, client: k8s.ApiClient, tmp_path: Any) -> Iterator[tuple[str, SignedModel]]:
    namespace = "rotation"
    model = signed_model(tmp_path, "fraud")
    core = k8s.CoreV1Api(client)
    core.create_namespace({"metadata": {"name": namespace}})
    with trusting(client, managed, namespace, model, policy="rotation"):
        yield namespace, model
    core.delete_namespace(namespace)


def test_a_forced_ca_rotation_during_a_stream_of_admissions_fails_none_of_them(
    managed: DevmlopsStack, client: k8s.ApiClient, trusted: tuple[str, SignedModel]
) -> None:
    namespace, model = trusted
    assert managed.webhook is not None
    pid = managed.webhook.pid
    old_ca = x509.load_pem_x509_certificate(decoded(secret(client, MANAGED_CA_SECRET), "ca.crt"))
    answers: list[tuple[str, int, str]] = []
    stop = threading.Event()

    def stream() -> None:
        api = k8s.CustomObjectsApi(client)
        for i in range(2000):  # bounded; stopped much earlier
            if stop.is_set():
                return
            good = i % 2 == 0
            doc = signed_by_evidence(f"m-{i}", model) if good else model_deployment(f"m-{i}", model.digest)
            try:
                api.create_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", doc, dry_run="All")
                answers.append(("signed" if good else "unsigned", 201, ""))
            except ApiException as exc:
                answers.append(("signed" if good else "unsigned", int(exc.status), (exc.body or "")[:300]))

    worker = threading.Thread(target=stream)
    worker.start()
    try:
        time.sleep(1)
        ca_obj = secret(client, MANAGED_CA_SECRET)
        ca_obj.metadata.annotations = {**(ca_obj.metadata.annotations or {}), ROTATE_ANNOTATION: str(uuid.uuid4())}
        k8s.CoreV1Api(client).replace_namespaced_secret(MANAGED_CA_SECRET[1], MANAGED_CA_SECRET[0], ca_obj)

        def rotated() -> bool:
            new_ca = x509.load_pem_x509_certificate(decoded(secret(client, MANAGED_CA_SECRET), "ca.crt"))
            if new_ca.serial_number == old_ca.serial_number:
                return False
            bundles = [pem_certificates(b) for b in ca_bundles(client)]
            only_new = all([c.serial_number for c in b] == [new_ca.serial_number] for b in bundles)
            return only_new and served(managed).issuer == new_ca.subject and signed_by(served(managed), new_ca)

        eventually(rotated, timeout=60, what="the CA rotated, served and the old CA dropped from every caBundle")
        time.sleep(2)  # keep admitting after the old CA is gone
    finally:
        stop.set()
        worker.join(timeout=30)
    wrong = [a for a in answers if (a[0] == "signed" and a[1] != 201) or (a[0] == "unsigned" and a[1] != 403)]
    assert len(answers) > 20
    assert wrong == [], f"{len(wrong)} of {len(answers)} admissions failed during the rotation: {wrong[:3]}"
    assert all("denied by devmlops" in body for kind, _status, body in answers if kind == "unsigned")
    assert managed.webhook.pid == pid
