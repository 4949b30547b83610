"""Where a KServe predictor Pod's storage initializer may mount volumes (only where KServe and the API server put
them, never where a namespace editor's ServiceAccount or Secret annotation says) and which S3 endpoint it may be given
(only one every ClusterModelPolicy selecting the model allows): core/storageinit.py."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from devmlops.core.storageinit import INITIALIZER_MOUNT_PATHS, endpoint_problems, initializer_run_problems

ROOT = Path(__file__).resolve().parents[3]
INITIALIZER = yaml.safe_load((ROOT / "config" / "kserve" / "devmlops-storage-container.yaml").read_text())["spec"][
    "container"
]


def initializer(*mounts: dict[str, Any]) -> dict[str, Any]:
    """config/kserve's storage initializer as KServe makes it, with ``mounts``."""
    made = copy.deepcopy(INITIALIZER)
    made["volumeMounts"] = list(mounts)
    return made


def test_the_mounts_kserve_and_the_api_server_make_pass() -> None:
    """The model folder, the service account token, KServe's default CA bundle folder (e2e mounts the model store's
    CA there), the GCS and HDFS credential folders."""
    mounts = [{"name": f"v{i}", "mountPath": path} for i, path in enumerate(sorted(INITIALIZER_MOUNT_PATHS))]
    assert initializer_run_problems(initializer(*mounts)) == []
    assert initializer_run_problems(initializer()) == []


@pytest.mark.parametrize(
    "path",
    [
        "/opt/devmlops/lib/python3.11/site-packages",  # a .pth file there runs at interpreter start
        "/opt/devmlops/bin",  # the devmlops entrypoint's folder, first on sys.path
        "/tmp/.aws",  # HOME=/tmp: a config with credential_process runs a program
        "/etc/ssl/custom-certs/../../../opt/devmlops",
        "/mnt/models/",  # not the path KServe writes
    ],
)
def test_a_mount_anywhere_else_is_refused_naming_the_path(path: str) -> None:
    problems = initializer_run_problems(
        initializer({"name": "kserve-provision-location", "mountPath": "/mnt/models"}, {"name": "x", "mountPath": path})
    )
    assert len(problems) == 1
    assert f"volumeMounts at [{path!r}]" in problems[0]


def test_mounts_of_the_wrong_shape_are_refused() -> None:
    """The API server has validated the types; a review that carries something else still fails closed."""
    assert initializer_run_problems(initializer({"name": "x"}))  # no mountPath
    assert initializer_run_problems(initializer("not a mount"))  # type: ignore[arg-type]


ALLOWING = (("eu", ("minio.models.svc:9000", "*.s3.example.com")),)


def endpoint(name: str, value: str) -> dict[str, Any]:
    made = copy.deepcopy(INITIALIZER)
    made["env"] = [*made["env"], {"name": name, "value": value}]
    return made


def test_no_endpoint_needs_no_policy() -> None:
    assert endpoint_problems(INITIALIZER, ()) == []


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("S3_ENDPOINT", "minio.models.svc:9000"),
        ("AWS_ENDPOINT_URL", "http://minio.models.svc:9000"),
        ("AWS_ENDPOINT_URL", "https://eu.s3.example.com"),
    ],
)
def test_an_endpoint_every_cluster_policy_allows_passes(name: str, value: str) -> None:
    assert endpoint_problems(endpoint(name, value), ALLOWING) == []


@pytest.mark.parametrize(
    ("container", "allow_lists", "expected"),
    [
        (endpoint("S3_ENDPOINT", "mallory.example.com"), ALLOWING, "allowed by no spec.allow.s3Endpoints of eu"),
        (endpoint("S3_ENDPOINT", "minio.models.svc:9000"), (), "allowed by no spec.allow.s3Endpoints"),
        (
            endpoint("AWS_ENDPOINT_URL", "https://minio.models.svc:9000"),
            (*ALLOWING, ("team", ("s3.example.com",))),
            "of team",
        ),
        # A glob judges a host, not a URL: "*.s3.example.com" would match this one's text before the "@".
        (endpoint("AWS_ENDPOINT_URL", "https://eu.s3.example.com@mallory.example.com"), ALLOWING, "host[:port]"),
        (endpoint("S3_ENDPOINT", "minio.models.svc:9000/../mallory"), ALLOWING, "host[:port]"),
        (
            {"env": [{"name": "S3_ENDPOINT", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}]},
            ALLOWING,
            "expected a literal endpoint",
        ),
    ],
)
def test_any_other_endpoint_is_refused_naming_the_variable(
    container: dict[str, Any], allow_lists: tuple[tuple[str, tuple[str, ...]], ...], expected: str
) -> None:
    (problem,) = endpoint_problems(container, allow_lists)
    assert expected in problem
    assert problem.startswith("storage-initializer env ")
