"""The local node runs containers for real, through the real API server: the scheduler binds, the kubelet starts
containers in containerd, kube-proxy routes a ClusterIP, and nothing a pod sends leaves the pod network.

Runs with DEVMLOPS_NODE=1 (root, Debian's containerd; see docs/development.md); skips saying why otherwise, and
DEVMLOPS_REQUIRE_NODE=1 turns the skip into a failure. Images are local (imported by the node), never pulled."""

from __future__ import annotations

import ipaddress
import re
import subprocess
from typing import Any

import pytest
from kubernetes import client as k8s

from devmlops.harness.controlplane import ControlPlane
from devmlops.harness.images import DEBIAN_IMAGE, debian_archive, image_cache_root
from devmlops.harness.node import BUSYBOX_IMAGE, GUARD_CHAIN, NODE_NAME, POD_CIDR, Node, NodeUnavailableError
from tests.integration.support import eventually

pytestmark = pytest.mark.timeout(300)

# Static busybox's wget crashes inside a container (static glibc, name service); nc speaks HTTP well enough.
HTTP_GET = "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {host} {port}"


def container(name: str, script: str, *, image: str = BUSYBOX_IMAGE, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", script],
        **extra,
    }


def run_pod(
    core: k8s.CoreV1Api, namespace: str, name: str, script: str, *, image: str = BUSYBOX_IMAGE, timeout: float = 90
) -> k8s.V1Pod:
    """Create a Pod that runs ``script`` once; return it when it has finished (Succeeded or Failed)."""
    spec = {"restartPolicy": "Never", "containers": [container(name, script, image=image)]}
    body = {"metadata": {"name": name}, "spec": spec}
    core.create_namespaced_pod(namespace, body)

    def finished() -> k8s.V1Pod | None:
        pod = core.read_namespaced_pod(name, namespace)
        return pod if pod.status.phase in ("Succeeded", "Failed") else None

    pod: k8s.V1Pod = eventually(finished, timeout=timeout, what=f"pod {namespace}/{name} finishing")
    return pod


def exit_code(pod: k8s.V1Pod) -> int:
    (status,) = pod.status.container_statuses
    assert status.state.terminated is not None, status.state
    return int(status.state.terminated.exit_code)


def test_a_pod_with_a_local_image_runs_on_the_node_and_succeeds(
    node: Node, admin: k8s.ApiClient, namespace: str
) -> None:
    core = k8s.CoreV1Api(admin)
    pod = run_pod(core, namespace, "hello", 'echo "hello from $(hostname)"; test -x /bin/busybox')

    assert pod.status.phase == "Succeeded"
    assert exit_code(pod) == 0
    assert pod.spec.node_name == NODE_NAME
    assert ipaddress.ip_address(pod.status.pod_ip) in ipaddress.ip_network(POD_CIDR)
    # The log comes from the kubelet through the API server (its client certificate, the kubelet's authorization).
    assert core.read_namespaced_pod_log("hello", namespace) == "hello from hello\n"


def test_a_pod_that_exits_non_zero_fails_with_its_exit_code(node: Node, admin: k8s.ApiClient, namespace: str) -> None:
    pod = run_pod(k8s.CoreV1Api(admin), namespace, "fails", "echo about to fail; exit 3")

    assert pod.status.phase == "Failed"
    assert exit_code(pod) == 3


def test_a_deployment_rolls_out_and_rolls_to_a_new_template(node: Node, admin: k8s.ApiClient, namespace: str) -> None:
    apps = k8s.AppsV1Api(admin)
    probe = {"tcpSocket": {"port": 8080}, "periodSeconds": 1}
    server = container("web", "mkdir /www && echo v=$VERSION > /www/index.html && exec httpd -f -p 8080 -h /www")
    server |= {"readinessProbe": probe, "env": [{"name": "VERSION", "value": "1"}]}
    body = {
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [server]}},
        },
    }
    apps.create_namespaced_deployment(namespace, body)

    def rolled_out(generation: int) -> bool:
        status = apps.read_namespaced_deployment("web", namespace).status
        return bool(
            (status.observed_generation or 0) >= generation
            and status.ready_replicas == 2
            and status.updated_replicas == 2
            and status.replicas == 2
        )

    eventually(lambda: rolled_out(1), timeout=120, what="deployment web with 2 ready replicas")
    first = {p.metadata.name for p in k8s.CoreV1Api(admin).list_namespaced_pod(namespace).items}

    server["env"] = [{"name": "VERSION", "value": "2"}]
    apps.patch_namespaced_deployment("web", namespace, {"spec": {"template": {"spec": {"containers": [server]}}}})
    eventually(lambda: rolled_out(2), timeout=120, what="deployment web rolled to its second template")

    pods = k8s.CoreV1Api(admin).list_namespaced_pod(namespace, label_selector="app=web").items
    running = [p for p in pods if p.status.phase == "Running" and p.metadata.deletion_timestamp is None]
    assert len(running) == 2
    assert not {p.metadata.name for p in running} & first, "the new template runs in new pods"
    assert all(p.spec.node_name == NODE_NAME for p in running)
    assert all(p.spec.containers[0].env[0].value == "2" for p in running)


def test_a_service_answers_another_pod_through_its_cluster_ip(node: Node, admin: k8s.ApiClient, namespace: str) -> None:
    core, apps = k8s.CoreV1Api(admin), k8s.AppsV1Api(admin)
    server = container(
        "httpd", "mkdir /www && echo served-by-$(hostname) > /www/index.html && exec httpd -f -p 8080 -h /www"
    )
    server["readinessProbe"] = {"tcpSocket": {"port": 8080}, "periodSeconds": 1}
    apps.create_namespaced_deployment(
        namespace,
        {
            "metadata": {"name": "echo"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "echo"}},
                "template": {"metadata": {"labels": {"app": "echo"}}, "spec": {"containers": [server]}},
            },
        },
    )
    service = core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "echo"},
            "spec": {"selector": {"app": "echo"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    )
    cluster_ip = service.spec.cluster_ip

    def ready_endpoints() -> bool:
        slices = k8s.DiscoveryV1Api(admin).list_namespaced_endpoint_slice(
            namespace, label_selector="kubernetes.io/service-name=echo"
        )
        ready = [e for s in slices.items for e in (s.endpoints or []) if e.conditions and e.conditions.ready]
        return len(ready) == 2

    eventually(ready_endpoints, timeout=120, what="two ready endpoints behind Service echo")

    pod = run_pod(core, namespace, "client", HTTP_GET.format(host=cluster_ip, port=80))

    log = core.read_namespaced_pod_log("client", namespace)
    assert pod.status.phase == "Succeeded", log
    assert "HTTP/1.1 200 OK" in log
    servers = {p.metadata.name for p in core.list_namespaced_pod(namespace, label_selector="app=echo").items}
    answered = re.search(r"served-by-(\S+)", log)
    assert answered is not None, log
    assert answered.group(1) in servers


def _guard_drops() -> int:
    listing = subprocess.run(
        ["iptables", "-w", "-t", "filter", "-L", GUARD_CHAIN, "-v", "-n", "-x"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sum(int(line.split()[0]) for line in listing.splitlines() if "DROP" in line)


def test_traffic_from_a_pod_to_outside_the_pod_network_is_dropped_on_this_machine(
    node: Node, admin: k8s.ApiClient, namespace: str
) -> None:
    before = _guard_drops()
    # 203.0.113.1 is TEST-NET-3 (documentation only): were the guard missing, nothing real would be reached.
    pod = run_pod(k8s.CoreV1Api(admin), namespace, "outside", HTTP_GET.format(host="203.0.113.1", port=80))

    assert pod.status.phase == "Failed"
    assert exit_code(pod) != 0
    assert _guard_drops() > before, "the SYN to 203.0.113.1 was dropped by the node's guard chain"


@pytest.mark.timeout(900)
def test_a_debian_image_built_here_runs_python_that_fetches_from_a_pod_over_http(
    node: Node, admin: k8s.ApiClient, namespace: str
) -> None:
    """The Debian image (debootstrap + umoci, cached in ~/.cache/devmlops/images; the first build takes about 40 s and
    reads Debian's archive) runs a real glibc userland: python3's urllib reaches a busybox httpd Pod by its IP."""
    node.import_image(debian_archive(image_cache_root()), DEBIAN_IMAGE)
    core = k8s.CoreV1Api(admin)
    server = container("httpd", "mkdir /www && echo from-busybox > /www/index.html && exec httpd -f -p 8080 -h /www")
    server["readinessProbe"] = {"tcpSocket": {"port": 8080}, "periodSeconds": 1}
    core.create_namespaced_pod(namespace, {"metadata": {"name": "httpd"}, "spec": {"containers": [server]}})

    def ready_ip() -> str | None:
        pod = core.read_namespaced_pod("httpd", namespace)
        ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
        return str(pod.status.pod_ip) if ready else None

    ip = eventually(ready_ip, timeout=60, what="the httpd pod Ready")
    script = (
        "python3 -c 'import sys, urllib.request; "
        f'print(sys.version_info[:2], urllib.request.urlopen("http://{ip}:8080/", timeout=5).read().decode())\''
    )
    pod = run_pod(core, namespace, "python", script, image=DEBIAN_IMAGE)

    log = core.read_namespaced_pod_log("python", namespace)
    assert pod.status.phase == "Succeeded", log
    assert log == "(3, 11) from-busybox\n\n"


def test_a_second_node_on_the_same_machine_is_refused_and_leaves_the_running_one_alone(
    node: Node, control_plane: ControlPlane, admin: k8s.ApiClient, namespace: str
) -> None:
    with pytest.raises(NodeUnavailableError, match=r"another devmlops node runs on this machine \(pid \d+\)"):
        Node(control_plane, bin_dir=node.bin_dir).start()

    assert all(proc.running() for proc in node.processes().values())
    ready = k8s.CoreV1Api(admin).read_node(NODE_NAME).status.conditions
    assert any(c.type == "Ready" and c.status == "True" for c in ready)
    pod = run_pod(k8s.CoreV1Api(admin), namespace, "still", "echo still running")
    assert pod.status.phase == "Succeeded"
