"""go_install (harness/toolcache.py) with a stand-in ``go`` on PATH that writes its GOBIN as ``go install`` does
(the real one runs in `make registries`): the binary appears only complete, a failed build leaves nothing the next
run would take for a finished one, and a binary in place is not built again."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from devmlops.harness.toolcache import cache_root, go_install

MODULE = "example.com/tool/v2/cmd/widget@v1.2.3"
FAKE_GO = """#!/bin/sh
echo "$@" >> "{calls}"
printf 'half' > "$GOBIN/widget"
[ -e "{fail}" ] && exit 1
printf 'whole' > "$GOBIN/widget"
"""


@pytest.fixture
def fake_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    go = bin_dir / "go"
    go.write_text(FAKE_GO.format(calls=tmp_path / "calls", fail=tmp_path / "fail"))
    go.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path


def test_the_binary_is_renamed_into_place_whole_and_built_once(fake_go: Path) -> None:
    destination = fake_go / "cache" / "widget-v1.2.3" / "widget"
    assert go_install(MODULE, destination) == destination
    assert destination.read_text() == "whole"
    assert go_install(MODULE, destination) == destination
    assert (fake_go / "calls").read_text().splitlines() == [f"install {MODULE}"]
    assert sorted(p.name for p in destination.parent.iterdir()) == ["widget"]  # no staging folder left


def test_a_failed_build_leaves_nothing_behind(fake_go: Path) -> None:
    (fake_go / "fail").touch()
    destination = fake_go / "cache" / "widget-v1.2.3" / "widget"
    with pytest.raises(subprocess.CalledProcessError):
        go_install(MODULE, destination)
    assert list(destination.parent.iterdir()) == []


def test_the_cache_root_honours_devmlops_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DEVMLOPS_CACHE", str(tmp_path))
    assert cache_root() == tmp_path
    monkeypatch.delenv("DEVMLOPS_CACHE")
    assert cache_root() == Path.home() / ".cache" / "devmlops"
