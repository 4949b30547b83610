"""A registry that answers slowly holds the webhook's registry workers no longer than one lookup's deadline.

The mutating webhook asks whatever host a ModelDeployment names for the digest of a tag (core/pinning.py), and the
image signature checks read referrers from the host an image names; a namespace editor chooses those hosts. The
checker gives up on a lookup at its deadline, but its two worker threads used to run on: httpx's timeout bounds each
wait for the next bytes, not the whole read, so a registry that sends one byte a second kept a worker for days, and
two such tags from one namespace editor left no worker for any other team's lookups (every tag, image signature and
OCI model of the cluster denied). Here against real sockets on loopback: a dripping registry and a healthy one.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from devmlops.adapters.ocisig import ImageSignatureChecker, OciClient, OciError, RegistryUnreachable
from devmlops.core.pinning import parse_reference

MANIFEST = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}'
DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
DEADLINE = 1.0


class Registry:
    """``/v2/slow/...`` answers 200 and then drips a byte every 0.2 s (for at most ``drip_seconds``); anything else
    is the healthy registry's manifest with its digest."""

    def __init__(self, drip_seconds: float = 20.0) -> None:
        self.stop = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                pass

            def do_GET(self) -> None:
                with contextlib.suppress(ConnectionError):  # a client past its deadline has gone
                    self.send_response(200)
                    if self.path.startswith("/v2/slow/"):
                        self.send_header("Content-Length", "1000000")
                        self.end_headers()
                        ends = time.monotonic() + drip_seconds
                        while time.monotonic() < ends and not outer.stop.wait(0.2):
                            self.wfile.write(b" ")
                            self.wfile.flush()
                        return
                    self.send_header("Content-Length", str(len(MANIFEST)))
                    self.send_header("Docker-Content-Digest", DIGEST)
                    self.end_headers()
                    self.wfile.write(MANIFEST)

        outer = self
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def registry() -> Iterator[Registry]:
    served = Registry()
    thread = threading.Thread(target=served.server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield served
    served.stop.set()
    served.server.shutdown()
    served.server.server_close()


def test_a_dripping_registry_is_given_up_within_the_lookups_deadline(registry: Registry) -> None:
    client = OciClient(plain_http=[registry.host], timeout=DEADLINE)
    started = time.monotonic()
    with pytest.raises(RegistryUnreachable) as raised:
        client.resolve(registry.host, "slow/server", "1.0")
    took = time.monotonic() - started
    client.close()
    assert took < DEADLINE + 1.0, f"the read of a dripping registry took {took:.1f}s, expected at most ~{DEADLINE}s"
    assert "deadline" in str(raised.value)


def test_two_dripping_tags_leave_the_lookups_of_others_answered(registry: Registry) -> None:
    """Mallory's two tags on her dripping registry are denied at the deadline; a tag on a healthy registry, asked
    after that, is still resolved (before the fix both workers were still reading her registry: denied too)."""
    checker = ImageSignatureChecker(OciClient(plain_http=[registry.host], timeout=DEADLINE), timeout_seconds=DEADLINE)
    try:
        for tag in ("a", "b"):
            with pytest.raises(OciError):
                checker.resolve(parse_reference(f"{registry.host}/slow/server:{tag}", field="spec.runtime.image"))
        time.sleep(DEADLINE + 1.0)  # her lookups are past their deadline: their workers must be free again
        healthy = parse_reference(f"{registry.host}/team/server:1.0", field="spec.runtime.image")
        assert checker.resolve(healthy) == DIGEST
    finally:
        registry.stop.set()
        checker.close()
