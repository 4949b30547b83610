"""The local cluster DNS (devmlops.harness.clusterdns): Service names resolve to ClusterIPs; nothing else is
answered from outside the cluster zone, so no query would ever be passed on."""

from __future__ import annotations

import socket
import struct

import pytest

from devmlops.harness.clusterdns import CLUSTER_DNS_IP, answer, manifests

SERVICES = {("devmlops-webhook", "devmlops-system"): "10.0.0.42"}


def lookup(name: str, namespace: str) -> str | None:
    return SERVICES.get((name, namespace))


def query(name: str, qtype: int = 1, ident: int = 0x1234, flags: int = 0x0100, extra: bytes = b"") -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split("."))
    arcount = 1 if extra else 0
    return (
        struct.pack("!HHHHHH", ident, flags, 1, 0, 0, arcount) + labels + b"\0" + struct.pack("!HH", qtype, 1) + extra
    )


def parsed(response: bytes | None) -> tuple[int, int, int, list[str]]:
    """(id, rcode, answer count, the A records' addresses)."""
    assert response is not None
    ident, flags, qdcount, ancount = struct.unpack_from("!HHHH", response)
    assert flags & 0x8000, "a response"
    assert flags & 0x0400, "authoritative"
    assert not flags & 0x0080, "recursion is never available"
    offset = 12
    for _ in range(qdcount):
        while response[offset]:
            offset += response[offset] + 1
        offset += 5
    addresses = []
    for _ in range(ancount):
        pointer, rtype, _cls, ttl, size = struct.unpack_from("!HHHIH", response, offset)
        assert (pointer, rtype, ttl) == (0xC00C, 1, 5)
        addresses.append(socket.inet_ntoa(response[offset + 12 : offset + 12 + size]))
        offset += 12 + size
    return ident, flags & 0xF, ancount, addresses


def test_a_service_name_resolves_to_its_cluster_ip_with_the_query_id_and_question_echoed() -> None:
    packet = query("devmlops-webhook.devmlops-system.svc.cluster.local", ident=0xBEEF)
    response = answer(packet, lookup)
    assert parsed(response) == (0xBEEF, 0, 1, ["10.0.0.42"])
    assert response is not None
    assert response[12 : len(packet)] == packet[12:]  # the question, as asked


def test_names_are_case_insensitive_and_an_edns_record_is_tolerated() -> None:
    opt = b"\0" + struct.pack("!HHIH", 41, 1232, 0, 0)
    assert parsed(answer(query("DEVMLOPS-Webhook.devmlops-system.SVC.cluster.local", extra=opt), lookup))[1:] == (
        0,
        1,
        ["10.0.0.42"],
    )


def test_an_existing_name_has_no_ipv6_record() -> None:
    assert parsed(answer(query("devmlops-webhook.devmlops-system.svc.cluster.local", qtype=28), lookup))[1:] == (
        0,
        0,
        [],
    )


@pytest.mark.parametrize(
    "name",
    [
        "other.devmlops-system.svc.cluster.local",
        # The resolver's search path tries these first for "devmlops-webhook.devmlops-system.svc" (ndots:5).
        "devmlops-webhook.devmlops-system.svc.devmlops-system.svc.cluster.local",
        "devmlops-webhook.devmlops-system.svc.svc.cluster.local",
        "cluster.local",
    ],
)
def test_other_names_in_the_cluster_zone_do_not_exist(name: str) -> None:
    assert parsed(answer(query(name), lookup))[1:] == (3, 0, [])


@pytest.mark.parametrize("name", ["pypi.org", "devmlops-webhook.devmlops-system.svc", "local"])
def test_names_outside_the_cluster_zone_are_refused_never_passed_on(name: str) -> None:
    assert parsed(answer(query(name), lookup))[1:] == (5, 0, [])


def test_malformed_packets_get_a_format_error_or_no_answer() -> None:
    assert answer(b"\x00\x01", lookup) is None
    assert answer(query("a.b.svc.cluster.local", flags=0x8000), lookup) is None  # a response is not answered
    assert parsed(answer(query("a.b.svc.cluster.local")[:-3], lookup))[1] == 1
    two = bytearray(query("a.b.svc.cluster.local"))
    two[5] = 2  # QDCOUNT 2
    assert parsed(answer(bytes(two), lookup))[1] == 1


def test_the_addon_is_a_service_at_the_kubelets_cluster_dns_address_on_port_53() -> None:
    documents = manifests("devmlops.local/devmlops:local")
    (service,) = [d for d in documents if d["kind"] == "Service"]
    assert service["spec"]["clusterIP"] == CLUSTER_DNS_IP
    assert {(p["protocol"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        ("UDP", 53, 5353),
        ("TCP", 53, 5353),
    }
    (role,) = [d for d in documents if d["kind"] == "ClusterRole"]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["services"], "verbs": ["list"]}]
