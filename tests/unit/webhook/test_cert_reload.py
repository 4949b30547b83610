from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

from cryptography import x509

from devmlops.adapters.pki import CertificateAuthority, new_ca
from devmlops.webhook.server import CertReloader


def served_serial(context: ssl.SSLContext, ca: CertificateAuthority) -> int:
    """Handshake over a socket pair: the server side uses ``context``; return the certificate it presented."""
    server_sock, client_sock = socket.socketpair()
    client = ssl.create_default_context(cadata=ca.cert_pem.decode())
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            with context.wrap_socket(server_sock, server_side=True):
                pass
        except (ssl.SSLError, OSError) as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    with client.wrap_socket(client_sock, server_hostname="127.0.0.1") as tls:
        der = tls.getpeercert(binary_form=True)
    thread.join(5)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_a_new_pair_is_loaded_and_a_mismatched_pair_never_breaks_the_live_context(tmp_path: Path) -> None:
    ca = new_ca("ca")
    first = ca.issue("svc", hosts=["127.0.0.1"])
    cert, key = first.write(tmp_path, "tls")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    reloader = CertReloader(context, cert, key, interval=60)
    first_serial = x509.load_pem_x509_certificate(first.cert_pem).serial_number
    assert served_serial(context, ca) == first_serial

    second = ca.issue("svc", hosts=["127.0.0.1"])
    cert.write_bytes(second.cert_pem)  # the key is not written yet: a half-rotated pair
    assert reloader.check() is False
    assert served_serial(context, ca) == first_serial, "the live context kept the old, complete pair"

    key.write_bytes(second.key_pem)
    assert reloader.check() is True
    assert served_serial(context, ca) == x509.load_pem_x509_certificate(second.cert_pem).serial_number
    assert reloader.check() is False, "nothing changed since the last reload"
