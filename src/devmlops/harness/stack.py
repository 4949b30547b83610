"""The devmlops processes beside a local control plane: the TLS webhook (registered with the API server
through a ValidatingWebhookConfiguration) and the kopf operator, each a real ``devmlops`` subprocess."""

from __future__ import annotations

import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Self

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from devmlops.adapters.kube import api_client
from devmlops.adapters.pki import new_ca
from devmlops.errors import HarnessError
from devmlops.harness.controlplane import OPERATOR_USER, ControlPlane
from devmlops.harness.opa import OpaServer
from devmlops.harness.processes import Lifecycle, ManagedProcess, free_port
from devmlops.harness.secretvolume import SecretVolume
from devmlops.webhook.registration import MUTATING_ENTRIES, VALIDATING_ENTRIES, webhook_entry

__all__ = [
    "MUTATING_CONFIG_NAME",
    "WEBHOOK_CONFIG_NAME",
    "DevmlopsStack",
    "mutating_webhook_configuration",
    "validating_webhook_configuration",
]

WEBHOOK_CONFIG_NAME = "devmlops-validating"
MUTATING_CONFIG_NAME = "devmlops-mutating"
WEBHOOK_HOSTS = ("127.0.0.1", "localhost")
MANAGED_TLS_SECRET = ("devmlops-system", "devmlops-webhook-tls")
MANAGED_CA_SECRET = ("devmlops-system", "devmlops-webhook-ca")


def managed_certificate_args(*, check_seconds: float, overlap_seconds: float = 5.0) -> list[str]:
    """The operator's certificate-keeping options for the local stack (seconds where a cluster has minutes)."""
    return [
        f"--webhook-tls-secret={'/'.join(MANAGED_TLS_SECRET)}",
        f"--webhook-ca-secret={'/'.join(MANAGED_CA_SECRET)}",
        *(f"--webhook-host={host}" for host in WEBHOOK_HOSTS),
        f"--webhook-configuration=validating/{WEBHOOK_CONFIG_NAME}",
        f"--webhook-configuration=mutating/{MUTATING_CONFIG_NAME}",
        f"--cert-check-interval={check_seconds}",
        f"--ca-overlap-seconds={overlap_seconds}",
        "--ca-propagation-seconds=1",
    ]


def validating_webhook_configuration(url: str, ca_pem: bytes, *, timeout_seconds: int = 10) -> dict[str, Any]:
    """Every entry of ``webhook/registration.py``; failurePolicy Fail (fail closed).

    The webhook's own namespace and kube-system are excluded so that devmlops can never lock itself out.
    """
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": WEBHOOK_CONFIG_NAME, "labels": {"app.kubernetes.io/part-of": "devmlops"}},
        "webhooks": [webhook_entry(e, url, ca_pem, timeout_seconds, "validate") for e in VALIDATING_ENTRIES],
    }


def mutating_webhook_configuration(url: str, ca_pem: bytes, *, timeout_seconds: int = 5) -> dict[str, Any]:
    """Stamp devmlops.io/requested-by on ModelDeployments and devmlops.io/approved-by on ModelApprovals."""
    webhooks = [webhook_entry(e, url, ca_pem, timeout_seconds, "mutate") for e in MUTATING_ENTRIES]
    for webhook in webhooks:
        webhook["reinvocationPolicy"] = "Never"
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": MUTATING_CONFIG_NAME, "labels": {"app.kubernetes.io/part-of": "devmlops"}},
        "webhooks": webhooks,
    }


def _https_ok(url: str, context: ssl.SSLContext) -> bool:
    try:
        with urllib.request.urlopen(url, context=context, timeout=2) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


class DevmlopsStack(Lifecycle):
    """Webhook and operator for one control plane; ``stop()`` ends both and removes the registration."""

    def __init__(
        self, control_plane: ControlPlane, *, policies: Path | None = None, managed_certificates: bool = False
    ) -> None:
        """With ``managed_certificates`` the operator keeps the webhook's TLS as in a Helm install: it makes the CA
        and serving certificate Secrets and the caBundles; a ``SecretVolume`` plays the kubelet for the webhook."""
        self.cp = control_plane
        self.managed_certificates = managed_certificates
        self.tls_volume: SecretVolume | None = None
        self.policies = policies
        self.opa: OpaServer | None = None
        self.workdir = control_plane.workdir / "devmlops"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.webhook: ManagedProcess | None = None
        self.operator: ManagedProcess | None = None
        self.webhook_port = 0
        self.operator_metrics_port = 0
        self.extra_args: list[str] = []  # given to the webhook and the operator alike (the registry options)
        self.ca = new_ca("devmlops-webhook-ca")
        self.ca_file = self.workdir / "webhook-ca.crt"
        self.ca_file.write_bytes(self.ca.cert_pem)

    def start(self) -> Self:
        try:
            if self.policies is not None:
                self.opa = OpaServer(bin_dir=self.cp.bin_dir, policies=self.policies, workdir=self.workdir).start()
            if self.managed_certificates:
                ensure_namespace(self.cp, MANAGED_TLS_SECRET[0])
                self.register_webhook(wait=False)
                self.start_operator()
                self.tls_volume = SecretVolume(
                    self.cp.kubeconfig(), *MANAGED_TLS_SECRET, self.workdir / "tls-volume"
                ).start()
                self.ca_file = self.tls_volume.path("ca.crt")
                self.start_webhook()
                with api_client(self.cp.kubeconfig()) as client:
                    self._wait_webhook_active(client, 30.0)
            else:
                self.start_webhook()
                self.register_webhook()
                self.start_operator()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for proc in (self.operator, self.webhook):
            if proc is not None:
                proc.stop()
        self.operator = self.webhook = None
        if self.tls_volume is not None:
            self.tls_volume.stop()
        if self.opa is not None:
            self.opa.stop()
            self.opa = None

    @property
    def webhook_url(self) -> str:
        return f"https://127.0.0.1:{self.webhook_port}"

    def _python_env(self, user: str = "admin") -> dict[str, str]:
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.cp.kubeconfig(user))
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def start_webhook(self, *, port: int | None = None) -> None:
        if self.tls_volume is not None:
            cert, key = self.tls_volume.path("tls.crt"), self.tls_volume.path("tls.key")
        else:
            cert, key = self.ca.issue("devmlops-webhook", hosts=list(WEBHOOK_HOSTS)).write(self.workdir, "webhook")
        self.webhook_port = port or self.webhook_port or free_port()
        argv = [
            sys.executable,
            "-m",
            "devmlops",
            "webhook",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.webhook_port),
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(key),
            "--cert-reload-interval",
            "0.5",
            *(["--opa-url", self.opa.url] if self.opa else []),
            *self.extra_args,
        ]
        self.webhook = ManagedProcess(
            "webhook", argv, log_path=self.workdir / "webhook.log", env=self._python_env()
        ).start()
        context = ssl.create_default_context(cafile=str(self.ca_file))
        self.webhook.wait_until(
            lambda: _https_ok(f"{self.webhook_url}/readyz", context), timeout=30, what="webhook /readyz"
        )

    def rotate_webhook_certificate(self) -> bytes:
        """Write a new serving certificate (same CA) over the old files; the webhook reloads it by itself."""
        pair = self.ca.issue("devmlops-webhook", hosts=list(WEBHOOK_HOSTS))
        pair.write(self.workdir, "webhook")
        return pair.cert_pem

    def restart_webhook(self) -> None:
        """Stop the webhook process (if running) and start it again where the registration points."""
        if self.webhook is not None:
            self.webhook.stop()
        self.start_webhook(port=self.webhook_port)

    def register_webhook(self, *, timeout: float = 20.0, wait: bool = True) -> None:
        """Create the webhook configurations and (``wait``) block until the API server calls the webhook."""
        if self.managed_certificates and not self.webhook_port:
            self.webhook_port = free_port()  # the configurations point here before the webhook starts
        ca_pem = b"" if self.managed_certificates else self.ca.cert_pem
        validating: Any = validating_webhook_configuration(f"{self.webhook_url}/validate", ca_pem)
        mutating: Any = mutating_webhook_configuration(f"{self.webhook_url}/mutate", ca_pem)
        with api_client(self.cp.kubeconfig()) as client:
            api = k8s.AdmissionregistrationV1Api(client)
            for create, delete, config in (
                (api.create_mutating_webhook_configuration, api.delete_mutating_webhook_configuration, mutating),
                (api.create_validating_webhook_configuration, api.delete_validating_webhook_configuration, validating),
            ):
                try:
                    create(config)
                except ApiException as exc:
                    if exc.status != 409:
                        raise
                    delete(config["metadata"]["name"])
                    create(config)
            if wait:
                self._wait_webhook_active(client, timeout)

    def _wait_webhook_active(self, client: k8s.ApiClient, timeout: float) -> None:
        """Dry-run an unsigned ModelDeployment until our denial comes back: then the registration is live."""
        probe = {
            "apiVersion": "devmlops.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "devmlops-webhook-probe"},
            "spec": {
                "model": {"name": "probe", "uri": "s3://probe/model", "digest": "sha256:" + "0" * 64},
                "runtime": {"kind": "kserve"},
            },
        }
        api = k8s.CustomObjectsApi(client)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                api.create_namespaced_custom_object(
                    "devmlops.io", "v1alpha1", "default", "modeldeployments", probe, dry_run="All"
                )
            except ApiException as exc:
                if exc.status == 403 and "devmlops" in (exc.body or ""):
                    return
            time.sleep(0.2)
        raise HarnessError(f"the API server did not call the webhook within {timeout:.0f}s")

    def webhook_status(self) -> dict[str, Any]:
        """The webhook's /readyz document (policies loaded, revision), or {} when it does not answer."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        try:
            with urllib.request.urlopen(f"{self.webhook_url}/readyz", context=context, timeout=2) as response:  # noqa: S310
                status: dict[str, Any] = json.loads(response.read())
                return status
        except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
            return {}

    def wait_for_policies(
        self,
        count: int | None = None,
        *,
        present: Iterable[str] = (),
        absent: Iterable[str] = (),
        revision_not: str = "",
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        """Block until the webhook's compiled policies look as asked (its watch is asynchronous)."""
        wanted, unwanted = set(present), set(absent)
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = self.webhook_status()
            names = set(status.get("policyNames", ())) | set(status.get("brokenPolicies", ()))
            if (
                status
                and (count is None or status.get("policies") == count)
                and wanted <= names
                and not (unwanted & names)
                and (not revision_not or status.get("policyRevision") != revision_not)
            ):
                return status
            time.sleep(0.05)
        raise HarnessError(f"the webhook's policies did not settle within {timeout:.0f}s (last status {status})")

    def unregister_webhook(self) -> None:
        with api_client(self.cp.kubeconfig()) as client:
            api = k8s.AdmissionregistrationV1Api(client)
            for delete, name in (
                (api.delete_validating_webhook_configuration, WEBHOOK_CONFIG_NAME),
                (api.delete_mutating_webhook_configuration, MUTATING_CONFIG_NAME),
            ):
                try:
                    delete(name)
                except ApiException as exc:
                    if exc.status != 404:
                        raise

    def restart_with(self, extra_args: Sequence[str]) -> None:
        """Run the webhook and the operator again with ``extra_args`` (for example the model registry's options)."""
        self.extra_args = list(extra_args)
        self.restart_webhook()
        if self.operator is not None:
            self.operator.stop()
            self.start_operator()

    def start_operator(self, *, recheck_seconds: float = 300.0) -> None:
        self.operator_metrics_port = free_port()
        self.operator = self.operator_process("operator", recheck_seconds=recheck_seconds)

    def operator_process(
        self,
        name: str,
        *,
        priority: int | None = None,
        recheck_seconds: float = 300.0,
        namespaces: Sequence[str] = (),
        extra: Sequence[str] = (),
    ) -> ManagedProcess:
        """An operator process; with ``priority`` it joins kopf peering (HA) instead of running standalone; with
        ``namespaces`` it watches only those; ``extra``: more options (say, ``--prometheus-url``)."""
        port = free_port()
        if priority is not None:
            ensure_cluster_peering(self.cp)
        mode = ["--standalone"] if priority is None else ["--peering", "--priority", str(priority)]
        if self.managed_certificates:
            mode += managed_certificate_args(check_seconds=0.5)
        argv = [
            sys.executable,
            "-m",
            "devmlops",
            "operator",
            *mode,
            "--liveness",
            f"http://127.0.0.1:{port}/healthz",
            "--metrics-port",
            str(self.operator_metrics_port if priority is None else free_port()),
            *(["--opa-url", self.opa.url] if self.opa else []),
            "--recheck-interval",
            str(recheck_seconds),
            *[arg for namespace in namespaces for arg in ("--namespace", namespace)],
            *self.extra_args,
            *extra,
        ]
        # As in a cluster, the operator acts as its own identity: the webhook lets only it write a model's children.
        env = self._python_env(OPERATOR_USER)
        process = ManagedProcess(name, argv, log_path=self.workdir / f"{name}.log", env=env).start()

        def alive() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                    return bool(response.status == 200)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                return False

        process.wait_until(alive, timeout=30, what=f"{name} liveness")
        return process


def ensure_cluster_peering(cp: ControlPlane, name: str = "devmlops") -> None:
    """The ClusterKopfPeering object that operator replicas elect a leader through."""
    body: Any = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}}
    with api_client(cp.kubeconfig()) as client:
        try:
            k8s.CustomObjectsApi(client).create_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", body)
        except ApiException as exc:
            if exc.status != 409:
                raise


def ensure_namespace(cp: ControlPlane, name: str) -> None:
    with api_client(cp.kubeconfig()) as client:
        try:
            body: Any = {"metadata": {"name": name}}
            k8s.CoreV1Api(client).create_namespace(body)
        except ApiException as exc:
            if exc.status != 409:
                raise
