"""A cluster DNS for the local node: what CoreDNS's ``kubernetes`` plugin is in a cluster, for Services only.

Pods of dnsPolicy ClusterFirst get ``nameserver <CLUSTER_DNS_IP>`` and the search path ``<namespace>.svc.cluster.local
svc.cluster.local cluster.local`` from the kubelet (``Node(cluster_dns=...)``), so ``https://<service>.<namespace>.svc``
works as in a cluster (the chart's ``helm test`` Pod, a model store's URI). This server answers A queries for
``<service>.<namespace>.svc.cluster.local`` with the Service's ClusterIP, NXDOMAIN for any other name in
``cluster.local`` and REFUSED for every name outside it: it never recurses, so no query leaves the machine.

It runs as a Pod of the devmlops image (``python -m devmlops.harness.clusterdns``) in kube-system, behind the Service
``kube-dns`` at ``CLUSTER_DNS_IP``, over UDP and TCP on port 5353 (no privilege to bind 53), and reads Services with its
service account (``manifests()`` renders all of it). The packet code (``answer``) is pure and unit-tested.
"""

from __future__ import annotations

import json
import os
import socket
import socketserver
import ssl
import struct
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "CLUSTER_DNS_IP",
    "DNS_PORT",
    "ServiceTable",
    "answer",
    "manifests",
    "service_name",
]

CLUSTER_DNS_IP = "10.0.0.10"  # in the control plane's SERVICE_CIDR, as kube-dns's usual 10.96.0.10
DNS_PORT = 5353
ZONE = ("cluster", "local")
TTL = 5
_A, _AAAA, _IN = 1, 28, 1
NOERROR, FORMERR, NXDOMAIN, REFUSED = 0, 1, 3, 5
Lookup = Callable[[str, str], str | None]


def _question(packet: bytes) -> tuple[list[str], int, int, int]:
    """The first question's labels (lower-cased), type, class and where the question ends; ValueError if malformed."""
    labels, offset = [], 12
    while True:
        if offset >= len(packet):
            raise ValueError("truncated name")
        length = packet[offset]
        offset += 1
        if length == 0:
            break
        if length & 0xC0 or offset + length > len(packet):  # no compression in a question
            raise ValueError("bad label")
        labels.append(packet[offset : offset + length].decode("ascii", "replace").lower())
        offset += length
    if offset + 4 > len(packet):
        raise ValueError("truncated question")
    qtype, qclass = struct.unpack_from("!HH", packet, offset)
    return labels, qtype, qclass, offset + 4


def service_name(labels: list[str]) -> tuple[str, str] | None:
    """(service, namespace) when ``labels`` spell ``<service>.<namespace>.svc.cluster.local``."""
    if len(labels) == 5 and labels[2] == "svc" and tuple(labels[3:]) == ZONE:
        return labels[0], labels[1]
    return None


def answer(packet: bytes, lookup: Lookup) -> bytes | None:
    """The response to one DNS query (None for something that is no query: it gets no answer)."""
    if len(packet) < 12:
        return None
    ident, flags, qdcount = struct.unpack_from("!HHH", packet)
    if flags & 0x8000:  # a response, not a query
        return None
    opcode, recursion_desired = flags & 0x7800, flags & 0x0100

    def reply(rcode: int, question: bytes = b"", records: bytes = b"", count: int = 0) -> bytes:
        header = struct.pack(
            "!HHHHHH", ident, 0x8000 | opcode | 0x0400 | recursion_desired | rcode, 1 if question else 0, count, 0, 0
        )
        return header + question + records

    if opcode != 0 or qdcount != 1:
        return reply(FORMERR)
    try:
        labels, qtype, qclass, end = _question(packet)
    except ValueError:
        return reply(FORMERR)
    question = packet[12:end]
    if tuple(labels[-2:]) != ZONE or len(labels) < 2:
        return reply(REFUSED, question)
    found = service_name(labels)
    address = lookup(*found) if found is not None else None
    if address is None:
        return reply(NXDOMAIN, question)
    if qclass != _IN or qtype != _A:
        return reply(NOERROR, question)  # the name exists, with no record of that type (AAAA: no IPv6 here)
    record = struct.pack("!HHHIH", 0xC00C, _A, _IN, TTL, 4) + socket.inet_aton(address)
    return reply(NOERROR, question, record, 1)


class ServiceTable:
    """ClusterIPs by (name, namespace), listed from the API server every ``interval`` seconds and again (at most
    every half second) when asked for a name it does not know, so a Service created a moment ago resolves."""

    def __init__(self, list_services: Callable[[], list[tuple[str, str, str]]], interval: float = 2.0) -> None:
        self._list = list_services
        self._interval = interval
        self._lock = threading.Lock()
        self._addresses: dict[tuple[str, str], str] = {}
        self._listed = 0.0

    def refresh(self) -> None:
        addresses = {(name, namespace): ip for name, namespace, ip in self._list()}
        with self._lock:
            self._addresses, self._listed = addresses, time.monotonic()

    def lookup(self, name: str, namespace: str) -> str | None:
        with self._lock:
            found, listed = self._addresses.get((name, namespace)), self._listed
        if found is None and time.monotonic() - listed > 0.5:
            try:
                self.refresh()
            except Exception as exc:
                print(f"clusterdns: listing Services failed: {exc}", file=sys.stderr, flush=True)
            with self._lock:
                found = self._addresses.get((name, namespace))
        return found

    def follow(self) -> None:
        while True:
            time.sleep(self._interval)
            try:
                self.refresh()
            except Exception as exc:
                print(f"clusterdns: listing Services failed: {exc}", file=sys.stderr, flush=True)


def _in_cluster_services() -> Callable[[], list[tuple[str, str, str]]]:
    """List Services with the Pod's service account, by the standard library alone: the kubernetes client's in-cluster
    setup alone takes about 100 MiB in a Pod (measured), more than this server needs in all."""
    account = Path("/var/run/secrets/kubernetes.io/serviceaccount")
    url = f"https://{os.environ['KUBERNETES_SERVICE_HOST']}:{os.environ['KUBERNETES_SERVICE_PORT']}/api/v1/services"
    context = ssl.create_default_context(cafile=str(account / "ca.crt"))

    def list_services() -> list[tuple[str, str, str]]:
        token = (account / "token").read_text().strip()  # read each time: the kubelet rotates it
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, context=context, timeout=10) as response:  # noqa: S310
            items = json.load(response).get("items") or []
        found = []
        for service in items:
            ip = (service.get("spec") or {}).get("clusterIP")
            if ip and ip != "None":
                found.append((str(service["metadata"]["name"]), str(service["metadata"]["namespace"]), str(ip)))
        return found

    return list_services


def serve(table: ServiceTable, port: int = DNS_PORT) -> None:
    class Udp(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            data, sock = self.request
            response = answer(data, table.lookup)
            if response is not None:
                sock.sendto(response, self.client_address)

    class Tcp(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            while True:
                size = self.rfile.read(2)
                if len(size) < 2:
                    return
                response = answer(self.rfile.read(struct.unpack("!H", size)[0]), table.lookup)
                if response is None:
                    return
                self.wfile.write(struct.pack("!H", len(response)) + response)

    socketserver.ThreadingUDPServer.allow_reuse_address = True
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    udp = socketserver.ThreadingUDPServer(("0.0.0.0", port), Udp)  # noqa: S104 - inside the Pod's network namespace
    tcp = socketserver.ThreadingTCPServer(("0.0.0.0", port), Tcp)  # noqa: S104
    threading.Thread(target=tcp.serve_forever, daemon=True).start()
    threading.Thread(target=table.follow, daemon=True).start()
    print(f"clusterdns: serving {'.'.join(ZONE)} on port {port} (UDP and TCP)", flush=True)
    udp.serve_forever()


def manifests(image: str, namespace: str = "kube-system") -> list[dict[str, Any]]:
    """The DNS server as a cluster addon: its service account and read access to Services, a Deployment of
    ``image`` (the devmlops image) and the Service ``kube-dns`` at ``CLUSTER_DNS_IP``."""
    name, labels = "cluster-dns", {"app.kubernetes.io/name": "cluster-dns"}
    container = {
        "name": "dns",
        "image": image,
        "imagePullPolicy": "Never",
        "command": ["python", "-m", "devmlops.harness.clusterdns"],
        "ports": [{"containerPort": DNS_PORT, "protocol": p, "name": f"dns-{p.lower()}"} for p in ("UDP", "TCP")],
        "readinessProbe": {"tcpSocket": {"port": DNS_PORT}, "periodSeconds": 2},
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}},
        "securityContext": {
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    pod = {
        "serviceAccountName": name,
        "dnsPolicy": "Default",  # it is the DNS; it reaches the API server by the kubernetes Service's address
        "containers": [container],
    }
    meta: Mapping[str, Any] = {"name": name, "namespace": namespace, "labels": labels}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": dict(meta)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": f"devmlops:{name}", "labels": labels},
            "rules": [{"apiGroups": [""], "resources": ["services"], "verbs": ["list"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"devmlops:{name}", "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": f"devmlops:{name}"},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": dict(meta),
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": pod},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": namespace, "labels": labels},
            "spec": {
                "clusterIP": CLUSTER_DNS_IP,
                "selector": labels,
                "ports": [
                    {"name": f"dns-{p.lower()}", "port": 53, "targetPort": DNS_PORT, "protocol": p}
                    for p in ("UDP", "TCP")
                ],
            },
        },
    ]


def main() -> None:
    table = ServiceTable(_in_cluster_services())
    table.refresh()
    serve(table)


if __name__ == "__main__":
    main()
