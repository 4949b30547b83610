"""The canary's Service by its absolute name, so that the Pod's DNS search path cannot answer for it first.

The stable version's guard forwards a rollout's share to ``http://<md>-canary.<namespace>.svc:<port>`` (the renderer
does not know the cluster's DNS domain). A Pod's resolver has ``ndots:5`` and searches ``<pod namespace>.svc.<domain>``
first, so that name, with two dots, was first asked as ``<md>-canary.<namespace>.svc.<namespace>.svc.<domain>``
(the canary is in the Pod's own namespace), then as ``<md>-canary.<namespace>.svc.svc.<domain>``. CoreDNS answers the
first for a Service named ``svc`` in the model's namespace when that namespace is named ``tcp``, ``udp``, ``sctp`` or
``any`` (a port and protocol), and the second for an endpoint ``<md>-canary`` of a Service named after the model's
namespace in a namespace named ``svc``: Services their editors write. The guard learns the domain where the kubelet
wrote it, the ``svc.<domain>`` entry of its resolv.conf search list, and asks for
``<md>-canary.<namespace>.svc.<domain>.`` (the final dot: no search at all).
"""

from __future__ import annotations

import re

from devmlops.core.guard import Split

__all__ = ["absolute_split", "cluster_domain"]

_DOMAIN = re.compile(r"^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_SERVICE_HOST = re.compile(r"^(?P<host>[a-z0-9-]+\.(?P<namespace>[a-z0-9-]+)\.svc)(?P<port>:\d{1,5})?$")


def cluster_domain(resolv_conf: str, namespace: str = "") -> str | None:
    """The cluster's DNS domain from a Pod's resolv.conf (the ``svc.<domain>`` search entry the kubelet writes for
    ``dnsPolicy: ClusterFirst``), or None where there is none (not in a cluster Pod). The last ``search`` line counts,
    as for the resolver. The kubelet writes ``<namespace>.svc.<domain> svc.<domain> <domain>``: with the Pod's
    ``namespace``, the domain is one whose ``<namespace>.svc.<domain>`` entry is there too, since in a namespace named
    "svc" the first entry, ``svc.svc.<domain>``, starts with "svc." as well (read as the domain ``svc.<domain>``, it
    made the canary's name an endpoint of a headless Service "svc" there, the namespace editor's; round 3 review)."""
    search: list[str] = []
    for line in resolv_conf.splitlines():
        fields = line.split()
        if fields and fields[0] == "search":
            search = [entry.rstrip(".").lower() for entry in fields[1:]]
    domains = [entry[len("svc.") :] for entry in search if entry.startswith("svc.")]
    domains = [domain for domain in domains if _DOMAIN.match(domain)]
    paired = [domain for domain in domains if f"{namespace}.svc.{domain}" in search]
    if namespace and paired:
        return paired[0]
    if namespace == "svc":  # no kubelet triple: its first "svc." entry may be the namespace's own
        return None
    return domains[0] if domains else None


def absolute_split(split: Split | None, resolv_conf: str) -> Split | None:
    """``split`` with its upstream ``<service>.<namespace>.svc`` written as the absolute ``...svc.<domain>.``; any
    other upstream (an address, a name already absolute), or no cluster domain to be found, leaves it as it is."""
    if split is None:
        return None
    scheme, sep, authority = split.upstream.partition("://")
    found = _SERVICE_HOST.match(authority.lower())
    domain = cluster_domain(resolv_conf, found["namespace"]) if found is not None else None
    if not sep or found is None or domain is None:
        return split
    upstream = f"{scheme}://{found['host']}.{domain}.{found['port'] or ''}"
    return Split(upstream=upstream, weight=split.weight)
