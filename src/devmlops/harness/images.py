"""Container images built without Docker or a registry: a root filesystem packed into an OCI layout by umoci,
named with the ``io.containerd.image.name`` annotation and imported with ``ctr -n k8s.io image import``.

Images: the pause image (the sandbox image; its entrypoint is ``pause``, compiled by ``hack/tools.sh`` from the
Kubernetes module) and a busybox image from Debian's busybox-static, both from files already on this machine and
built at each node start (about a second); and a Debian image (``debootstrap --variant=minbase`` from the Debian
archive, with python3), built once into ``~/.cache/devmlops/images`` (about 40 s, 66 MB). Pods use them with
``imagePullPolicy: Never``: nothing is pulled from a registry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from devmlops.errors import HarnessError

__all__ = [
    "BUSYBOX_IMAGE",
    "DEBIAN_IMAGE",
    "OPA_IMAGE",
    "PAUSE_IMAGE",
    "ImageSpec",
    "build_oci_archive",
    "busybox_image",
    "debian_archive",
    "find_busybox",
    "finish_archive",
    "image_cache_root",
    "import_image",
    "is_static_executable",
    "manifest_digest",
    "opa_archive",
    "pause_image",
    "run_tool",
    "tag_image",
]

# Local names under a domain nobody serves: an image that is not imported fails to start, it is never pulled.
PAUSE_IMAGE = "devmlops.local/pause:local"
BUSYBOX_IMAGE = "devmlops.local/busybox:local"
# The chart's OPA sidecar: the static opa that `make tools` builds, alone in an image (what openpolicyagent/opa's
# -static images hold).
OPA_IMAGE = "devmlops.local/opa:local"
DEBIAN_SUITE = "bookworm"
DEBIAN_INCLUDE = ("python3",)
DEBIAN_IMAGE = f"devmlops.local/debian:{DEBIAN_SUITE}"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# Bump when the way an image is built changes, so cached archives built the old way are not reused.
IMAGE_RECIPE = 1
_PT_INTERP = 3


@dataclass(frozen=True, slots=True)
class ImageSpec:
    """What goes into an image: a root filesystem ``tree`` (inserted whole: owners, modes and device nodes kept), files
    copied in (destination inside the image -> source on this machine), symlinks (destination -> target) and the OCI
    config's entrypoint, command and environment."""

    name: str
    files: Mapping[str, Path] = field(default_factory=dict)
    tree: Path | None = None
    symlinks: Mapping[str, str] = field(default_factory=dict)
    entrypoint: Sequence[str] = ()
    cmd: Sequence[str] = ()
    env: Sequence[str] = ("PATH=/bin",)


def is_static_executable(path: Path) -> bool:
    """True for an ELF executable without a program interpreter (statically linked): the images have no libc."""
    data = path.read_bytes()[:65536]
    if data[:4] != b"\x7fELF" or data[4] != 2:  # 64-bit ELF only
        return False
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for index in range(phnum):
        (p_type,) = struct.unpack_from("<I", data, phoff + index * phentsize)
        if p_type == _PT_INTERP:
            return False
    return True


def find_busybox() -> Path:
    """Debian's busybox-static (/bin/busybox); the dynamically linked ``busybox`` package would not run in an image
    without a libc."""
    for candidate in (Path("/bin/busybox"), Path("/usr/bin/busybox")):
        if candidate.exists():
            if not is_static_executable(candidate):
                raise HarnessError(
                    f"{candidate} is dynamically linked: the busybox image needs a static one "
                    "(apt-get install busybox-static)"
                )
            return candidate
    raise HarnessError("no busybox on this machine: apt-get install busybox-static")


def pause_image(pause_binary: Path) -> ImageSpec:
    if not is_static_executable(pause_binary):
        raise HarnessError(f"{pause_binary} is not a static executable: rebuild it with `make tools`")
    return ImageSpec(name=PAUSE_IMAGE, files={"pause": pause_binary}, entrypoint=["/pause"])


def busybox_image(busybox: Path) -> ImageSpec:
    """busybox with a symlink per applet under /bin (its ``--list``), and a /tmp; ``sh`` by default."""
    listed = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True).stdout.split()
    links = {f"bin/{applet}": "busybox" for applet in listed if applet != "busybox"}
    return ImageSpec(name=BUSYBOX_IMAGE, files={"bin/busybox": busybox}, symlinks=links, cmd=["sh"])


def opa_archive(opa_binary: Path, cache_root: Path) -> Path:
    """The OPA image's OCI archive (entrypoint ``/opa``), built once per opa binary into ``cache_root``."""
    if not is_static_executable(opa_binary):
        raise HarnessError(f"{opa_binary} is not a static executable: rebuild it with `make tools`")
    digest = hashlib.sha256(opa_binary.read_bytes()).hexdigest()
    archive = cache_root / f"opa-{digest[:16]}_r{IMAGE_RECIPE}.oci.tar"
    if archive.exists():
        return archive
    cache_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".opa-build-", dir=cache_root))
    try:
        spec = ImageSpec(name=OPA_IMAGE, files={"opa": opa_binary}, entrypoint=["/opa"])
        build_oci_archive(spec, work).replace(archive)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return archive


def run_tool(argv: Sequence[str], what: str, *, timeout: float = 300) -> str:
    """Run a build tool; its failure is a HarnessError naming ``what`` was being done, the command and its stderr."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HarnessError(f"{what}: {argv[0]} failed: {exc}") from exc
    if done.returncode != 0:
        raise HarnessError(f"{what}: `{' '.join(argv)}` exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def build_oci_archive(spec: ImageSpec, workdir: Path) -> Path:
    """An OCI image layout for ``spec``, tarred (what ``ctr image import`` reads): umoci creates the layout and the
    layer from an unpacked bundle, then sets the config; the index entry gets containerd's name annotation."""
    slug = spec.name.rsplit("/", 1)[-1].replace(":", "-")
    layout, bundle = workdir / f"{slug}-oci", workdir / f"{slug}-bundle"
    for path in (layout, bundle):
        shutil.rmtree(path, ignore_errors=True)
    image = f"{layout}:latest"
    what = f"building image {spec.name}"
    run_tool(["umoci", "init", "--layout", str(layout)], what)
    run_tool(["umoci", "new", "--image", image], what)
    if spec.tree is not None:
        run_tool(["umoci", "insert", "--image", image, str(spec.tree), "/"], what)
    if spec.files or spec.symlinks or spec.tree is None:
        run_tool(["umoci", "unpack", "--image", image, str(bundle)], what)
        rootfs = bundle / "rootfs"
        for destination, source in spec.files.items():
            target = rootfs / destination
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        for destination, link in spec.symlinks.items():
            target = rootfs / destination
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(link)
        (rootfs / "tmp").mkdir(exist_ok=True)
        os.chmod(rootfs / "tmp", 0o1777)  # noqa: S103 - /tmp inside the image: sticky and world-writable, as everywhere
        run_tool(["umoci", "repack", "--image", image, str(bundle)], what)
    config = ["umoci", "config", "--image", image, "--os", "linux", "--architecture", "amd64"]
    config += ["--config.entrypoint=" + part for part in spec.entrypoint]
    config += ["--config.cmd=" + part for part in spec.cmd]
    config += ["--config.env=" + entry for entry in spec.env]
    run_tool(config, what)
    archive = finish_archive(layout, spec.name, workdir / f"{slug}.oci.tar")
    shutil.rmtree(bundle, ignore_errors=True)
    shutil.rmtree(layout, ignore_errors=True)
    return archive


def finish_archive(layout: Path, name: str, archive: Path) -> Path:
    """Garbage-collect the OCI layout at ``layout``, name its image ``name`` (containerd's annotation on the index
    entry) and tar it into ``archive``: what ``ctr image import`` reads."""
    run_tool(["umoci", "gc", "--layout", str(layout)], f"building image {name}")
    index_path = layout / "index.json"
    index = json.loads(index_path.read_text())
    for manifest in index["manifests"]:
        manifest.setdefault("annotations", {})["io.containerd.image.name"] = name
    index_path.write_text(json.dumps(index))
    with tarfile.open(archive, "w") as tar:
        for entry in sorted(layout.iterdir()):
            tar.add(entry, arcname=entry.name)
    return archive


def manifest_digest(archive: Path) -> str:
    """The digest of the (first) image manifest in an OCI archive: what identifies a built image's content."""
    with tarfile.open(archive) as tar:
        member = tar.extractfile("index.json")
        if member is None:
            raise HarnessError(f"{archive}: no index.json (not an OCI image archive)")
        index = json.loads(member.read())
    return str(index["manifests"][0]["digest"])


def image_cache_root() -> Path:
    """Where built images are cached, outside the repository like the tools: ``$DEVMLOPS_IMAGES_CACHE`` or
    ``~/.cache/devmlops/images``."""
    configured = os.environ.get("DEVMLOPS_IMAGES_CACHE")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "devmlops" / "images"


def debian_archive(
    cache_root: Path,
    *,
    include: Sequence[str] = DEBIAN_INCLUDE,
    name: str = DEBIAN_IMAGE,
    log: Callable[[str], None] = lambda _msg: None,
) -> Path:
    """The Debian image's OCI archive, built once per suite, package list and recipe into ``cache_root``: a minbase
    root filesystem from ``debootstrap`` (Debian's archive, its keyring checking every package) with ``include``
    (python3 by default), apt's caches emptied. Beside it, ``.packages.txt`` lists what went in (Debian's versions
    move; the list says which)."""
    key = f"debian-{DEBIAN_SUITE}-minbase-{'+'.join(include)}_r{IMAGE_RECIPE}"
    archive = cache_root / f"{key}.oci.tar"
    if archive.exists():
        return archive
    if shutil.which("debootstrap") is None:
        raise HarnessError("building the Debian image needs debootstrap: apt-get install debootstrap")
    cache_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{key}-", dir=cache_root))
    try:
        rootfs = work / "rootfs"
        log(f"building {name}: debootstrap --variant=minbase {DEBIAN_SUITE} from {DEBIAN_MIRROR}")
        argv = ["debootstrap", "--variant=minbase", f"--include={','.join(include)}", DEBIAN_SUITE]
        run_tool([*argv, str(rootfs), DEBIAN_MIRROR], f"building {name}", timeout=1200)
        for cache in (rootfs / "var/cache/apt/archives", rootfs / "var/lib/apt/lists"):
            for entry in cache.glob("*"):
                if entry.is_file():
                    entry.unlink()
        packages = run_tool(
            ["dpkg-query", f"--admindir={rootfs / 'var/lib/dpkg'}", "-W", "-f=${Package} ${Version}\\n"],
            "listing the Debian image's packages",
        )
        path = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        built = build_oci_archive(ImageSpec(name=name, tree=rootfs, cmd=["bash"], env=[path]), work)
        archive.with_suffix(".packages.txt").write_text(packages)
        built.replace(archive)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return archive


def tag_image(*, address: Path, name: str, target: str) -> None:
    """Give an imported image a second name (``repo@sha256:<manifest digest>``, say: what a Pod that pins the image
    by digest asks the kubelet for), pinned like the first."""
    ctr = ["ctr", "--address", str(address), "--namespace", "k8s.io"]
    run_tool([*ctr, "image", "tag", "--force", name, target], f"naming {name} {target}")
    run_tool([*ctr, "image", "label", target, "io.cri-containerd.pinned=pinned"], f"pinning {target}")


def import_image(archive: Path, *, address: Path, name: str) -> None:
    """``ctr -n k8s.io image import``: the namespace the CRI plugin (and so the kubelet) sees. The image is labelled
    pinned, so neither the kubelet's image garbage collection nor a prune removes it."""
    ctr = ["ctr", "--address", str(address), "--namespace", "k8s.io"]
    run_tool([*ctr, "image", "import", str(archive)], f"importing {name}")
    run_tool([*ctr, "image", "label", name, "io.cri-containerd.pinned=pinned"], f"pinning {name}")
