from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from devmlops.adapters.pki import MAX_VALIDITY, new_ca


def test_a_serving_certificate_chains_to_its_ca_and_names_its_hosts() -> None:
    ca = new_ca("test-ca")
    leaf = x509.load_pem_x509_certificate(ca.issue("svc", hosts=["127.0.0.1", "svc.ns.svc"]).cert_pem)
    leaf.verify_directly_issued_by(ca.cert)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert sans.get_values_for_type(x509.DNSName) == ["svc.ns.svc"]
    usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_no_certificate_may_live_longer_than_a_year() -> None:
    with pytest.raises(ValueError, match="exceeds the maximum"):
        new_ca("too-long", lifetime=MAX_VALIDITY + dt.timedelta(days=1))
    with pytest.raises(ValueError, match="exceeds the maximum"):
        new_ca("ca").issue("leaf", lifetime=dt.timedelta(days=400))


def test_a_written_key_is_private_to_its_owner(tmp_path: Path) -> None:
    cert_path, key_path = new_ca("ca").issue("leaf").write(tmp_path, "leaf")
    assert key_path.stat().st_mode & 0o777 == 0o600
    assert cert_path.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    assert isinstance(load_pem_private_key(key_path.read_bytes(), None), ec.EllipticCurvePrivateKey)
