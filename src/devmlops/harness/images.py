"""Container images built without Docker or a registry: a root filesystem packed into an OCI layout by umoci,
named with the ``io.containerd.image.name`` annotation and imported with ``ctr -n k8s.io image import``.

Two images exist today, both from files already on this machine: the pause image (the sandbox image; its entrypoint
is ``pause``, compiled by ``hack/tools.sh`` from the Kubernetes module) and a busybox image from Debian's
busybox-static. Pods use them with ``imagePullPolicy: Never``: nothing is pulled from anywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from devmlops.errors import HarnessError

__all__ = [
    "BUSYBOX_IMAGE",
    "PAUSE_IMAGE",
    "ImageSpec",
    "build_oci_archive",
    "busybox_image",
    "find_busybox",
    "import_image",
    "is_static_executable",
    "pause_image",
]

# Local names under a domain nobody serves: an image that is not imported fails to start, it is never pulled.
PAUSE_IMAGE = "devmlops.local/pause:local"
BUSYBOX_IMAGE = "devmlops.local/busybox:local"
_PT_INTERP = 3


@dataclass(frozen=True, slots=True)
class ImageSpec:
    """What goes into an image: files copied in (destination inside the image -> source on this machine), symlinks
    (destination -> target) and the OCI config's entrypoint, command and environment."""

    name: str
    files: Mapping[str, Path]
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


def _run(argv: Sequence[str], what: str) -> str:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=120, check=False)
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
    _run(["umoci", "init", "--layout", str(layout)], what)
    _run(["umoci", "new", "--image", image], what)
    _run(["umoci", "unpack", "--image", image, str(bundle)], what)
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
    _run(["umoci", "repack", "--image", image, str(bundle)], what)
    config = ["umoci", "config", "--image", image, "--os", "linux", "--architecture", "amd64"]
    config += ["--config.entrypoint=" + part for part in spec.entrypoint]
    config += ["--config.cmd=" + part for part in spec.cmd]
    config += ["--config.env=" + entry for entry in spec.env]
    _run(config, what)
    _run(["umoci", "gc", "--layout", str(layout)], what)
    index_path = layout / "index.json"
    index = json.loads(index_path.read_text())
    for manifest in index["manifests"]:
        manifest.setdefault("annotations", {})["io.containerd.image.name"] = spec.name
    index_path.write_text(json.dumps(index))
    archive = workdir / f"{slug}.oci.tar"
    with tarfile.open(archive, "w") as tar:
        for entry in sorted(layout.iterdir()):
            tar.add(entry, arcname=entry.name)
    shutil.rmtree(bundle, ignore_errors=True)
    shutil.rmtree(layout, ignore_errors=True)
    return archive


def import_image(archive: Path, *, address: Path, name: str) -> None:
    """``ctr -n k8s.io image import``: the namespace the CRI plugin (and so the kubelet) sees. The image is labelled
    pinned, so neither the kubelet's image garbage collection nor a prune removes it."""
    ctr = ["ctr", "--address", str(address), "--namespace", "k8s.io"]
    _run([*ctr, "image", "import", str(archive)], f"importing {name}")
    _run([*ctr, "image", "label", name, "io.cri-containerd.pinned=pinned"], f"pinning {name}")
