"""Images without Docker: what umoci writes is an OCI layout containerd can import under the name we give it."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from devmlops.errors import HarnessError
from devmlops.harness.images import ImageSpec, build_oci_archive, find_busybox, is_static_executable

needs_umoci = pytest.mark.skipif(
    shutil.which("umoci") is None or os.geteuid() != 0,
    reason="umoci (apt-get install umoci) and root (it unpacks as root) are needed to build an image",
)


def test_a_dynamically_linked_program_is_not_static_and_a_text_file_is_no_executable(tmp_path: Path) -> None:
    assert not is_static_executable(Path(sys.executable).resolve())
    text = tmp_path / "script.sh"
    text.write_text("#!/bin/sh\necho hi\n")
    assert not is_static_executable(text)


def test_debians_busybox_static_is_found_and_is_static() -> None:
    try:
        busybox = find_busybox()
    except HarnessError as exc:
        pytest.skip(exc.user_message)
    assert is_static_executable(busybox)


def _blob(layout: dict[str, bytes], digest: str) -> bytes:
    return layout["blobs/sha256/" + digest.removeprefix("sha256:")]


@needs_umoci
def test_an_image_is_an_oci_layout_named_for_containerd_with_its_files_and_entrypoint(tmp_path: Path) -> None:
    program = tmp_path / "hello"
    program.write_bytes(b"\x7fELF-not-really")
    spec = ImageSpec(
        name="devmlops.local/test:1",
        files={"bin/hello": program},
        symlinks={"bin/hi": "hello"},
        entrypoint=["/bin/hello"],
        cmd=["--loud"],
    )

    archive = build_oci_archive(spec, tmp_path)

    with tarfile.open(archive) as tar:
        layout = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    assert json.loads(layout["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    (entry,) = json.loads(layout["index.json"])["manifests"]
    assert entry["annotations"]["io.containerd.image.name"] == "devmlops.local/test:1"
    manifest: dict[str, Any] = json.loads(_blob(layout, entry["digest"]))
    config = json.loads(_blob(layout, manifest["config"]["digest"]))
    assert config["config"]["Entrypoint"] == ["/bin/hello"]
    assert config["config"]["Cmd"] == ["--loud"]
    assert (config["os"], config["architecture"]) == ("linux", "amd64")
    files: dict[str, tarfile.TarInfo] = {}
    for layer in manifest["layers"]:
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(_blob(layout, layer["digest"])))) as tar:
            files |= {m.name.removeprefix("./"): m for m in tar.getmembers()}
    assert files["bin/hello"].isfile()
    assert files["bin/hi"].issym()
    assert files["bin/hi"].linkname == "hello"
    assert files["tmp"].isdir()
    assert files["tmp"].mode & 0o1777 == 0o1777
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hello", "test-1.oci.tar"], "only the archive is left"
