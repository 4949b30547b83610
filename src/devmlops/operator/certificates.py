"""The operator keeps the webhook's TLS: a CA and a serving certificate in Secrets, the CA in the caBundles.

Every replica runs the keeper; writes carry the resourceVersion they read, so two replicas never overwrite each
other (the loser re-reads on its next check). certplan.py decides, this module reads and writes.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from pydantic import BaseModel, ConfigDict, Field

from devmlops.adapters.evidence import decode_values
from devmlops.adapters.pki import CertificateAuthority, new_ca
from devmlops.operator.certplan import (
    CaState,
    CertPolicy,
    ServingState,
    ca_action,
    serving_action,
    serving_lifetime,
    trusted_bundle,
)
from devmlops.operator.metrics import OperatorMetrics

__all__ = ["ROTATE_ANNOTATION", "CertificateKeeper", "CertificateSettings"]

_log = logging.getLogger("devmlops.certificates")

ROTATE_ANNOTATION = "devmlops.io/rotate"
_HANDLED = "devmlops.io/rotation-handled"
_INTRODUCED = "devmlops.io/ca-introduced-at"
_PREVIOUS_UNTIL = "devmlops.io/previous-ca-until"
_MANAGED_BY = {"app.kubernetes.io/managed-by": "devmlops-operator", "app.kubernetes.io/part-of": "devmlops"}


class CertificateSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    tls_secret: tuple[str, str] = Field(description="(namespace, name) of the webhook's kubernetes.io/tls Secret.")
    ca_secret: tuple[str, str] = Field(description="(namespace, name) of the CA Secret (only the operator reads it).")
    hosts: tuple[str, ...] = Field(min_length=1, description="DNS names and IPs the serving certificate is for.")
    configurations: tuple[tuple[str, str], ...] = Field(
        default=(), description="(validating|mutating, name) of the webhook configurations whose caBundle to keep."
    )
    validity_days: float = Field(default=90, gt=0, le=365)
    renew_before_days: float = Field(default=30, gt=0)
    ca_validity_days: float = Field(default=365, gt=0, le=365)
    ca_renew_before_days: float = Field(default=60, gt=0)
    ca_overlap_seconds: float = Field(default=600, ge=0)
    ca_propagation_seconds: float = Field(default=30, ge=0)
    check_seconds: float = Field(default=60, gt=0)

    def policy(self) -> CertPolicy:
        return CertPolicy(
            validity=dt.timedelta(days=self.validity_days),
            renew_before=dt.timedelta(days=self.renew_before_days),
            ca_validity=dt.timedelta(days=self.ca_validity_days),
            ca_renew_before=dt.timedelta(days=self.ca_renew_before_days),
            overlap=dt.timedelta(seconds=self.ca_overlap_seconds),
            propagation=dt.timedelta(seconds=self.ca_propagation_seconds),
        )


@dataclass(frozen=True, slots=True)
class _Read:
    """A Secret as read: decoded data, annotations, resourceVersion (None: it does not exist)."""

    data: Mapping[str, str]
    annotations: Mapping[str, str]
    version: str | None
    owners: tuple[str, ...] = ()  # uids of the ownerReferences


class CertificateKeeper:
    def __init__(
        self,
        api_client: k8s.ApiClient,
        settings: CertificateSettings,
        *,
        metrics: OperatorMetrics | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._core = k8s.CoreV1Api(api_client)
        self._admission = k8s.AdmissionregistrationV1Api(api_client)
        self._settings = settings
        self._policy = settings.policy()
        self._metrics = metrics
        self._clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="certificates", daemon=True)

    def start(self) -> CertificateKeeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.check()
            except Exception:
                _log.exception("certificate check failed; retrying in %.0fs", self._settings.check_seconds)
            self._stop.wait(self._settings.check_seconds)

    def check(self) -> None:
        """One pass: CA, caBundles, serving certificate, in that order (see certplan.py for why)."""
        now = self._clock()
        configurations = {ref: self._read_configuration(*ref) for ref in self._settings.configurations}
        owner = _owner(configurations)
        ca_read = self._read(self._settings.ca_secret)
        ca_state, authority = _ca_state(ca_read)
        action = ca_action(ca_state, self._policy, now)
        if action == "keep" and _orphaned(ca_read, owner):
            action = "adopt"  # the configuration was re-created (e.g. deleted by hand, then by helm upgrade)
        if action != "keep":
            written = self._write_ca(action, ca_read, ca_state, authority, owner, now)
            if written is None:
                return  # another replica wrote first: start over on the next check
            ca_state, authority = written
        if authority is None or ca_state.cert is None:
            return
        bundle = trusted_bundle(ca_state)
        for (kind, name), config in configurations.items():
            if config is not None:
                self._patch_bundle(kind, name, config, bundle)
        self._keep_serving(ca_state, authority, bundle, owner, now)
        if self._metrics is not None:
            self._metrics.certificate_expiry.labels("ca").set(ca_state.cert.not_valid_after_utc.timestamp())

    # The CA

    def _write_ca(
        self,
        action: str,
        read: _Read,
        state: CaState,
        authority: CertificateAuthority | None,
        owner: list[dict[str, Any]],
        now: dt.datetime,
    ) -> tuple[CaState, CertificateAuthority | None] | None:
        annotations = dict(read.annotations)
        if action == "adopt":
            data, new_state, new_authority = dict(read.data), state, authority
        elif action == "drop-previous" and state.cert is not None:
            data = {"ca.crt": _pem(state.cert), "ca.key": read.data["ca.key"]}
            annotations.pop(_PREVIOUS_UNTIL, None)
            new_state, new_authority = CaState(cert=state.cert, introduced_at=state.introduced_at), authority
            _log.info("previous webhook CA dropped from the caBundle")
        else:
            new_authority = new_ca("devmlops webhook CA", lifetime=self._policy.ca_validity, now=now)
            previous = state.cert if action == "rotate" and state.cert is not None else None
            data = {"ca.crt": new_authority.cert_pem.decode(), "ca.key": new_authority.pair.key_pem.decode()}
            annotations[_INTRODUCED] = _stamp(now)
            annotations[_HANDLED] = state.rotation_requested
            previous_until = None
            if previous is not None:
                previous_until = min(now + self._policy.overlap, previous.not_valid_after_utc)
                data["previous-ca.crt"] = _pem(previous)
                annotations[_PREVIOUS_UNTIL] = _stamp(previous_until)
            new_state = CaState(
                cert=new_authority.cert,
                previous=previous,
                introduced_at=now,
                previous_until=previous_until,
                rotation_requested=state.rotation_requested,
                rotation_handled=state.rotation_requested,
            )
            if self._metrics is not None:
                self._metrics.certificate_rotations.labels("ca").inc()
            _log.info("webhook CA %s (%s)", "created" if previous is None else "rotated", action)
        if not self._write(self._settings.ca_secret, read, data, annotations, owner, kind="Opaque"):
            return None
        return new_state, new_authority

    # The caBundles

    def _read_configuration(self, kind: str, name: str) -> Any:
        """A webhook configuration as read (its resourceVersion makes the later replace optimistic), or None."""
        read = (
            self._admission.read_validating_webhook_configuration
            if kind == "validating"
            else self._admission.read_mutating_webhook_configuration
        )
        try:
            return read(name)
        except ApiException as exc:
            if exc.status == 404:
                _log.warning("%s webhook configuration %s not found; nothing to patch", kind, name)
                return None
            raise

    def _patch_bundle(self, kind: str, name: str, config: Any, bundle: bytes) -> None:
        replace = (
            self._admission.replace_validating_webhook_configuration
            if kind == "validating"
            else self._admission.replace_mutating_webhook_configuration
        )
        encoded = base64.b64encode(bundle).decode()
        stale = [w for w in config.webhooks or [] if w.client_config.ca_bundle != encoded]
        if not stale:
            return
        for webhook in stale:
            webhook.client_config.ca_bundle = encoded
        try:
            replace(name, config)  # carries the resourceVersion read: a concurrent change makes this a 409
        except ApiException as exc:
            if exc.status != 409:
                raise
            return
        _log.info("caBundle of %s webhook configuration %s updated (%d webhooks)", kind, name, len(stale))

    # The serving certificate

    def _keep_serving(
        self,
        ca: CaState,
        authority: CertificateAuthority,
        bundle: bytes,
        owner: list[dict[str, Any]],
        now: dt.datetime,
    ) -> None:
        read = self._read(self._settings.tls_secret)
        action = serving_action(
            ServingState(cert=_certificate(read.data.get("tls.crt"))), ca, self._settings.hosts, self._policy, now
        )
        data = dict(read.data)
        if action == "issue":
            pair = authority.issue(
                "devmlops-webhook",
                hosts=self._settings.hosts,
                lifetime=serving_lifetime(authority.cert, self._policy, now),
                now=now,
            )
            data = {"tls.crt": pair.cert_pem.decode(), "tls.key": pair.key_pem.decode()}
            if self._metrics is not None:
                self._metrics.certificate_rotations.labels("serving").inc()
            _log.info("webhook serving certificate issued for %s", ", ".join(self._settings.hosts))
        data["ca.crt"] = bundle.decode()
        if data != dict(read.data) or _orphaned(read, owner):
            self._write(self._settings.tls_secret, read, data, dict(read.annotations), owner, kind="kubernetes.io/tls")
        cert = _certificate(data.get("tls.crt"))
        if self._metrics is not None and cert is not None:
            self._metrics.certificate_expiry.labels("serving").set(cert.not_valid_after_utc.timestamp())

    # Secrets

    def _read(self, where: tuple[str, str]) -> _Read:
        namespace, name = where
        try:
            found: Any = self._core.read_namespaced_secret(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return _Read({}, {}, None)
            raise
        owners = tuple(ref.uid for ref in found.metadata.owner_references or [])
        return _Read(
            decode_values(found.data), dict(found.metadata.annotations or {}), found.metadata.resource_version, owners
        )

    def _write(
        self,
        where: tuple[str, str],
        read: _Read,
        data: Mapping[str, str],
        annotations: Mapping[str, str],
        owner: list[dict[str, Any]],
        *,
        kind: str,
    ) -> bool:
        """Create, or replace at the version read; False when another writer got there first (409)."""
        namespace, name = where
        metadata: dict[str, Any] = {
            "name": name,
            "namespace": namespace,
            "labels": _MANAGED_BY,
            "annotations": dict(annotations),
            "ownerReferences": owner,
        }
        if read.version is not None:
            metadata["resourceVersion"] = read.version
        body: Any = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": metadata,
            "type": kind,
            "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()},
        }
        try:
            if read.version is None:
                self._core.create_namespaced_secret(namespace, body)
            else:
                self._core.replace_namespaced_secret(name, namespace, body)
        except ApiException as exc:
            if exc.status == 409:
                _log.info("Secret %s/%s changed under us; re-reading on the next check", namespace, name)
                return False
            raise
        return True


def _owner(configurations: Mapping[tuple[str, str], Any]) -> list[dict[str, Any]]:
    """The validating configuration owns the Secrets: uninstalling the chart lets the collector remove them."""
    for (kind, name), config in configurations.items():
        if kind == "validating" and config is not None:
            return [
                {
                    "apiVersion": "admissionregistration.k8s.io/v1",
                    "kind": "ValidatingWebhookConfiguration",
                    "name": name,
                    "uid": config.metadata.uid,
                }
            ]
    return []


def _orphaned(read: _Read, owner: list[dict[str, Any]]) -> bool:
    """The Secret exists but is not owned by the current validating configuration (uninstall would leave it)."""
    return read.version is not None and bool(owner) and read.owners != tuple(ref["uid"] for ref in owner)


def _ca_state(read: _Read) -> tuple[CaState, CertificateAuthority | None]:
    """Parse the CA Secret; an unreadable CA counts as none (a new one is made, the old bundle is replaced)."""
    requested = read.annotations.get(ROTATE_ANNOTATION, "")
    try:
        authority = CertificateAuthority.from_pem(read.data["ca.crt"].encode(), read.data["ca.key"].encode())
    except (KeyError, ValueError, TypeError):
        if read.version is not None:
            _log.warning("CA Secret holds no usable CA; a new one will be made")
        return CaState(cert=None, rotation_requested=requested), None
    state = CaState(
        cert=authority.cert,
        previous=_certificate(read.data.get("previous-ca.crt")),
        introduced_at=_parse_stamp(read.annotations.get(_INTRODUCED)),
        previous_until=_parse_stamp(read.annotations.get(_PREVIOUS_UNTIL)),
        rotation_requested=requested,
        rotation_handled=read.annotations.get(_HANDLED, ""),
    )
    return state, authority


def _certificate(pem: str | None) -> x509.Certificate | None:
    if not pem:
        return None
    try:
        return x509.load_pem_x509_certificate(pem.encode())
    except ValueError:
        return None


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_stamp(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return None
