"""What devmlops's storage initializer in a KServe Pod runs and reads, and the webhook's check of it.

KServe makes the init container from devmlops's ClusterStorageContainer (config/kserve/) and gives it the model's
URI as args; the webhook checks the image, the args and the plan annotation (core/workloads.py) and, here, what else
decides what it verifies against and with whose credentials: the command (``devmlops storage-initializer``, not a
program of someone's choosing), the plan only from the Pod's annotation (never a literal plan), the registry
credentials only from the team's Secret of the fixed name (core/render.py: ``registry_auth_env``), and no
``envFrom``. Other environment entries (KServe's own, for a bucket's credentials or a CA bundle) are left as they
are: they change how bytes are read, never what is accepted.

Nor may it mount a volume anywhere but where KServe itself puts one (``INITIALIZER_MOUNT_PATHS``): KServe's Pod
webhook mounts the CA bundle ConfigMap that a ServiceAccount's or Secret's ``serving.kserve.io/s3-cabundle-configmap``
names at the directory of its ``serving.kserve.io/s3-cabundle`` path, both the namespace editor's to write, and her
ConfigMap over the initializer's site-packages is a ``.pth`` file that Python runs in the process that verifies the
bytes, before it verifies anything (found in the KServe attack review).

The same annotations (``serving.kserve.io/s3-endpoint``) choose the S3 endpoint that answers for an ``s3://``
bucket, which ``allow.storageUris`` binds only by its name: an initializer may carry an endpoint (``S3_ENDPOINT``,
``AWS_ENDPOINT_URL``) only where every ClusterModelPolicy that selects the model allows it (``allow.s3Endpoints``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from devmlops.core.globs import matching_glob
from devmlops.core.plan import ENV_PLAN
from devmlops.core.podspec import items, mapping
from devmlops.core.render import (
    ANNOTATION_VERIFICATION,
    MODEL_DIR,
    REGISTRY_AUTH_ENV,
    STORAGE_INITIALIZER_COMMAND,
    registry_auth_env,
)

__all__ = [
    "ENDPOINT_ENV",
    "INITIALIZER_MOUNT_PATHS",
    "endpoint_problems",
    "initializer_env",
    "initializer_run_problems",
]

# What KServe's credential builder (v0.16) sets from a ServiceAccount's or Secret's serving.kserve.io/s3-endpoint:
# the endpoint as written (host[:port]), and as a URL (with https://, or http:// under s3-usehttps "0").
ENDPOINT_ENV = ("S3_ENDPOINT", "AWS_ENDPOINT_URL")
_HOST_PORT = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?")

# The paths KServe (v0.16) and the API server mount volumes at in a storage initializer, none chosen in the model's
# namespace: the model folder, the service account token, KServe's default caBundleVolumeMountPath (a cluster that
# configures another one has its KServe models refused: fail closed), the GCS and HDFS credential folders.
INITIALIZER_MOUNT_PATHS = frozenset(
    {
        MODEL_DIR,
        "/var/run/secrets/kubernetes.io/serviceaccount",
        "/etc/ssl/custom-certs",
        "/var/secrets/",
        "/var/secrets/kserve-hdfscreds",
    }
)


def initializer_env() -> dict[str, dict[str, Any]]:
    """The entries of the ClusterStorageContainer's ``env`` devmlops defines, by name: the plan from the Pod's
    annotation (downward API) and the team's registry credentials (an optional secretKeyRef)."""
    plan = {
        "name": ENV_PLAN,
        "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{ANNOTATION_VERIFICATION}']"}},
    }
    return {ENV_PLAN: plan, REGISTRY_AUTH_ENV: registry_auth_env()}


def initializer_run_problems(container: Mapping[str, Any]) -> list[str]:
    """Why ``container`` (a KServe Pod's storage-initializer) does not run devmlops's verification as the
    ClusterStorageContainer says: its command, the plan's and the credentials' sources, ``envFrom``, where it mounts
    volumes. The plan is required; the credentials entry may be absent (an older ClusterStorageContainer: anonymous
    pulls), never other."""
    problems = []
    command = list(container.get("command") or [])
    if command != list(STORAGE_INITIALIZER_COMMAND):
        problems.append(f"storage-initializer command {command}, expected {list(STORAGE_INITIALIZER_COMMAND)}")
    if container.get("envFrom"):
        problems.append("storage-initializer envFrom: present, expected none")
    env = [e for e in container.get("env") or [] if isinstance(e, Mapping)]
    for name, expected in initializer_env().items():
        found = [_defaulted(e) for e in env if e.get("name") == name]
        if name == REGISTRY_AUTH_ENV and not found:
            continue
        if found != [_defaulted(expected)]:
            problems.append(f"storage-initializer env {name}: {found or 'absent'}, expected exactly [{expected}]")
    elsewhere = [
        mapping(mount).get("mountPath")
        for mount in items(container.get("volumeMounts"))
        if mapping(mount).get("mountPath") not in INITIALIZER_MOUNT_PATHS
    ]
    if elsewhere:
        problems.append(
            f"storage-initializer volumeMounts at {elsewhere}, expected only at {sorted(INITIALIZER_MOUNT_PATHS)}: "
            "a ServiceAccount's or Secret's serving.kserve.io/s3-cabundle annotations choose where KServe mounts a "
            "ConfigMap, and over the initializer's own code it runs before the bytes are verified"
        )
    return problems


def endpoint_problems(container: Mapping[str, Any], allow_lists: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
    """Why the S3 endpoint ``container`` (a KServe Pod's storage-initializer) is given is not one that every
    ClusterModelPolicy selecting the model allows: ``allow_lists`` are (policy, ``allow.s3Endpoints``) for each. An
    endpoint from anywhere but a literal value is refused: it cannot be judged."""
    problems = []
    for entry in items(container.get("env")):
        name = mapping(entry).get("name")
        if name not in ENDPOINT_ENV:
            continue
        value = mapping(entry).get("value")
        if not isinstance(value, str) or mapping(entry).get("valueFrom") is not None:
            problems.append(f"storage-initializer env {name}: {dict(mapping(entry))!r}, expected a literal endpoint")
            continue
        endpoint = value.removeprefix("https://").removeprefix("http://")
        if not _HOST_PORT.fullmatch(endpoint):
            # A glob cannot judge a URL's other parts: "minio.*" matched "minio.svc@mallory.example.com".
            problems.append(f"storage-initializer env {name}: {value!r}, expected an S3 endpoint host[:port]")
            continue
        refusing = [policy for policy, globs in allow_lists if matching_glob(globs, endpoint) is None]
        if refusing or not allow_lists:
            problems.append(
                f"storage-initializer env {name}: S3 endpoint {endpoint!r} is allowed by no spec.allow.s3Endpoints of "
                f"{', '.join(refusing) or 'a ClusterModelPolicy selecting the model'} (a ServiceAccount's or Secret's "
                "serving.kserve.io/s3-endpoint chooses who answers for the model's bucket)"
            )
    return problems


def _defaulted(entry: Mapping[str, Any]) -> dict[str, Any]:
    """An env entry as the API server stores it: a ``fieldRef`` gets ``apiVersion: v1`` when it has none."""
    value = dict(entry)
    source = value.get("valueFrom")
    if isinstance(source, Mapping) and isinstance(source.get("fieldRef"), Mapping):
        value["valueFrom"] = {**source, "fieldRef": {"apiVersion": "v1", **source["fieldRef"]}}
    return value
