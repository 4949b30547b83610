"""The webhook's TLS server as deployed: certificate rotation without restart, TLS 1.2+, the size limit."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
import warnings

import pytest
from cryptography import x509
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from devmlops.adapters.kube import denial_message
from devmlops.harness.stack import DevmlopsStack
from tests.integration import support


def served_certificate(stack: DevmlopsStack) -> x509.Certificate:
    return support.served_certificate(stack.ca_file, stack.webhook_port)


def test_a_rotated_certificate_is_served_without_a_restart_and_no_admission_fails(
    stack: DevmlopsStack, admin: k8s.ApiClient, namespace: str
) -> None:
    assert stack.webhook is not None
    pid, before = stack.webhook.pid, served_certificate(stack).serial_number
    new_pem = stack.rotate_webhook_certificate()
    expected = x509.load_pem_x509_certificate(new_pem).serial_number
    api = k8s.CustomObjectsApi(admin)
    probe = {
        "apiVersion": "devmlops.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "rotation-probe"},
        "spec": {
            "model": {"name": "p", "uri": "s3://p/p", "digest": "sha256:" + "0" * 64},
            "runtime": {"kind": "kserve"},
        },
    }
    answers = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and (not answers or served_certificate(stack).serial_number != expected):
        with pytest.raises(ApiException) as caught:
            api.create_namespaced_custom_object(
                "devmlops.io", "v1alpha1", namespace, "modeldeployments", probe, dry_run="All"
            )
        answers.append((caught.value.status, denial_message(caught.value)[:200]))
    assert served_certificate(stack).serial_number == expected != before
    unexpected = [answer for answer in answers if answer[0] != 403]
    assert unexpected == [], "every admission during the rotation was answered by the webhook (no 500)"
    assert stack.webhook.pid == pid


def test_only_tls_1_2_or_newer_is_spoken(stack: DevmlopsStack) -> None:
    context = ssl.create_default_context(cafile=str(stack.ca_file))
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with (
        socket.create_connection(("127.0.0.1", stack.webhook_port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.version() == "TLSv1.2"
    old = ssl.create_default_context(cafile=str(stack.ca_file))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # asking for TLS 1.1 on purpose
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    with (
        socket.create_connection(("127.0.0.1", stack.webhook_port), timeout=5) as raw,
        pytest.raises(ssl.SSLError),
    ):
        old.wrap_socket(raw, server_hostname="127.0.0.1")
    with socket.create_connection(("127.0.0.1", stack.webhook_port), timeout=5) as raw:
        raw.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert not raw.recv(64).startswith(b"HTTP/1.1 200"), "a plaintext request must not be answered"


def test_an_oversized_admission_review_is_refused_unread(stack: DevmlopsStack) -> None:
    """The declared size alone gets a 413: the body is never sent, let alone read."""
    context = ssl.create_default_context(cafile=str(stack.ca_file))
    connection = http.client.HTTPSConnection("127.0.0.1", stack.webhook_port, context=context, timeout=10)
    try:
        connection.putrequest("POST", "/validate")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(64 * 2**20))
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 413
        answer = json.loads(response.read())
    finally:
        connection.close()
    assert answer["response"]["allowed"] is False
    assert "larger than the limit" in answer["response"]["status"]["message"]
