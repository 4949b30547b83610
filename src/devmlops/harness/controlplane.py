"""etcd + kube-apiserver on free loopback ports in a temporary folder, as controller-runtime's envtest does, and
kube-controller-manager beside them.

The controller manager makes the objects behave as in a cluster: Deployments make ReplicaSets and Pods, deleting an
owner garbage-collects its children, deleted namespaces really go away. Without a node (``devmlops.harness.node``)
Pods stay Pending. What the API server stores and what it does with CRDs and admission webhooks is real.

The API server is ready for a node: the Node authorizer beside RBAC, a client certificate for the calls it makes to a
kubelet (logs, exec; in system:masters), the kubelet's serving certificate checked against the harness CA, and static
token users for the kubelet, the scheduler and kube-proxy (RBAC's default bindings give the last two their rights).
"""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import yaml

from devmlops.adapters.pki import KeyPair, new_ca, new_signing_key
from devmlops.errors import HarnessError
from devmlops.harness.processes import Lifecycle, ManagedProcess, free_port

__all__ = [
    "CONTROLLER_MANAGER_USER",
    "DEFAULT_USERS",
    "KSERVE_USER",
    "KUBERNETES_SERVICE_IP",
    "NODE_NAME",
    "NODE_USER",
    "OPERATOR_USER",
    "PROXY_USER",
    "SCHEDULER_USER",
    "SERVICE_CIDR",
    "ControlPlane",
    "User",
    "find_tools",
    "machine_ipv4",
]

REQUIRED_TOOLS = ("etcd", "kube-apiserver")
# The Service network: ClusterIPs exist only in this machine's iptables rules (kube-proxy, when the node runs).
SERVICE_CIDR = "10.0.0.0/24"
KUBERNETES_SERVICE_IP = "10.0.0.1"  # the first address of SERVICE_CIDR: the API server's own Service
# The one node a local cluster can have, and the users its parts act as (the Node authorizer and NodeRestriction
# know a kubelet by its name, system:node:<node> in system:nodes).
NODE_NAME = "devmlops-node"
CONTROLLER_MANAGER = "kube-controller-manager"

# The controllers a model server's life goes through (workloads, their Pods, garbage collection, namespaces), the
# service accounts they act as, and what a node needs (inert without one): the node lifecycle controller (it lifts the
# not-ready taint a kubelet registers with), EndpointSlices for kube-proxy, and the collector of Pods whose node is
# gone. Volume, IPAM and certificate controllers are left out: the local node needs none.
CONTROLLERS = (
    "garbage-collector-controller",
    "deployment-controller",
    "replicaset-controller",
    # ReplicationControllers are never sent to the webhook; their Pods are (the attack tests make some).
    "replicationcontroller-controller",
    "statefulset-controller",
    "daemonset-controller",
    "job-controller",
    "cronjob-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "node-lifecycle-controller",
    "endpointslice-controller",
    "pod-garbage-collector-controller",
    # Every namespace's kube-root-ca.crt ConfigMap, which a Pod's service account token volume projects.
    "root-ca-certificate-publisher-controller",
    # The rules of the built-in edit, admin and view roles (aggregated from system:aggregate-to-*), which the attack
    # tests bind their namespace editor to.
    "clusterrole-aggregation-controller",
)


@dataclass(frozen=True, slots=True)
class User:
    """A user the API server knows through its static token file."""

    name: str
    groups: tuple[str, ...] = ()
    token: str = field(default="", compare=False)


# The identities the webhook trusts to write model servers, as in a cluster: the operator's and KServe's service
# accounts (here static-token users of those names, in system:masters for their rights) and the controller manager.
OPERATOR_USER = "system:serviceaccount:devmlops-system:devmlops-operator"
KSERVE_USER = "system:serviceaccount:kserve:kserve-controller-manager"
CONTROLLER_MANAGER_USER = "system:kube-controller-manager"
NODE_USER = f"system:node:{NODE_NAME}"
SCHEDULER_USER = "system:kube-scheduler"
PROXY_USER = "system:kube-proxy"

DEFAULT_USERS: tuple[User, ...] = (
    User("admin", ("system:masters",)),
    User("alice", ("devmlops:ml-engineers",)),
    User("bob", ("devmlops:approvers",)),
    User("carol", ("devmlops:ml-engineers", "devmlops:approvers")),
    # The attacker of docs/threat-model.md: rights come from a namespace editor Role that a test binds.
    User("mallory", ("devmlops:ml-engineers", "devmlops:approvers")),
    User(OPERATOR_USER, ("system:masters",)),
    User(KSERVE_USER, ("system:masters",)),
    User(CONTROLLER_MANAGER_USER, ()),
    User(NODE_USER, ("system:nodes",)),
    User(SCHEDULER_USER, ()),
    User(PROXY_USER, ()),
)


def machine_ipv4() -> str:
    """The first global IPv4 address of this machine: the kubelet's InternalIP (it refuses a loopback address) and,
    for Pods, the API server's. Traffic to it from this machine or its Pods never leaves the machine."""
    try:
        done = subprocess.run(
            ["ip", "-j", "-4", "addr", "show", "scope", "global"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise HarnessError(f"`ip -j -4 addr show scope global` failed: {exc}") from exc
    for link in json.loads(done.stdout or "[]"):
        for info in link.get("addr_info", []):
            if info.get("local"):
                return str(info["local"])
    raise HarnessError("this machine has no global IPv4 address (the node's and the API server's address for Pods)")


def find_tools(bin_dir: Path | None, tools: Sequence[str] = REQUIRED_TOOLS) -> Path:
    """The folder with ``tools`` (etcd and kube-apiserver unless told), or a ``HarnessError`` that says how to get
    them: a folder from KUBEBUILDER_ASSETS often holds only those two, so name what is missing."""
    if bin_dir is None:
        raise HarnessError(
            "no control-plane tools: run `make tools` (needs Go >= 1.24) and set DEVMLOPS_TOOLS_DIR to the "
            "folder it prints, or set KUBEBUILDER_ASSETS to a folder with kube-apiserver and etcd"
        )
    missing = [tool for tool in tools if not (bin_dir / tool).exists()]
    if missing:
        raise HarnessError(
            f"{bin_dir} lacks {', '.join(missing)}: run `make tools` and use the folder it prints (it builds what "
            "is missing into ~/.cache/devmlops/tools, also beside a KUBEBUILDER_ASSETS folder that has only "
            "kube-apiserver and etcd)"
        )
    return bin_dir


class ControlPlane(Lifecycle):
    """Start with ``start()`` or ``with ControlPlane(...) as cp:``; ``stop()`` leaves no process behind."""

    def __init__(
        self,
        *,
        bin_dir: Path,
        crd_paths: Sequence[Path] = (),
        users: Iterable[User] = DEFAULT_USERS,
        workdir: Path | None = None,
        controller_manager: bool | None = None,
        pod_clients: bool = False,
        log: Callable[[str], None] = lambda _msg: None,
    ) -> None:
        """``controller_manager``: True requires kube-controller-manager in ``bin_dir`` (tests must not lose their
        controllers silently), False never starts it, None starts it when the binary is there.

        ``pod_clients``: Pods on the local node talk to this API server as in a cluster (the chart's webhook and
        operator, say): it listens on every interface and advertises this machine's address, which the ``kubernetes``
        Service's endpoints then name (a Pod cannot reach the host's loopback; the node lets only loopback and the pod
        network reach the port, see ``node.Node``); its certificate names that address, the Service's ClusterIP and
        DNS names; and the ServiceAccount admission plugin gives each Pod its service account's token. Off by default:
        then a Pod created before its namespace's ``default`` ServiceAccount exists is not refused."""
        self.bin_dir = find_tools(bin_dir)
        if controller_manager:
            find_tools(bin_dir, (CONTROLLER_MANAGER,))
        self.with_controller_manager = (
            (self.bin_dir / CONTROLLER_MANAGER).exists() if controller_manager is None else controller_manager
        )
        self.crd_paths = list(crd_paths)
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="devmlops-cp-"))
        self._log = log
        self.users = {user.name: User(user.name, user.groups, _token(user.name)) for user in users}
        if "admin" not in self.users:
            raise HarnessError("the control plane needs a user named 'admin' in system:masters")
        self.pod_clients = pod_clients
        self.advertise_address = machine_ipv4() if pod_clients else "127.0.0.1"
        self.port = 0
        self._etcd: ManagedProcess | None = None
        self._apiserver: ManagedProcess | None = None
        self._controller_manager: ManagedProcess | None = None
        self.ca_file = self.workdir / "pki" / "ca.crt"

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> Self:
        started = time.monotonic()
        try:
            self._write_pki()
            self._start_etcd()
            self._start_apiserver()
            self._wait_ready()
            for user in self.users:
                self.write_kubeconfig(user)
            if self.with_controller_manager:
                self._start_controller_manager()
            self._log(f"control plane ready at {self.url} in {time.monotonic() - started:.1f}s")
            if self.crd_paths:
                self.install_crds(self.crd_paths)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for proc in (self._controller_manager, self._apiserver, self._etcd):
            if proc is not None:
                proc.stop()
        self._controller_manager = self._apiserver = self._etcd = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def restart_apiserver(self) -> None:
        """Stop and start kube-apiserver on the same port and etcd (for fault tests)."""
        if self._apiserver is not None:
            self._apiserver.stop()
        self._start_apiserver(port=self.port)
        self._wait_ready()

    # -- facts -----------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def token(self, user: str = "admin") -> str:
        return self.users[user].token

    def kubeconfig(self, user: str = "admin") -> Path:
        # KUBECONFIG is a colon-separated list: a service account's name must not split the path.
        return self.workdir / f"kubeconfig-{user.replace(':', '_')}.yaml"

    @property
    def apiserver_log(self) -> Path:
        return self.workdir / "kube-apiserver.log"

    @property
    def controller_manager_log(self) -> Path:
        return self.workdir / "kube-controller-manager.log"

    def processes(self) -> dict[str, ManagedProcess]:
        """The started processes by name (to check or measure them, or to read their logs when a test fails)."""
        named = {"etcd": self._etcd, "kube-apiserver": self._apiserver, CONTROLLER_MANAGER: self._controller_manager}
        return {name: proc for name, proc in named.items() if proc is not None}

    # -- steps -----------------------------------------------------------------------------------------------
    def _write_pki(self) -> None:
        pki = self.workdir / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        ca = new_ca("devmlops-local-ca")
        ca.pair.write(pki, "ca")
        hosts = ["127.0.0.1", "localhost", "kubernetes.default.svc"]
        if self.pod_clients:
            hosts += [self.advertise_address, KUBERNETES_SERVICE_IP, "kubernetes", "kubernetes.default"]
            hosts += ["kubernetes.default.svc.cluster.local"]
        ca.issue("kube-apiserver", hosts=hosts).write(pki, "apiserver")
        # What the API server presents to a kubelet (logs, exec, port-forward): a client in system:masters.
        ca.issue("kube-apiserver-kubelet-client", organizations=["system:masters"], client=True).write(
            pki, "apiserver-kubelet-client"
        )
        sa: KeyPair = new_signing_key()
        (pki / "sa.pub").write_bytes(sa.cert_pem)
        (pki / "sa.key").write_bytes(sa.key_pem)
        (pki / "sa.key").chmod(0o600)
        rows = [f'{u.token},{u.name},{u.name},"{",".join(u.groups)}"' for u in self.users.values()]
        tokens = pki / "tokens.csv"
        tokens.write_text("\n".join(rows) + "\n")
        tokens.chmod(0o600)

    def _start_etcd(self) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        argv = [
            str(self.bin_dir / "etcd"),
            "--name=devmlops",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={self.etcd_url}",
            f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=devmlops=http://127.0.0.1:{peer}",
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ]
        self._etcd = ManagedProcess("etcd", argv, log_path=self.workdir / "etcd.log").start()

    def _start_apiserver(self, port: int | None = None) -> None:
        self.port = port or free_port()
        pki = self.workdir / "pki"
        argv = [
            str(self.bin_dir / "kube-apiserver"),
            f"--etcd-servers={self.etcd_url}",
            f"--cert-dir={pki}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--secure-port={self.port}",
            f"--bind-address={'0.0.0.0' if self.pod_clients else '127.0.0.1'}",  # noqa: S104 - see pod_clients
            f"--advertise-address={self.advertise_address}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--service-account-issuer={self.url}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--token-auth-file={pki / 'tokens.csv'}",
            "--authorization-mode=Node,RBAC",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            f"--kubelet-certificate-authority={self.ca_file}",
            "--kubelet-preferred-address-types=InternalIP",
            *([] if self.pod_clients else ["--disable-admission-plugins=ServiceAccount"]),
            "--allow-privileged=true",
            "--enable-priority-and-fairness=false",
            "--v=1",
        ]
        self._apiserver = ManagedProcess("kube-apiserver", argv, log_path=self.apiserver_log).start()

    def _start_controller_manager(self) -> None:
        """Each controller acts as its own service account (--use-service-account-credentials), as in a cluster:
        the admission webhook trusts exactly those identities (system:serviceaccount:kube-system:<controller>), so
        a test sees the same requests a cluster would send."""
        pki = self.workdir / "pki"
        argv = [
            str(self.bin_dir / CONTROLLER_MANAGER),
            f"--kubeconfig={self.kubeconfig(CONTROLLER_MANAGER_USER)}",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={self.ca_file}",
            f"--controllers={','.join(CONTROLLERS)}",
            "--leader-elect=false",
            "--secure-port=0",
            "--v=1",
        ]
        self._controller_manager = ManagedProcess(
            CONTROLLER_MANAGER, argv, log_path=self.controller_manager_log
        ).start()
        self._wait_controllers()

    def _wait_controllers(self, timeout: float = 60.0) -> None:
        """Ready when the service-account controller has made kube-system's default ServiceAccount: by then the
        controllers have their credentials and informers (a Deployment created earlier would still be handled, but
        a test asserting on it would wait out its own timeout instead of this one)."""
        assert self._controller_manager is not None
        context = ssl.create_default_context(cafile=str(self.ca_file))
        headers = {"Authorization": f"Bearer {self.token()}"}
        url = f"{self.url}/api/v1/namespaces/kube-system/serviceaccounts/default"
        request = urllib.request.Request(url, headers=headers)  # noqa: S310 - our https URL

        def ready() -> bool:
            try:
                with urllib.request.urlopen(request, context=context, timeout=2) as response:  # noqa: S310
                    return bool(response.status == 200)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                return False

        self._controller_manager.wait_until(ready, timeout=timeout, what="kube-system's default ServiceAccount")

    def _wait_ready(self, timeout: float = 60.0) -> None:
        if self._apiserver is None or self._etcd is None:
            raise HarnessError("the control plane was not started")
        context = ssl.create_default_context(cafile=str(self.ca_file))
        headers = {"Authorization": f"Bearer {self.token()}"}
        request = urllib.request.Request(f"{self.url}/readyz", headers=headers)  # noqa: S310 - our https URL

        def ready() -> bool:
            assert self._etcd is not None
            self._etcd.ensure_running()
            try:
                with urllib.request.urlopen(request, context=context, timeout=2) as response:  # noqa: S310
                    return bool(response.status == 200)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                return False

        self._apiserver.wait_until(ready, timeout=timeout, what="/readyz")

    def write_kubeconfig(self, user: str) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "devmlops-local",
                    "cluster": {"server": self.url, "certificate-authority": str(self.ca_file)},
                }
            ],
            "users": [{"name": user, "user": {"token": self.token(user)}}],
            "contexts": [{"name": user, "context": {"cluster": "devmlops-local", "user": user}}],
            "current-context": user,
        }
        path = self.kubeconfig(user)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)
        return path

    def install_crds(self, paths: Iterable[Path], timeout: float = 30.0) -> list[str]:
        """Create (or replace) the CRDs in ``paths`` and wait until each is Established and served."""
        from devmlops.adapters.kube import api_client, apply_crds

        documents = [doc for path in paths for doc in load_yaml_documents(path)]
        with api_client(self.kubeconfig()) as client:
            names = apply_crds(client, documents, timeout=timeout)
        self._log(f"installed {len(names)} CRDs")
        return names


# libyaml's safe loader when PyYAML has it: KServe's CRDs are 3.5 MB of YAML, 4 s with the pure-Python loader.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    """Every mapping document in a YAML file (or in every *.yaml file of a folder, sorted)."""
    files = sorted(path.glob("**/*.yaml")) if path.is_dir() else [path]
    documents: list[dict[str, Any]] = []
    for file in files:
        try:
            loaded = yaml.load_all(file.read_text(), Loader=_YAML_LOADER)
            documents.extend(doc for doc in loaded if isinstance(doc, dict))
        except yaml.YAMLError as exc:
            raise HarnessError(f"{file}: not valid YAML: {exc}") from exc
    return documents


def _token(name: str) -> str:
    import secrets

    return f"{name}-{secrets.token_hex(16)}"
