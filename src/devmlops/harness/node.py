"""A node that runs containers beside a local control plane: containerd (Debian's, with runc and the CNI plugins),
kubelet, kube-scheduler and kube-proxy (built from the Kubernetes module by ``hack/tools.sh``).

Everything a node keeps lives in one temporary folder: containerd's root, state and socket, the kubelet's root and
pod logs, the CNI configuration and IP allocations. What a node cannot keep there is host-wide and recorded before
the node starts (``/run/devmlops-node/host-state.json``) so that ``stop()`` puts it back: the bridge
``devmlops0``, the iptables chains the kubelet, kube-proxy and the CNI plugins add (KUBE-*, CNI-*, and our own
DEVMLOPS-NODE guard), the sysctls the kubelet, kube-proxy and the bridge plugin change (ip_forward, panic,
overcommit, ...), the pods' cgroups (all under ``/devmlops-node`` in every cgroup v1 hierarchy) and
``/var/log/containers``. Pods are stopped and removed through the CRI first (``crictl rmp``), which tears down their
network namespaces and veths the way the kubelet would. A node that died without ``stop()`` (a killed test session)
is cleaned up the same way by the next ``start()``, or by ``python -m devmlops.harness.node --cleanup``.

The pod network (``10.244.0.0/24`` on the bridge) and the Service network exist only on this machine: the bridge does
not masquerade, the DEVMLOPS-NODE chain drops whatever a pod sends outside the pod network, pods get no DNS server,
and containerd pulls through a proxy that does not exist (an image that was not imported fails, it is never pulled).
Only one node runs on a machine at a time (a lock in ``/run/devmlops-node``): the bridge, the chains and the
cgroups are host-wide.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Self

import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from devmlops.adapters.kube import api_client
from devmlops.adapters.pki import CertificateAuthority
from devmlops.errors import HarnessError
from devmlops.harness.controlplane import (
    NODE_NAME,
    NODE_USER,
    PROXY_USER,
    SCHEDULER_USER,
    SERVICE_CIDR,
    ControlPlane,
    machine_ipv4,
)
from devmlops.harness.images import (
    BUSYBOX_IMAGE,
    PAUSE_IMAGE,
    build_oci_archive,
    busybox_image,
    find_busybox,
    import_image,
    pause_image,
    tag_image,
)
from devmlops.harness.processes import Lifecycle, ManagedProcess, free_port

__all__ = [
    "BRIDGE",
    "BUSYBOX_IMAGE",
    "CLUSTER_DOMAIN",
    "DEBIAN_PACKAGES",
    "GUARD_CHAIN",
    "INPUT_GUARD_CHAIN",
    "NODE_NAME",
    "NODE_TOOLS",
    "PAUSE_IMAGE",
    "POD_CIDR",
    "STATE_DIR",
    "HostState",
    "Node",
    "NodeUnavailableError",
    "cleanup_stale_node",
    "host_leftovers",
    "node_problems",
    "optional_node",
]

POD_CIDR = "10.244.0.0/24"
BRIDGE = "devmlops0"
CGROUP_ROOT = "devmlops-node"
NODE_TOOLS = ("kubelet", "kube-scheduler", "kube-proxy", "crictl", "pause")
# What the node runs from this machine, and the Debian package that brings it (`.ci/run` installs the packages).
HOST_PROGRAMS = {
    "containerd": "containerd",
    "containerd-shim-runc-v2": "containerd",
    "ctr": "containerd",
    "runc": "runc",
    "umoci": "umoci",
    "iptables": "iptables",
    "ip6tables": "iptables",
    "conntrack": "conntrack",
    "ip": "iproute2",
}
DEBIAN_PACKAGES = (
    "containerd",
    "runc",
    "containernetworking-plugins",
    "umoci",
    "busybox-static",
    "iptables",
    "conntrack",
)
CNI_DIRS = (Path("/usr/lib/cni"), Path("/opt/cni/bin"))
CNI_PLUGINS = ("bridge", "host-local", "loopback")
# Chains a node may add; a chain of these names that existed before the node started is left alone.
CHAIN_PREFIXES = ("KUBE-", "CNI-", "DEVMLOPS-")
GUARD_CHAIN = "DEVMLOPS-NODE"
# Ports of this node's and its control plane's servers that listen beyond loopback (the kubelet's on the node IP; the
# API server's when Pods are its clients): reached from this machine and from its Pods only.
INPUT_GUARD_CHAIN = "DEVMLOPS-NODE-IN"
CLUSTER_DOMAIN = "cluster.local"
IPTABLES = ("iptables", "ip6tables")
TABLES = ("filter", "nat", "mangle", "raw")
# Kernel settings the kubelet (setupKernelTunables), kube-proxy and the bridge plugin may change.
SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/route_localnet",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/netfilter/nf_conntrack_max",
    "net/netfilter/nf_conntrack_tcp_timeout_established",
    "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
)
# The machine-wide lock and the host state a running node recorded (for the cleanup after a node that died).
STATE_DIR = Path("/run/devmlops-node")
# Host paths a node's parts create outside its folder: the CNI cache, shim sockets, the kubelet's log links and its
# device-plugin socket (a fixed path, /var/lib/kubelet/device-plugins, whatever --root-dir says).
HOST_PATHS = (
    "/var/lib/cni",
    "/run/containerd",
    "/var/log/containers",
    "/var/log/pods",
    "/var/run/netns",
    "/var/lib/kubelet",
)
# Host paths that must never appear: a part writing here would be a setting missed (checked by the tests).
WATCHED_PATHS = (*HOST_PATHS, "/var/lib/containerd", "/etc/cni/net.d", "/run/kubernetes")
# A proxy nobody listens on (the discard port): containerd's registry client goes there, so a pull fails at once.
NO_PULL_PROXY = "http://127.0.0.1:9"


class NodeUnavailableError(HarnessError):
    """This machine cannot run the node; the message says why and what to do."""


# -- what this machine has ---------------------------------------------------------------------------------------


def _cni_dir() -> Path | None:
    return next((d for d in CNI_DIRS if all((d / plugin).exists() for plugin in CNI_PLUGINS)), None)


def _cgroup_hierarchies() -> list[Path]:
    """The mounted cgroup hierarchies: v1's (cpu, memory, pids, name=systemd, ...) and, on a hybrid machine, the v2
    "unified" one, where runc makes the containers' cgroups too. The kubelet runs with cgroupfs on v1."""
    root = Path("/sys/fs/cgroup")
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink() and (p / "cgroup.procs").exists())


def node_problems(bin_dir: Path) -> list[str]:
    """Why the node cannot start on this machine ([] when it can): every reason, each with what to do."""
    problems: list[str] = []
    if not sys.platform.startswith("linux"):
        return [f"the node needs Linux (this is {sys.platform})"]
    if os.geteuid() != 0:
        problems.append("the node needs root (containerd, runc, iptables, mounts and cgroups); run as root")
    missing_tools = [tool for tool in NODE_TOOLS if not (bin_dir / tool).exists()]
    if missing_tools:
        problems.append(f"{bin_dir} lacks {', '.join(missing_tools)}: run `make tools` and use the folder it prints")
    missing = sorted({pkg for prog, pkg in HOST_PROGRAMS.items() if shutil.which(prog) is None})
    if _cni_dir() is None:
        missing.append("containernetworking-plugins")
    if not (Path("/bin/busybox").exists() or Path("/usr/bin/busybox").exists()):
        missing.append("busybox-static")
    if missing:
        problems.append(f"missing Debian packages: apt-get install {' '.join(sorted(set(missing)))}")
    if Path("/sys/fs/cgroup/cgroup.controllers").exists():
        problems.append("this machine has cgroup v2; the local node is configured for cgroup v1 (cgroupfs) only")
    elif not any(h.name == "memory" for h in _cgroup_hierarchies()):
        problems.append("no cgroup v1 memory hierarchy under /sys/fs/cgroup")
    return problems


def _run(argv: Sequence[str], *, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HarnessError(f"`{shlex.join(argv)}` failed: {exc}") from exc
    if check and done.returncode != 0:
        raise HarnessError(f"`{shlex.join(argv)}` exited {done.returncode}: {done.stderr.strip()}")
    return done


def _node_ip() -> str:
    """The kubelet's InternalIP: this machine's first global IPv4 address (it refuses a loopback address), where it
    serves and where the API server calls it. Traffic to it never leaves the machine."""
    try:
        return machine_ipv4()
    except HarnessError as exc:
        raise NodeUnavailableError(exc.user_message) from exc


# -- host state: recorded before, put back after -------------------------------------------------------------------


def _chains(binary: str, table: str) -> tuple[list[str], list[str]]:
    """(chains, rules) of ``binary -t table -S``; [] when the table does not exist here."""
    done = _run([binary, "-w", "-t", table, "-S"], check=False)
    if done.returncode != 0:
        return [], []
    lines = done.stdout.splitlines()
    chains = [line.split()[1] for line in lines if line.startswith(("-N ", "-P "))]
    return chains, [line for line in lines if line.startswith("-A ")]


def _node_chains() -> list[str]:
    """Every KUBE-*, CNI-* or DEVMLOPS-* chain on this machine, as ``binary/table/chain``."""
    found = []
    for binary in IPTABLES:
        for table in TABLES:
            chains, _ = _chains(binary, table)
            found += [f"{binary}/{table}/{c}" for c in chains if c.startswith(CHAIN_PREFIXES)]
    return found


def _cgroup_dirs() -> list[Path]:
    return [h / CGROUP_ROOT for h in _cgroup_hierarchies() if (h / CGROUP_ROOT).exists()]


def _read_sysctl(key: str) -> str | None:
    try:
        return (Path("/proc/sys") / key).read_text().strip()
    except OSError:
        return None


@dataclass
class HostState:
    """What the node may change outside its folder, as it was before: restored by ``restore()``."""

    workdir: str
    pid: int
    sysctls: dict[str, str] = field(default_factory=dict)
    chains: list[str] = field(default_factory=list)
    paths: dict[str, bool] = field(default_factory=dict)
    containers_links: list[str] = field(default_factory=list)

    @classmethod
    def capture(cls, workdir: Path) -> HostState:
        sysctls = {key: value for key in SYSCTLS if (value := _read_sysctl(key)) is not None}
        links_dir = Path("/var/log/containers")
        links = sorted(p.name for p in links_dir.iterdir()) if links_dir.is_dir() else []
        return cls(
            workdir=str(workdir),
            pid=os.getpid(),
            sysctls=sysctls,
            chains=_node_chains(),
            paths={path: Path(path).exists() for path in HOST_PATHS},
            containers_links=links,
        )

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> HostState:
        return cls(**json.loads(path.read_text()))

    def restore(self, log: Callable[[str], None]) -> list[str]:
        """Put the machine back; returns what could not be (empty when all went well)."""
        problems: list[str] = []
        _kill_cgroup_processes()
        problems += _kill_shims(Path(self.workdir))
        problems += _unmount_under(Path(self.workdir))
        problems += self._remove_chains()
        if Path(f"/sys/class/net/{BRIDGE}").exists():
            done = _run(["ip", "link", "delete", BRIDGE], check=False)
            if done.returncode != 0:
                problems.append(f"could not delete the bridge {BRIDGE}: {done.stderr.strip()}")
        _run(["conntrack", "-D", "-s", POD_CIDR], check=False)
        _run(["conntrack", "-D", "-d", SERVICE_CIDR], check=False)
        problems += _remove_cgroups()
        for key, value in self.sysctls.items():
            if _read_sysctl(key) != value:
                try:
                    (Path("/proc/sys") / key).write_text(value)
                except OSError as exc:
                    problems.append(f"could not restore sysctl {key}={value}: {exc}")
        problems += self._remove_paths()
        for problem in problems:
            log(f"node cleanup: {problem}")
        return problems

    def _remove_chains(self) -> list[str]:
        before = set(self.chains)
        problems = []
        for binary in IPTABLES:
            for table in TABLES:
                chains, rules = _chains(binary, table)
                new = {c for c in chains if c.startswith(CHAIN_PREFIXES) and f"{binary}/{table}/{c}" not in before}
                if not new:
                    continue
                # Jumps into the new chains from chains that stay (FORWARD, POSTROUTING, ...) go first.
                for rule in rules:
                    parts = shlex.split(rule)
                    chain, target = parts[1], parts[parts.index("-j") + 1] if "-j" in parts else ""
                    if chain not in new and target in new:
                        _run([binary, "-w", "-t", table, "-D", *parts[1:]], check=False)
                for chain in sorted(new):
                    _run([binary, "-w", "-t", table, "-F", chain], check=False)
                for chain in sorted(new):
                    done = _run([binary, "-w", "-t", table, "-X", chain], check=False)
                    if done.returncode != 0:
                        problems.append(f"could not delete {binary} {table} chain {chain}: {done.stderr.strip()}")
        return problems

    def _remove_paths(self) -> list[str]:
        problems = []
        links = Path("/var/log/containers")
        if links.is_dir() and self.paths.get(str(links)):
            # The kubelet's links to this node's logs; links that were there before stay.
            keep = set(self.containers_links)
            for link in links.iterdir():
                if link.name not in keep and link.is_symlink() and self.workdir in os.readlink(link):
                    link.unlink()
        for path, existed in self.paths.items():
            if not existed and Path(path).exists():
                try:
                    shutil.rmtree(path)
                except OSError as exc:
                    problems.append(f"could not remove {path}: {exc}")
        return problems


def _processes_with(needle: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if needle.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
    return [pid for pid in pids if pid != os.getpid()]


def _kill_shims(workdir: Path) -> list[str]:
    """containerd's shims live in their own process groups; those of this node name its socket in their argv."""
    socket = str(workdir / "containerd" / "containerd.sock")
    for pid in _processes_with(socket):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while _processes_with(socket) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = _processes_with(socket)
    return [f"processes of this node still running: {left}"] if left else []


def _kill_cgroup_processes() -> None:
    """Every process in the node's cgroups (containers whose shim is gone) gets SIGKILL."""
    for directory in _cgroup_dirs():
        for procs in directory.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                for pid in procs.read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)


def _mounts_under(root: Path) -> list[str]:
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if point == str(root) or point.startswith(f"{root}/"):
            mounts.append(point)
    return mounts


def _unmount_under(root: Path) -> list[str]:
    """Unmount what is mounted under ``root`` (rootfs overlays, secret tmpfs, network namespaces), deepest first."""
    for _attempt in range(3):
        mounts = _mounts_under(root)
        if not mounts:
            return []
        for point in sorted(mounts, key=len, reverse=True):
            if _run(["umount", point], check=False).returncode != 0:
                _run(["umount", "-l", point], check=False)
    left = _mounts_under(root)
    return [f"still mounted: {', '.join(left)}"] if left else []


def _remove_cgroups() -> list[str]:
    problems = []
    for directory in _cgroup_dirs():
        deadline = time.monotonic() + 10
        while directory.exists() and time.monotonic() < deadline:
            children = sorted((p for p in directory.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
            for sub in children:
                with contextlib.suppress(OSError):
                    sub.rmdir()
            with contextlib.suppress(OSError):
                directory.rmdir()
            if directory.exists():
                time.sleep(0.2)
        if directory.exists():
            problems.append(f"could not remove cgroup {directory}")
    return problems


def host_leftovers(before: HostState | None = None, *, paths: bool = True) -> list[str]:
    """What a node left on this machine: chains, the bridge, cgroups, network namespaces, node processes and (with
    ``paths``) host paths that were not there in ``before`` (or at all, without it)."""
    found = []
    old_chains = set(before.chains) if before else set()
    found += [f"iptables chain {c}" for c in _node_chains() if c not in old_chains]
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        found.append(f"bridge {BRIDGE}")
    found += [f"cgroup {d}" for d in _cgroup_dirs()]
    for path in WATCHED_PATHS if paths else ():
        existed = before.paths.get(path, False) if before else False
        if Path(path).exists() and not existed:
            found.append(f"path {path}")
    if before:
        found += [f"mount {m}" for m in _mounts_under(Path(before.workdir))]
        found += [f"process {pid}" for pid in _processes_with(str(Path(before.workdir) / "containerd"))]
        found += [
            f"sysctl {key}={_read_sysctl(key)} (was {value})"
            for key, value in before.sysctls.items()
            if _read_sysctl(key) != value
        ]
    return found


@contextlib.contextmanager
def _machine_lock() -> Iterator[IO[str]]:
    """Held while a node runs: one node per machine (the bridge, chains and cgroups are host-wide). Released, it
    leaves nothing: the holder removes the lock file (and its folder, when the node left no state) before unlocking,
    and a waiter that locked a file removed meanwhile tries again."""
    lock_path = STATE_DIR / "lock"
    while True:
        STATE_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
        handle = lock_path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise NodeUnavailableError(f"another devmlops node runs on this machine (pid {holder})") from exc
        try:
            same = os.stat(lock_path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        handle.close()
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    try:
        yield handle
    finally:
        lock_path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            STATE_DIR.rmdir()  # only when empty: a state file of a node that did not clean up stays
        handle.close()


def cleanup_stale_node(log: Callable[[str], None] = print) -> list[str]:
    """Clean up after a node that died without ``stop()`` (its host state file is still there). Returns problems."""
    state_file = STATE_DIR / "host-state.json"
    if not state_file.exists():
        return []
    with _machine_lock():
        state = HostState.load(state_file)
        log(f"cleaning up after a node that did not stop (pid {state.pid}, folder {state.workdir})")
        problems = state.restore(log)
        if not problems:
            state_file.unlink()
            shutil.rmtree(state.workdir, ignore_errors=True)
    return problems


# -- the node ------------------------------------------------------------------------------------------------------


class Node(Lifecycle):
    """containerd, kubelet, kube-scheduler and kube-proxy for ``control_plane``; ``start()`` raises
    ``NodeUnavailableError`` naming every reason when this machine cannot run them."""

    def __init__(
        self,
        control_plane: ControlPlane,
        *,
        bin_dir: Path,
        log: Callable[[str], None] = lambda _msg: None,
        ready_timeout: float = 120.0,
        cluster_dns: str | None = None,
    ) -> None:
        """``cluster_dns``: the ClusterIP of a DNS Service (``devmlops.harness.clusterdns``) that Pods of dnsPolicy
        ClusterFirst ask, with the search path of ``cluster.local``; None: Pods have no DNS server at all."""
        self.cp = control_plane
        self.cluster_dns = cluster_dns
        self.kubelet_port = 0
        self.bin_dir = bin_dir
        self._log = log
        self.ready_timeout = ready_timeout
        self.workdir = Path("/nonexistent")
        self.node_ip = ""
        self.host_state: HostState | None = None
        self._lock: contextlib.ExitStack | None = None
        self._containerd: ManagedProcess | None = None
        self._kubelet: ManagedProcess | None = None
        self._scheduler: ManagedProcess | None = None
        self._proxy: ManagedProcess | None = None
        self.started_seconds = 0.0
        self._registered = False

    # -- facts -----------------------------------------------------------------------------------------------------
    @property
    def containerd_socket(self) -> Path:
        return self.workdir / "containerd" / "containerd.sock"

    @property
    def kubelet_log(self) -> Path:
        return self.workdir / "kubelet.log"

    @property
    def crictl_config(self) -> Path:
        """``crictl --config <this> pods``: the CRI view of this node (see docs/development.md)."""
        return self.workdir / "crictl.yaml"

    def crictl(self, *args: str, timeout: float = 60) -> str:
        argv = [str(self.bin_dir / "crictl"), "--config", str(self.crictl_config), *args]
        return _run(argv, timeout=timeout).stdout

    def import_image(self, archive: Path, name: str) -> None:
        """Make an OCI archive (``devmlops.harness.images``) runnable here as ``name`` (``imagePullPolicy: Never``)."""
        import_image(archive, address=self.containerd_socket, name=name)

    def tag_image(self, name: str, target: str) -> None:
        """A second name for an imported image (``repo@sha256:...`` for a Pod that pins it by digest)."""
        tag_image(address=self.containerd_socket, name=name, target=target)

    def processes(self) -> dict[str, ManagedProcess]:
        named = {
            "containerd": self._containerd,
            "kubelet": self._kubelet,
            "kube-scheduler": self._scheduler,
            "kube-proxy": self._proxy,
        }
        return {name: proc for name, proc in named.items() if proc is not None}

    # -- lifecycle ---------------------------------------------------------------------------------------------------
    def start(self) -> Self:
        problems = node_problems(self.bin_dir)
        if problems:
            raise NodeUnavailableError("the local node cannot start here: " + "; ".join(problems))
        started = time.monotonic()
        stale = cleanup_stale_node(self._log)
        if stale:
            raise NodeUnavailableError("a node that did not stop left state behind: " + "; ".join(stale))
        lock = contextlib.ExitStack()
        lock.enter_context(_machine_lock())
        self._lock = lock
        try:
            # Chains, the bridge or our cgroups would clash; host paths (a system containerd's /run/containerd, say)
            # are only recorded, to be left as they were.
            leftovers = host_leftovers(paths=False)
            if leftovers:
                raise NodeUnavailableError(
                    "this machine already has what a node would create (another Kubernetes node?): "
                    + ", ".join(leftovers)
                )
            self.workdir = Path(tempfile.mkdtemp(prefix="devmlops-node-"))
            self.workdir.chmod(0o755)
            self.host_state = HostState.capture(self.workdir)
            self.host_state.save(STATE_DIR / "host-state.json")
            self.node_ip = _node_ip()
            self.kubelet_port = free_port()
            self._prepare_cgroups()
            self._install_guard()
            self._start_containerd()
            self._import_images()
            self._start_kubelet()
            self._start_scheduler()
            self._start_proxy()
            self._wait_node_ready()
            self.started_seconds = time.monotonic() - started
            self._log(
                f"node {NODE_NAME} ready in {self.started_seconds:.1f}s (pods on {POD_CIDR}, bridge {BRIDGE}; "
                f"logs, crictl.yaml in {self.workdir})"
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the kubelet (so nothing restarts), then every pod through the CRI, then the processes; put the
        machine back as it was (see the module docstring) and delete the Node object."""
        problems: list[str] = []
        for proc in (self._kubelet, self._scheduler, self._proxy):
            if proc is not None:
                proc.stop()
        if self._containerd is not None and self._containerd.running():
            try:
                self.crictl("rmp", "--all", "--force", timeout=120)
            except HarnessError as exc:
                problems.append(f"removing the pods through the CRI failed: {exc.user_message}")
            self._containerd.stop(timeout=20)
        self._kubelet = self._scheduler = self._proxy = self._containerd = None
        if self.host_state is not None:
            problems += self.host_state.restore(self._log)
            if not problems:
                (STATE_DIR / "host-state.json").unlink(missing_ok=True)
                shutil.rmtree(self.workdir, ignore_errors=True)
            self.host_state = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        if self._registered:
            # Only the node that ran a kubelet deletes the Node object: a second Node refused by the lock must not
            # take the running node's object away.
            self._delete_node_object()
            self._registered = False
        if problems:
            raise HarnessError("the node did not clean up: " + "; ".join(problems))

    # -- steps -------------------------------------------------------------------------------------------------------
    def _prepare_cgroups(self) -> None:
        """The kubelet's cgroupRoot must exist in every hierarchy; cpuset children start empty, so copy the parent's
        CPUs and memory nodes."""
        for hierarchy in _cgroup_hierarchies():
            directory = hierarchy / CGROUP_ROOT
            directory.mkdir(exist_ok=True)
            if hierarchy.name == "cpuset":
                for name in ("cpuset.cpus", "cpuset.mems"):
                    (directory / name).write_text((hierarchy / name).read_text())

    def _install_guard(self) -> None:
        """Pods talk to pods (and, through kube-proxy's rules, to Services): anything a pod sends outside the pod
        network is dropped before it could leave the machine."""
        table = ["iptables", "-w", "-t", "filter"]
        _run([*table, "-N", GUARD_CHAIN])
        _run([*table, "-A", GUARD_CHAIN, "-s", POD_CIDR, "!", "-d", POD_CIDR, "-j", "DROP"])
        _run([*table, "-I", "FORWARD", "1", "-m", "comment", "--comment", "devmlops local node", "-j", GUARD_CHAIN])
        # The servers that listen on this machine's address answer only this machine (its loopback) and its Pods.
        ports = [self.kubelet_port, *([self.cp.port] if self.cp.pod_clients else [])]
        _run([*table, "-N", INPUT_GUARD_CHAIN])
        _run([*table, "-A", INPUT_GUARD_CHAIN, "-i", "lo", "-j", "RETURN"])
        _run([*table, "-A", INPUT_GUARD_CHAIN, "-s", POD_CIDR, "-j", "RETURN"])
        _run([*table, "-A", INPUT_GUARD_CHAIN, "-j", "DROP"])
        dports = ["-p", "tcp", "-m", "multiport", "--dports", ",".join(map(str, ports))]
        comment = ["-m", "comment", "--comment", "devmlops local node"]
        _run([*table, "-I", "INPUT", "1", *dports, *comment, "-j", INPUT_GUARD_CHAIN])

    def _write(self, relative: str, text: str, mode: int = 0o644) -> Path:
        path = self.workdir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)
        return path

    def _start_containerd(self) -> None:
        cni_dir = _cni_dir()
        assert cni_dir is not None
        base = self.workdir / "containerd"
        cni_conf = {
            "cniVersion": "0.4.0",
            "name": "devmlops",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_CIDR}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.workdir / "cni" / "ipam"),
                    },
                }
            ],
        }
        self._write("cni/net.d/10-devmlops.conflist", json.dumps(cni_conf, indent=2))
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        config = f"""version = 2
root = "{base / "root"}"
state = "{base / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{self.containerd_socket}"

[ttrpc]
  address = "{self.containerd_socket}.ttrpc"

[plugins]
  [{cri}]
    sandbox_image = "{PAUSE_IMAGE}"
    # This VM lacks CAP_SYS_RESOURCE: runc cannot set the sandboxes' oom_score_adj of -998 and fails every sandbox
    # with "can't get final child's PID from pipe: EOF"; restricted, it never goes below containerd's own.
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    enable_selinux = false
    disable_apparmor = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    [{cri}.containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [{cri}.containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [{cri}.containerd.runtimes.runc.options]
          SystemdCgroup = false
          Root = "{base / "runc"}"
    [{cri}.cni]
      bin_dir = "{cni_dir}"
      conf_dir = "{self.workdir / "cni" / "net.d"}"
      max_conf_num = 1
    [{cri}.registry]
      config_path = "{base / "certs.d"}"
  [plugins."io.containerd.internal.v1.opt"]
    path = "{base / "opt"}"
"""
        path = self._write("containerd/config.toml", config)
        endpoint = f"unix://{self.containerd_socket}"
        self._write("crictl.yaml", f"runtime-endpoint: {endpoint}\nimage-endpoint: {endpoint}\ntimeout: 30\n")
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "HTTP_PROXY": NO_PULL_PROXY,
            "HTTPS_PROXY": NO_PULL_PROXY,
            "NO_PROXY": "",
            "TMPDIR": str(self.workdir),
        }
        argv = ["containerd", "--config", str(path), "--log-level", "info"]
        self._containerd = ManagedProcess("containerd", argv, log_path=self.workdir / "containerd.log", env=env)
        self._containerd.start()
        ctr = ["ctr", "--address", str(self.containerd_socket), "version"]

        def serving() -> bool:
            return self.containerd_socket.exists() and _run(ctr, check=False, timeout=10).returncode == 0

        self._containerd.wait_until(serving, timeout=60, what="containerd's socket")

    def _import_images(self) -> None:
        images = self.workdir / "images"
        images.mkdir()
        for spec in (pause_image(self.bin_dir / "pause"), busybox_image(find_busybox())):
            archive = build_oci_archive(spec, images)
            import_image(archive, address=self.containerd_socket, name=spec.name)
            archive.unlink()

    def _kubelet_config(self) -> dict[str, Any]:
        pki = self.workdir / "pki"
        pki.mkdir(exist_ok=True)
        ca = CertificateAuthority.from_pem(
            (self.cp.workdir / "pki" / "ca.crt").read_bytes(), (self.cp.workdir / "pki" / "ca.key").read_bytes()
        )
        ca.issue(NODE_NAME, hosts=[self.node_ip, NODE_NAME, "127.0.0.1"]).write(pki, "kubelet")
        return {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # cgroup v1 here: the kubelet refuses it unless told, and containerd 1.6 cannot report its driver.
            "cgroupDriver": "cgroupfs",
            "failCgroupV1": False,
            "cgroupRoot": f"/{CGROUP_ROOT}",
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "address": self.node_ip,
            "port": self.kubelet_port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": free_port(),
            "tlsCertFile": str(pki / "kubelet.crt"),
            "tlsPrivateKeyFile": str(pki / "kubelet.key"),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.cp.ca_file)},
            },
            "authorization": {"mode": "Webhook"},
            "failSwapOn": False,
            # No host resolv.conf for pods (theirs names only their own loopback): no DNS server outside is asked.
            "resolvConf": "",
            "podLogsDir": str(self.workdir / "pod-logs"),
            **({"clusterDNS": [self.cluster_dns], "clusterDomain": CLUSTER_DOMAIN} if self.cluster_dns else {}),
            # Images here are imported, never pulled: garbage collection must not remove them, and a shared
            # machine's disk must not evict the tests' pods.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "50Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
            "serializeImagePulls": False,
            "registerNode": True,
            "maxPods": 50,
        }

    def _start_kubelet(self) -> None:
        config = self._write("kubelet-config.yaml", yaml.safe_dump(self._kubelet_config(), sort_keys=False))
        argv = [
            str(self.bin_dir / "kubelet"),
            f"--config={config}",
            f"--kubeconfig={self.cp.kubeconfig(NODE_USER)}",
            f"--root-dir={self.workdir / 'kubelet'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={self.node_ip}",
            "--v=1",
        ]
        self._kubelet = ManagedProcess("kubelet", argv, log_path=self.kubelet_log).start()
        self._registered = True

    def _start_scheduler(self) -> None:
        argv = [
            str(self.bin_dir / "kube-scheduler"),
            f"--kubeconfig={self.cp.kubeconfig(SCHEDULER_USER)}",
            "--leader-elect=false",
            "--secure-port=0",
            "--v=1",
        ]
        self._scheduler = ManagedProcess("kube-scheduler", argv, log_path=self.workdir / "kube-scheduler.log").start()

    def _start_proxy(self) -> None:
        healthz = free_port()
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self.cp.kubeconfig(PROXY_USER))},
            "hostnameOverride": NODE_NAME,
            "mode": "iptables",
            "clusterCIDR": POD_CIDR,
            "bindAddress": "127.0.0.1",
            "healthzBindAddress": f"127.0.0.1:{healthz}",
            "metricsBindAddress": f"127.0.0.1:{free_port()}",
            # Leave the machine's conntrack settings and route_localnet as they are.
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
            "iptables": {"localhostNodePorts": False},
        }
        path = self._write("kube-proxy-config.yaml", yaml.safe_dump(config, sort_keys=False))
        argv = [str(self.bin_dir / "kube-proxy"), f"--config={path}", "--v=1"]
        self._proxy = ManagedProcess("kube-proxy", argv, log_path=self.workdir / "kube-proxy.log").start()
        request = urllib.request.Request(f"http://127.0.0.1:{healthz}/healthz")

        def synced() -> bool:
            try:
                with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310
                    return bool(response.status == 200)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                return False

        self._proxy.wait_until(synced, timeout=self.ready_timeout, what="kube-proxy's first sync (/healthz)")

    def _wait_node_ready(self) -> None:
        assert self._kubelet is not None
        with api_client(self.cp.kubeconfig()) as client:
            core = k8s.CoreV1Api(client)

            def ready() -> bool:
                for proc in self.processes().values():
                    proc.ensure_running()
                try:
                    node = core.read_node(NODE_NAME)
                except ApiException:
                    return False
                conditions = (node.status.conditions if node.status else None) or []
                return any(c.type == "Ready" and c.status == "True" for c in conditions)

            self._kubelet.wait_until(ready, timeout=self.ready_timeout, what=f"node {NODE_NAME} Ready")

    def _delete_node_object(self) -> None:
        with contextlib.suppress(Exception), api_client(self.cp.kubeconfig()) as client:
            k8s.CoreV1Api(client).delete_node(NODE_NAME)


@contextlib.contextmanager
def optional_node(
    control_plane: ControlPlane, *, bin_dir: Path, enabled: bool, log: Callable[[str], None]
) -> Iterator[Node | None]:
    """The stack's switch: the node when ``enabled`` and this machine can run it, else None after saying why (never
    silently: without a node, Pods stay Pending). A node that can start but fails is an error, not a None."""
    if not enabled:
        log("node: off (DEVMLOPS_NODE=1 runs Pods on this machine); Pods stay Pending")
        yield None
        return
    try:
        node = Node(control_plane, bin_dir=bin_dir, log=log).start()
    except NodeUnavailableError as exc:
        log(f"node: not started: {exc.user_message}; Pods stay Pending")
        yield None
        return
    try:
        yield node
    finally:
        node.stop()


def _main(argv: Sequence[str]) -> int:
    if list(argv) != ["--cleanup"]:
        print("usage: python -m devmlops.harness.node --cleanup", file=sys.stderr)
        return 2
    problems = cleanup_stale_node()
    leftovers = host_leftovers()
    for item in leftovers:
        print(f"still on this machine: {item}")
    return 1 if problems or leftovers else 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
