"""The certificate keeper's decisions: when to make, rotate and drop CAs, when to issue, wait or keep a serving
certificate. Real certificates, a fixed clock."""

from __future__ import annotations

import datetime as dt

import pydantic
import pytest
from cryptography import x509

from devmlops.adapters.pki import CertificateAuthority, new_ca
from devmlops.operator.certificates import CertificateSettings
from devmlops.operator.certplan import (
    CaState,
    CertPolicy,
    ServingState,
    ca_action,
    serving_action,
    serving_lifetime,
    trusted_bundle,
)

NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)
HOSTS = ("devmlops-webhook.devmlops-system.svc", "devmlops-webhook.devmlops-system.svc.cluster.local")
POLICY = CertPolicy(
    validity=dt.timedelta(days=90),
    renew_before=dt.timedelta(days=30),
    ca_validity=dt.timedelta(days=365),
    ca_renew_before=dt.timedelta(days=60),
    overlap=dt.timedelta(minutes=10),
    propagation=dt.timedelta(seconds=30),
)


def ca(days: float = 365, *, issued: dt.datetime = NOW) -> CertificateAuthority:
    return new_ca("test CA", lifetime=dt.timedelta(days=days), now=issued)


def leaf(authority: CertificateAuthority, *, days: float = 90, hosts: tuple[str, ...] = HOSTS) -> x509.Certificate:
    pair = authority.issue("devmlops-webhook", hosts=hosts, lifetime=dt.timedelta(days=days), now=NOW)
    return x509.load_pem_x509_certificate(pair.cert_pem)


def test_no_ca_means_make_one() -> None:
    assert ca_action(CaState(cert=None), POLICY, NOW) == "create"


def test_a_fresh_ca_is_kept_and_one_inside_the_renewal_window_is_rotated() -> None:
    assert ca_action(CaState(cert=ca().cert), POLICY, NOW) == "keep"
    assert ca_action(CaState(cert=ca(days=59).cert), POLICY, NOW) == "rotate"


def test_a_new_rotation_request_rotates_once() -> None:
    current = ca().cert
    assert ca_action(CaState(cert=current, rotation_requested="r1"), POLICY, NOW) == "rotate"
    handled = CaState(cert=current, rotation_requested="r1", rotation_handled="r1")
    assert ca_action(handled, POLICY, NOW) == "keep"


def test_the_previous_ca_stays_trusted_for_the_overlap_then_leaves() -> None:
    state = CaState(cert=ca().cert, previous=ca().cert, previous_until=NOW + dt.timedelta(minutes=10))
    assert ca_action(state, POLICY, NOW) == "keep"
    assert ca_action(state, POLICY, NOW + dt.timedelta(minutes=10)) == "drop-previous"
    assert len(x509.load_pem_x509_certificates(trusted_bundle(state))) == 2
    assert x509.load_pem_x509_certificates(trusted_bundle(state))[0] == state.cert


def test_a_serving_certificate_is_issued_when_missing_foreign_expiring_or_for_other_hosts() -> None:
    authority = ca()
    state = CaState(cert=authority.cert)
    assert serving_action(ServingState(cert=None), state, HOSTS, POLICY, NOW) == "issue"
    assert serving_action(ServingState(cert=leaf(authority)), state, HOSTS, POLICY, NOW) == "keep"
    assert serving_action(ServingState(cert=leaf(authority, days=29)), state, HOSTS, POLICY, NOW) == "issue"
    other_hosts = leaf(authority, hosts=("elsewhere.svc",))
    assert serving_action(ServingState(cert=other_hosts), state, HOSTS, POLICY, NOW) == "issue"
    assert serving_action(ServingState(cert=leaf(ca())), state, HOSTS, POLICY, NOW) == "issue"


def test_after_a_ca_rotation_the_old_serving_certificate_is_kept_until_the_new_ca_propagated() -> None:
    old, new = ca(), ca()
    state = CaState(cert=new.cert, previous=old.cert, introduced_at=NOW, previous_until=NOW + dt.timedelta(minutes=10))
    serving = ServingState(cert=leaf(old))
    assert serving_action(serving, state, HOSTS, POLICY, NOW + dt.timedelta(seconds=5)) == "wait"
    assert serving_action(serving, state, HOSTS, POLICY, NOW + dt.timedelta(seconds=30)) == "issue"


def test_a_serving_certificate_never_outlives_its_ca() -> None:
    short = ca(days=40)
    assert serving_lifetime(short.cert, POLICY, NOW) < dt.timedelta(days=40)
    assert serving_lifetime(ca().cert, POLICY, NOW) == dt.timedelta(days=90)
    outliving = leaf(ca(), days=90)
    assert serving_action(ServingState(cert=outliving), CaState(cert=short.cert), HOSTS, POLICY, NOW) == "issue"


def test_no_certificate_may_be_valid_for_more_than_a_year() -> None:
    with pytest.raises(ValueError, match="exceeds the maximum"):
        new_ca("too long", lifetime=dt.timedelta(days=366), now=NOW)
    for field in ("validity_days", "ca_validity_days"):
        with pytest.raises(pydantic.ValidationError, match=field):
            CertificateSettings.model_validate(
                {"tls_secret": ("ns", "tls"), "ca_secret": ("ns", "ca"), "hosts": HOSTS, field: 400}
            )


def test_a_ca_kept_in_a_secret_loads_back_and_a_mismatched_key_is_refused() -> None:
    authority = ca()
    again = CertificateAuthority.from_pem(authority.cert_pem, authority.pair.key_pem)
    assert again.cert == authority.cert
    with pytest.raises(ValueError, match="not an EC key matching"):
        CertificateAuthority.from_pem(authority.cert_pem, ca().pair.key_pem)
