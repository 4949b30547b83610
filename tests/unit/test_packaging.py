"""The container image and the kind end-to-end run, checked without Docker (this machine has none): the Dockerfile's
stages, user and entrypoint, that everything it copies reaches the build context past .dockerignore, that
`make kind-e2e` runs the e2e steps (devmlops.harness.e2e) on a kind cluster, that the workflow runs it, and that
`make image` takes its Docker-free path without Docker. Building the image and the kind run itself happen in
.github/workflows/kind-e2e.yaml."""

from __future__ import annotations

import json
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
MAKEFILE = ROOT / "Makefile"
WORKFLOW = ROOT / ".github" / "workflows" / "kind-e2e.yaml"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


# --- a small Dockerfile reader ----------------------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) of each instruction: continuations joined, comment lines dropped (also inside a
    continuation, as Docker does)."""
    instructions: list[tuple[str, str]] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and current):
            continue
        if not line:
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, rest = current.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        current = ""
    assert not current, f"the Dockerfile ends inside a continued instruction: {current!r}"
    return instructions


def stages(instructions: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """The instructions of each build stage, each starting with its FROM (global ARGs before the first are dropped)."""
    result: list[list[tuple[str, str]]] = []
    for keyword, args in instructions:
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, args))
    return result


def split_args(args: str) -> tuple[list[str], list[str]]:
    """(--flags, operands) of a COPY/ADD-like instruction, exec (JSON) form or shell form."""
    words = shlex.split(args)
    flags = [w for w in words if w.startswith("--")]
    rest = args.split(None, len(flags))[-1] if flags else args
    operands = json.loads(rest) if rest.lstrip().startswith("[") else [w for w in words if not w.startswith("--")]
    return flags, operands


def env_values(stage: list[tuple[str, str]]) -> dict[str, str]:
    values: dict[str, str] = {}
    for keyword, args in stage:
        if keyword == "ENV":
            for word in shlex.split(args):
                key, sep, value = word.partition("=")
                assert sep, f"ENV in the legacy 'key value' form: {args!r}"
                values[key] = value
    return values


def arg_defaults(instructions: list[tuple[str, str]]) -> dict[str, str]:
    defaults: dict[str, str] = {}
    for keyword, args in instructions:
        if keyword == "ARG":
            name, _, default = args.partition("=")
            defaults.setdefault(name.strip(), default.strip())
    return defaults


INSTRUCTIONS = dockerfile_instructions(DOCKERFILE.read_text())
STAGES = stages(INSTRUCTIONS)
FINAL = STAGES[-1]


# --- .dockerignore with Docker's matching rules -----------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's pattern syntax (Go filepath.Match plus ``**``) as a regular expression over slash-separated paths."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")  # any number of folders, none included
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[" and "]" in pattern[i + 1 :]:
            end = pattern.index("]", i + 1)
            body = pattern[i + 1 : end]
            body = "^" + body[1:] if body.startswith(("!", "^")) else body
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end + 1
            continue
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


def dockerignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """(is_exception, regex) per line, in order; patterns are cleaned and made relative as Docker does."""
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = posixpath.normpath(line[1:].strip() if exception else line).lstrip("/")
        rules.append((exception, _pattern_regex(pattern)))
    return rules


def is_excluded(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: a path is excluded when the last pattern that matches it, or one of its parent folders, is
    not an exception (``!``)."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for exception, regex in rules:
        if any(regex.match(candidate) for candidate in candidates):
            excluded = not exception
    return excluded


RULES = dockerignore_rules(DOCKERIGNORE.read_text())


def in_context(path: Path) -> bool:
    return not is_excluded(path.relative_to(ROOT).as_posix(), RULES)


def context_copies() -> Iterator[tuple[str, list[str]]]:
    """(destination, sources) of every COPY/ADD that reads from the build context (not --from another stage)."""
    for stage in STAGES:
        for keyword, args in stage:
            if keyword in {"COPY", "ADD"}:
                flags, operands = split_args(args)
                if not any(flag.startswith("--from") for flag in flags):
                    yield operands[-1], operands[:-1]


def source_files(folder: Path) -> list[Path]:
    """Every file under a folder except bytecode and build leftovers, which no build needs."""
    junk = {"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"}
    return [
        path
        for path in folder.rglob("*")
        if path.is_file()
        and not junk.intersection(path.parts)
        and not any(part.endswith(".egg-info") for part in path.parts)
        and path.suffix not in {".pyc", ".pyo"}
    ]


# --- the Dockerfile ---------------------------------------------------------------------------------------------------


def test_the_image_is_built_in_two_stages_and_the_final_one_copies_only_the_venv() -> None:
    assert len(STAGES) >= 2, "a builder stage and a runtime stage"
    final_copies = [split_args(args) for keyword, args in FINAL if keyword in {"COPY", "ADD"}]
    assert final_copies, "the final stage copies the venv from the builder"
    for flags, operands in final_copies:
        assert any(flag.startswith("--from=") for flag in flags), f"the final stage copies from the context: {operands}"
        assert operands == ["/opt/devmlops", "/opt/devmlops"], operands
    assert not [args for keyword, args in FINAL if keyword == "RUN"], "nothing is installed in the final stage"


def test_both_stages_start_from_the_same_python_base_pinned_to_a_patch_release() -> None:
    bases = {args.split()[0] for keyword, args in INSTRUCTIONS if keyword == "FROM"}
    assert bases == {"${PYTHON_IMAGE}"}, f"every stage must use the one base (the venv links to its python): {bases}"
    default = arg_defaults(INSTRUCTIONS)["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", default), default


def test_the_image_runs_as_a_non_root_user() -> None:
    users = [(index, args) for index, (keyword, args) in enumerate(FINAL) if keyword == "USER"]
    assert users, "the final stage sets USER"
    for _, user in users:
        uid, _, gid = user.partition(":")
        assert uid.isdigit(), f"USER {user!r}: a numeric uid lets runAsNonRoot verify it"
        assert int(uid) != 0, f"USER {user!r} is root"
        assert not gid or (gid.isdigit() and int(gid) != 0), f"USER {user!r}: the group is root or not numeric"
    first_user = users[0][0]
    after = [keyword for keyword, _ in FINAL[first_user:]]
    assert "RUN" not in after, "a RUN after USER: with the user set it either fails or hides a later USER root"
    assert after.index("ENTRYPOINT") > 0, "ENTRYPOINT after USER"
    assert users[-1][1] == "65532:65532", "the chart's podSecurityContext runs as 65532:65532"


def test_one_image_runs_the_devmlops_command_for_every_process() -> None:
    entrypoints = [json.loads(args) for keyword, args in FINAL if keyword == "ENTRYPOINT"]
    cmds = [json.loads(args) for keyword, args in FINAL if keyword == "CMD"]
    assert entrypoints[-1:] == [["devmlops"]]
    assert cmds[-1:] == [["--help"]]
    assert "devmlops" in PYPROJECT["project"]["scripts"]
    assert env_values(FINAL)["PATH"].startswith("/opt/devmlops/bin:"), "devmlops (and python) come from the venv"


def test_the_runtime_writes_nothing_outside_tmp() -> None:
    env = env_values(FINAL)
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert env.get("PYTHONUNBUFFERED") == "1"
    assert env.get("HOME") == "/tmp"
    workdirs = [args for keyword, args in FINAL if keyword == "WORKDIR"]
    assert workdirs[-1:] == ["/tmp"], workdirs


def test_the_kserve_extra_is_an_opt_in_build_argument() -> None:
    assert "kserve" in PYPROJECT["project"]["optional-dependencies"]
    assert arg_defaults(INSTRUCTIONS).get("WITH_KSERVE") == "false"
    install = " ".join(args for keyword, args in STAGES[0] if keyword == "RUN")
    assert "[kserve]" in install
    assert "$WITH_KSERVE" in install


def test_the_image_carries_oci_labels_that_match_the_project() -> None:
    labels: dict[str, str] = {}
    for keyword, args in FINAL:
        if keyword == "LABEL":
            for word in shlex.split(args):
                key, _, value = word.partition("=")
                labels[key] = value
    for key in ("title", "description", "source", "licenses", "version", "revision", "created"):
        assert f"org.opencontainers.image.{key}" in labels, key
    assert labels["org.opencontainers.image.licenses"] == PYPROJECT["project"]["license"]
    assert arg_defaults(INSTRUCTIONS)["VERSION"] == PYPROJECT["project"]["version"]


# --- the build context ------------------------------------------------------------------------------------------------


def test_the_dockerignore_matcher_follows_dockers_rules() -> None:
    rules = dockerignore_rules("*\n!src/\n**/__pycache__\n/docs/*.md\n!docs/keep.md\nbuild?\n")
    assert is_excluded("tests/unit/test_x.py", rules)
    assert not is_excluded("src/devmlops/cli.py", rules), "an exception re-includes a folder and what it holds"
    assert is_excluded("src/devmlops/__pycache__/cli.cpython-311.pyc", rules), "a later rule excludes again"
    assert is_excluded("docs/a.md", rules)
    assert not is_excluded("docs/keep.md", rules), "the last matching rule wins"
    assert is_excluded("build1", rules)
    assert is_excluded("README.md", rules)
    assert not is_excluded("README.md", dockerignore_rules("*.txt\nsrc"))


def test_every_path_the_dockerfile_copies_from_the_context_exists_and_is_not_dockerignored() -> None:
    copies = list(context_copies())
    assert copies, "the builder copies the project from the build context"
    for destination, sources in copies:
        for source in sources:
            matches = list(ROOT.glob(source))
            assert matches, f"COPY {source} {destination}: no such path in the repository"
            for path in matches:
                assert in_context(path), f"COPY {source}: .dockerignore excludes {path.relative_to(ROOT)}"
                for file in source_files(path) if path.is_dir() else []:
                    assert in_context(file), f"COPY {source}: .dockerignore excludes {file.relative_to(ROOT)}"


def test_what_setuptools_builds_from_is_copied_and_reaches_the_context() -> None:
    copied = {source.rstrip("/") for _, sources in context_copies() for source in sources}
    readme = PYPROJECT["project"]["readme"]
    assert {"pyproject.toml", readme} <= copied, copied
    for where in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["where"]:
        assert where in copied, f"the packages under {where}/ are not copied"
    # Package data: every file the patterns select must reach the build, and py.typed must exist.
    for package, patterns in PYPROJECT["tool"]["setuptools"]["package-data"].items():
        package_dir = ROOT / "src" / package.replace(".", "/")
        for pattern in patterns:
            for path in package_dir.glob(pattern):
                assert in_context(path), f"package data {path.relative_to(ROOT)} is excluded by .dockerignore"
    assert (ROOT / "src" / "devmlops" / "py.typed").is_file()
    assert in_context(ROOT / "src" / "devmlops" / "py.typed")


@pytest.mark.parametrize(
    "path",
    [
        ".git/HEAD",
        ".venv/bin/python",
        "tests/unit/test_packaging.py",
        "docs/benchmarks.md",
        "charts/devmlops/values.yaml",
        "config/samples/00-policy.yaml",
        ".mypy_cache/3.11/x.json",
        ".hypothesis/examples/x",
        "src/devmlops/__pycache__/cli.cpython-311.pyc",
        "src/devmlops.egg-info/PKG-INFO",
        "Dockerfile",
    ],
)
def test_the_build_context_leaves_out(path: str) -> None:
    assert is_excluded(path, RULES), f"{path} would be sent to the Docker daemon"


# --- make kind-e2e ---------------------------------------------------------------------------------------------------


def _recipe(target: str) -> tuple[list[str], list[str]]:
    """(prerequisites, recipe lines) of a Makefile rule."""
    lines = MAKEFILE.read_text().splitlines()
    (start,) = [i for i, line in enumerate(lines) if line.startswith(f"{target}:")]
    prerequisites = lines[start].split(":", 1)[1].split("##")[0].split()
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return prerequisites, recipe


def test_make_kind_e2e_checks_docker_and_kind_first_then_runs_the_e2e_steps_on_kind() -> None:
    """The e2e module's steps with --cluster kind; the tool check is a prerequisite, so it runs before make expands
    $(TOOLS_DIR) (which builds the tools) in the recipe."""
    prerequisites, recipe = _recipe("kind-e2e")
    assert prerequisites == ["kind-check"]
    (run,) = recipe
    assert "-m devmlops.harness.e2e --cluster kind" in run
    _, check = _recipe("kind-check")
    assert check == ["@$(PY) -m devmlops.harness.kindcluster --check"]
    _, local = _recipe("e2e")
    assert "--cluster" not in local[0], "make e2e runs on the local node, as before"
    assert not (ROOT / "hack" / "kind-e2e.sh").exists(), "no second copy of the steps"


def _path_with_only(tmp_path: Path, *tools: str) -> str:
    """A PATH holding symlinks to just these tools (so docker, kind, ... are surely missing)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in tools:
        found = shutil.which(tool)
        if found is None:
            pytest.skip(f"{tool} is not installed")
        (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


# --- the workflow and the Makefile ------------------------------------------------------------------------------------


def _workflow() -> dict[Any, Any]:
    data = yaml.safe_load(WORKFLOW.read_text())
    assert isinstance(data, dict)
    return data


def test_the_workflow_builds_and_runs_the_kind_e2e_on_ubuntu() -> None:
    workflow = _workflow()
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert triggers["push"]["branches"] == ["main"]
    assert "pull_request" in triggers
    assert "workflow_dispatch" in triggers
    (job,) = workflow["jobs"].values()
    assert job["runs-on"] == "ubuntu-latest"
    steps = job["steps"]
    uses = [step.get("uses", "").split("@")[0] for step in steps]
    for action in (
        "actions/checkout",
        "actions/setup-python",
        "actions/setup-go",
        "azure/setup-helm",
        "helm/kind-action",
    ):
        assert action in uses, action
    kind_step = steps[uses.index("helm/kind-action")]
    assert kind_step["with"]["install_only"] is True, "devmlops.harness.kindcluster makes the cluster itself"
    assert str(steps[uses.index("actions/setup-python")]["with"]["python-version"]) == "3.11"
    runs = [step["run"] for step in steps if "run" in step]
    assert any(re.search(r"(^|\s)make kind-e2e(\s|$)", run) for run in runs), runs
    assert "Docker" in WORKFLOW.read_text().split("\nname:")[0], "the header says it needs Docker"


def test_make_image_without_docker_builds_without_it_and_names_what_that_path_lacks(tmp_path: Path) -> None:
    """No docker on PATH: make image takes the Docker-free path (devmlops.harness.pyimages) and says so; here PATH has
    no debootstrap and the image cache (under HOME) is empty, so it stops naming debootstrap, before any build."""
    path = _path_with_only(tmp_path, "bash", "make")
    # The interpreter itself (PATH's python3 may be a version manager's shim that needs more tools than this PATH has).
    (tmp_path / "bin" / "python3").symlink_to(Path(sys.executable).resolve())
    result = subprocess.run(
        [str(tmp_path / "bin" / "make"), "--no-print-directory", "-C", str(ROOT), "image"],
        capture_output=True,
        text=True,
        env={"PATH": path, "HOME": str(tmp_path)},
        timeout=60,
        check=False,
    )
    assert result.returncode != 0, result.stdout + result.stderr
    assert "no Docker engine here; building without Docker" in result.stderr, result.stderr
    assert "apt-get install debootstrap" in result.stderr, result.stderr
    assert "docker build" not in result.stdout + result.stderr
    assert not (tmp_path / ".cache/devmlops/images").exists() or not any(
        (tmp_path / ".cache/devmlops/images").glob("*.tar")
    )


def test_make_help_lists_the_image_and_kind_e2e_targets() -> None:
    makefile = (ROOT / "Makefile").read_text()
    phony = next(line for line in makefile.splitlines() if line.startswith(".PHONY:")).split()
    assert {"image", "kind-e2e"} <= set(phony)
    result = subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), "help"], capture_output=True, text=True, check=True
    )
    listed = {line.split()[1] for line in result.stdout.splitlines() if line.strip().startswith("make ")}
    assert {"image", "kind-e2e"} <= listed, result.stdout
