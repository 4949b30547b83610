"""Python application images built without Docker: the devmlops image and a model-server image from PyPI.

Each is the Debian base (``debootstrap`` with python3 and python3-venv, ``images.debian_archive``) plus one layer: a
virtual environment under ``/opt/<name>`` that pip fills from PyPI while chrooted into the unpacked base, so the
packages are resolved and compiled by the image's own Python 3.11 (Debian's), never the host's. Only the venv goes
into the new layer; whatever pip left elsewhere in the scratch root (caches, the copied source) does not.

The image runs as 65532:65532 with ``HOME=/tmp``, no bytecode written at run time and everything root-owned, so a
Pod may set ``readOnlyRootFilesystem: true`` (the same runtime contract as the Dockerfile). Archives are cached in
``~/.cache/devmlops/images`` under a key of the base image's manifest digest, the recipe, the requirements and, for
devmlops, the hash of pyproject.toml, README.md and every file under src/: an unchanged tree is a cache hit (well
under a second), a changed one a rebuild. Building needs root (chroot) and PyPI; ``make image`` uses Docker instead
where a Docker engine answers.

    python -m devmlops.harness.pyimages devmlops|model-server [--project-dir DIR]   (prints the archive's path)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from devmlops.errors import HarnessError
from devmlops.harness.images import (
    debian_archive,
    finish_archive,
    image_cache_root,
    manifest_digest,
    run_tool,
)

__all__ = [
    "BASE_IMAGE",
    "BASE_INCLUDE",
    "DEVMLOPS_IMAGE",
    "DEVMLOPS_KSERVE_IMAGE",
    "MODEL_SERVER_IMAGE",
    "PythonImage",
    "build_python_image",
    "devmlops_image",
    "model_server_image",
    "project_files",
]

BASE_IMAGE = "devmlops.local/debian-python:bookworm"
# python3-venv brings ensurepip (pip and setuptools wheels from Debian), which the venv is made with.
BASE_INCLUDE = ("python3", "python3-venv")
DEVMLOPS_IMAGE = "devmlops.local/devmlops:local"
# With the kserve extra (kserve-storage: the initializer downloads https://, s3://, gs://, ... models), as the
# Dockerfile builds it with WITH_KSERVE=true: what a ClusterStorageContainer runs (make e2e).
DEVMLOPS_KSERVE_IMAGE = "devmlops.local/devmlops:local-kserve"
MODEL_SERVER_IMAGE = "devmlops.local/mlserver-sklearn:local"
# Bump when the way these images are built changes, so archives built the old way are not reused.
RECIPE = 1
USER = "65532:65532"
# MLServer (Seldon's, the server KServe's `kserve-mlserver` runtime runs for sklearn models over the v2 protocol) and
# its sklearn runtime; KServe's own sklearnserver is not published on PyPI. Pinned: a rebuild gets the same server.
MODEL_SERVER_REQUIREMENTS = ("mlserver==1.7.1", "mlserver-sklearn==1.7.1")
_SKIPPED_PARTS = {"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"}
_SKIPPED_SUFFIXES = (".pyc", ".pyo")
# Passed from this machine into the chrooted pip when set: where PyPI is and how to reach it.
_PIP_ENV = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_DEFAULT_TIMEOUT", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")
_HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")


@dataclass(frozen=True, slots=True)
class PythonImage:
    """An image made of the Debian base and one venv at ``/opt/<venv>``: ``requirements`` are pip's arguments (from
    PyPI; ``{src}`` stands for the copied ``project``), ``smoke`` a command the built venv must run inside the chroot,
    ``strip_pip`` removes pip and setuptools afterwards (not needed at run time: fewer files, fewer CVEs);
    ``upgrade_pip`` takes pip from PyPI before installing (Debian's pip 23.0 backtracks for an hour through boto3 and
    botocore releases on the kserve extra's requirements; today's resolves them at once)."""

    name: str
    slug: str
    venv: str
    requirements: tuple[str, ...]
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...] = ()
    smoke: tuple[str, ...] = ()
    project: Path | None = None
    strip_pip: bool = True
    upgrade_pip: bool = False


def project_files(project: Path) -> list[Path]:
    """What the devmlops image is built from, as the Dockerfile's context (.dockerignore): pyproject.toml, README.md
    and src/ less bytecode, tool caches and egg-info. Sorted, relative to ``project``."""
    files = [Path("pyproject.toml"), Path("README.md")]
    for path in sorted((project / "src").rglob("*")):
        relative = path.relative_to(project)
        if not path.is_file() or _SKIPPED_PARTS & set(relative.parts):
            continue
        if path.name.endswith(_SKIPPED_SUFFIXES) or any(p.endswith(".egg-info") for p in relative.parts):
            continue
        files.append(relative)
    return files


def devmlops_image(project: Path, *, kserve: bool = False) -> PythonImage:
    """The devmlops image; ``kserve``: with the kserve extra (kserve-storage and the cloud SDKs it brings)."""
    return PythonImage(
        name=DEVMLOPS_KSERVE_IMAGE if kserve else DEVMLOPS_IMAGE,
        slug="devmlops-kserve" if kserve else "devmlops",
        venv="devmlops",
        requirements=("{src}[kserve]",) if kserve else ("{src}",),
        upgrade_pip=kserve,
        entrypoint=("devmlops",),
        cmd=("--help",),
        smoke=("devmlops", "--version"),
        project=project,
    )


def model_server_image() -> PythonImage:
    return PythonImage(
        name=MODEL_SERVER_IMAGE,
        slug="mlserver-sklearn",
        venv="mlserver",
        requirements=MODEL_SERVER_REQUIREMENTS,
        entrypoint=("mlserver",),
        cmd=("start", "/mnt/models"),
        smoke=("mlserver", "--version"),
        strip_pip=False,  # mlserver imports setuptools' pkg_resources at start
    )


def cache_key(image: PythonImage, base_digest: str) -> str:
    """sha256 over everything that decides the image's content: the recipe, the base's manifest digest, the
    requirements, the runtime configuration and each project file's path and bytes."""
    digest = hashlib.sha256()
    config = {
        "recipe": RECIPE,
        "base": base_digest,
        "name": image.name,
        "venv": image.venv,
        "requirements": image.requirements,
        "entrypoint": image.entrypoint,
        "cmd": image.cmd,
        "strip_pip": image.strip_pip,
    }
    if image.upgrade_pip:  # only when set, so the keys of the other images stay what they were
        config["upgrade_pip"] = True
    digest.update(json.dumps(config, sort_keys=True).encode())
    if image.project is not None:
        for relative in project_files(image.project):
            digest.update(f"\0{relative}\0".encode())
            digest.update(hashlib.sha256((image.project / relative).read_bytes()).digest())
    return digest.hexdigest()


class _Steps:
    """Progress lines for the long steps: what starts, and how long it took."""

    def __init__(self, name: str, log: Callable[[str], None]) -> None:
        self._name, self._log, self._started = name, log, time.monotonic()

    def step(self, what: str) -> _Step:
        return _Step(self, what)

    def say(self, text: str) -> None:
        self._log(f"image {self._name}: {text}")

    def total(self) -> float:
        return time.monotonic() - self._started


class _Step:
    def __init__(self, steps: _Steps, what: str) -> None:
        self._steps, self._what = steps, what

    def __enter__(self) -> None:
        self._started = time.monotonic()
        self._steps.say(f"{self._what} ...")

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self._steps.say(f"{self._what}: done in {time.monotonic() - self._started:.1f}s")


def _chroot_env(venv: str) -> dict[str, str]:
    env = {
        "PATH": f"/opt/{venv}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "PIP_NO_CACHE_DIR": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_ROOT_USER_ACTION": "ignore",
        "PIP_PROGRESS_BAR": "off",
        "PIP_CERT": "/etc/ssl/certs/devmlops-build-ca.crt",
    }
    env |= {key: os.environ[key] for key in _PIP_ENV if os.environ.get(key)}
    return env


def _chroot(
    rootfs: Path, argv: Sequence[str], what: str, *, env: dict[str, str], echo: Callable[[str], None] | None = None
) -> str:
    """Run ``argv`` chrooted into ``rootfs``; with ``echo``, pass the lines pip prints about each package on (the
    progress of a long install)."""
    command = ["chroot", str(rootfs), *argv]
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd="/"
    ) as proc:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if echo is not None and line.startswith(("Collecting ", "Building ", "Successfully installed")):
                echo(line.rstrip()[:160])
        code = proc.wait()
    output = "".join(lines)
    if code != 0:
        raise HarnessError(f"{what}: `{' '.join(argv)}` exited {code} in the image's root:\n{output[-4000:]}")
    return output


def _prepare_root(rootfs: Path) -> None:
    """What pip needs inside the scratch root (none of it reaches the image: only the venv does): this machine's
    resolver and CA bundle, and /dev/null."""
    etc = rootfs / "etc"
    resolv = etc / "resolv.conf"
    if resolv.is_symlink() or resolv.exists():
        resolv.unlink()
    shutil.copy2("/etc/resolv.conf", resolv)
    (etc / "ssl/certs").mkdir(parents=True, exist_ok=True)
    if _HOST_CA.exists():
        shutil.copy2(_HOST_CA, etc / "ssl/certs/devmlops-build-ca.crt")
    null = rootfs / "dev/null"
    if not null.exists():
        null.parent.mkdir(exist_ok=True)
        os.mknod(null, 0o666 | 0o020000, os.makedev(1, 3))
        os.chmod(null, 0o666)  # noqa: S103 - /dev/null, in the scratch root only


@contextmanager
def _scratch(cache_root: Path, slug: str) -> Iterator[Path]:
    cache_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{slug}-build-", dir=cache_root))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def build_python_image(
    image: PythonImage, *, cache_root: Path | None = None, log: Callable[[str], None] = print
) -> Path:
    """The image's OCI archive, from the cache when its key matches, else built (needs root and PyPI). Beside it,
    ``.packages.txt`` is pip's freeze of the venv: which versions went in."""
    cache_root = cache_root or image_cache_root()
    steps = _Steps(image.name, log)
    base = debian_archive(cache_root, include=BASE_INCLUDE, name=BASE_IMAGE, log=steps.say)
    key = cache_key(image, manifest_digest(base))
    archive = cache_root / f"{image.slug}-{key[:16]}_r{RECIPE}.oci.tar"
    if archive.exists():
        steps.say(f"cached: {archive} (key {key[:16]}, base {manifest_digest(base)[:19]})")
        return archive
    if os.geteuid() != 0:
        raise HarnessError(
            f"building {image.name} without Docker needs root (pip runs chrooted into the Debian root): "
            "run as root, or `make image` where a Docker engine answers"
        )
    for tool in ("umoci", "chroot"):
        if shutil.which(tool) is None:
            raise HarnessError(f"building {image.name} needs {tool}: apt-get install umoci coreutils")
    steps.say(f"building (key {key[:16]}) on {BASE_IMAGE} {manifest_digest(base)[:19]}")
    what = f"building image {image.name}"
    env = _chroot_env(image.venv)
    venv = f"/opt/{image.venv}"
    with _scratch(cache_root, image.slug) as work:
        layout, bundle = work / "oci", work / "bundle"
        ref = f"{layout}:latest"
        with steps.step("unpacking the Debian base"):
            layout.mkdir()
            with tarfile.open(base) as tar:
                tar.extractall(layout, filter="tar")
            run_tool(["umoci", "unpack", "--image", ref, str(bundle)], what)
        rootfs = bundle / "rootfs"
        _prepare_root(rootfs)
        requirements = list(image.requirements)
        if image.project is not None:
            for relative in project_files(image.project):
                target = rootfs / "src" / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(image.project / relative, target)
            requirements = [r.replace("{src}", "/src") for r in requirements]
        with steps.step(f"pip install {' '.join(image.requirements)} into {venv} (from PyPI)"):
            _chroot(rootfs, ["python3", "-m", "venv", venv], what, env=env)
            if image.upgrade_pip:
                _chroot(rootfs, [f"{venv}/bin/pip", "install", "--upgrade", "pip"], what, env=env, echo=steps.say)
            _chroot(rootfs, [f"{venv}/bin/pip", "install", "--compile", *requirements], what, env=env, echo=steps.say)
            _chroot(rootfs, [f"{venv}/bin/pip", "check"], what, env=env)
        if image.smoke:
            steps.say("smoke test: " + _chroot(rootfs, list(image.smoke), what, env=env).strip())
        frozen = _chroot(rootfs, [f"{venv}/bin/pip", "freeze", "--all"], what, env=env)
        if image.strip_pip:
            _chroot(rootfs, [f"{venv}/bin/pip", "uninstall", "--yes", "pip", "setuptools"], what, env=env)
        with steps.step(f"packing {venv} as a layer"):
            run_tool(["umoci", "insert", "--image", ref, str(rootfs / venv.lstrip("/")), venv], what, timeout=900)
            config = ["umoci", "config", "--image", ref, "--os", "linux", "--architecture", "amd64"]
            config += [f"--config.user={USER}", "--config.workingdir=/tmp"]
            config += ["--config.entrypoint=" + part for part in image.entrypoint]
            config += ["--config.cmd=" + part for part in image.cmd]
            config += ["--config.env=" + entry for entry in _runtime_env(image.venv)]
            config += [f"--config.label=org.opencontainers.image.title={image.slug}"]
            config += [f"--config.label=dev.devmlops.image.key={key}"]
            run_tool(config, what)
            built = finish_archive(layout, image.name, work / "image.oci.tar")
        archive.with_suffix(".packages.txt").write_text(frozen)
        built.replace(archive)
    size = archive.stat().st_size / 2**20
    steps.say(f"built {archive} ({size:.0f} MiB) in {steps.total():.0f}s")
    return archive


def _runtime_env(venv: str) -> list[str]:
    return [
        f"PATH=/opt/{venv}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        f"VIRTUAL_ENV=/opt/{venv}",
        "PYTHONDONTWRITEBYTECODE=1",
        "PYTHONUNBUFFERED=1",
        "HOME=/tmp",
        "LANG=C.UTF-8",
    ]


def _main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m devmlops.harness.pyimages", description=__doc__.split("\n")[0])
    parser.add_argument("image", choices=["devmlops", "devmlops-kserve", "model-server"])
    parser.add_argument("--project-dir", type=Path, default=Path.cwd())
    args = parser.parse_args(argv)
    if args.image == "model-server":
        image = model_server_image()
    else:
        image = devmlops_image(args.project_dir, kserve=args.image == "devmlops-kserve")
    try:
        archive = build_python_image(image, log=lambda line: print(line, file=sys.stderr, flush=True))
    except HarnessError as exc:
        print(f"make image: {exc.user_message}", file=sys.stderr)
        return 1
    print(archive)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
