"""The devmlops image's cache key: what a rebuild depends on (devmlops.harness.pyimages)."""

from __future__ import annotations

from pathlib import Path

from devmlops.harness.pyimages import cache_key, devmlops_image, project_files


def test_the_image_cache_key_follows_the_source_tree(tmp_path: Path) -> None:
    """A changed source file is a new key (a rebuild); an unchanged tree the same key (a cache hit)."""
    project = tmp_path / "project"
    (project / "src/pkg/__pycache__").mkdir(parents=True)
    (project / "pyproject.toml").write_text("[project]\nname = 'pkg'\n")
    (project / "README.md").write_text("readme\n")
    (project / "src/pkg/__init__.py").write_text("x = 1\n")
    image = devmlops_image(project)
    first = cache_key(image, "sha256:base")
    (project / "src/pkg/__pycache__/__init__.cpython-311.pyc").write_bytes(b"bytecode")

    assert cache_key(image, "sha256:base") == first
    assert cache_key(image, "sha256:other-base") != first
    (project / "src/pkg/__init__.py").write_text("x = 2\n")
    assert cache_key(image, "sha256:base") != first


def test_the_image_is_built_from_pyproject_the_readme_and_src_without_bytecode_or_egg_info(tmp_path: Path) -> None:
    (tmp_path / "src/pkg/__pycache__").mkdir(parents=True)
    (tmp_path / "src/pkg.egg-info").mkdir()
    (tmp_path / "tests").mkdir()
    for name in ("pyproject.toml", "README.md", "src/pkg/__init__.py", "src/pkg/py.typed", "tests/test_x.py"):
        (tmp_path / name).write_text("")
    (tmp_path / "src/pkg/__pycache__/__init__.cpython-311.pyc").write_text("")
    (tmp_path / "src/pkg.egg-info/PKG-INFO").write_text("")

    assert [str(p) for p in project_files(tmp_path)] == [
        "pyproject.toml",
        "README.md",
        "src/pkg/__init__.py",
        "src/pkg/py.typed",
    ]
