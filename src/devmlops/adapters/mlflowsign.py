"""``devmlops sign --mlflow NAME/VERSION``: store a version's OMS signature, digest and ML-BOM with it in MLflow.

The convention (``core/gates/registry.py`` reads it): model version tags ``devmlops.io/oms-bundle`` (the bundle's
JSON), ``devmlops.io/digest`` (its signed subject digest) and, when given, ``devmlops.io/ml-bom``. Tags rather than
artifacts because a version's artifacts belong to the run or logged model that produced it (MLflow offers no write
to a version's own files), while tags belong to the version and come back with the one lookup admission makes.
Tags are editable by anyone who may edit the registered model: the signature in them is checked cryptographically,
and the digest tag only has to agree with it, so editing them can deny a model but never admit another one.
MLflow caps a model version tag at 100,000 characters; a larger bundle or ML-BOM is refused here with that reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devmlops.adapters.mlflowregistry import mlflow_client
from devmlops.core.gates.registry import BUNDLE_TAG, DIGEST_TAG, SBOM_TAG
from devmlops.errors import InvalidInputError

__all__ = ["MAX_TAG_CHARS", "RegisteredVersion", "download_version", "parse_version_ref", "store_signature"]

MAX_TAG_CHARS = 100_000  # mlflow.utils.validation.MAX_MODEL_REGISTRY_TAG_VALUE_LENGTH
_REF = re.compile(r"^(?P<name>[^/]+(?:/[^/]+)*)/(?P<version>[1-9][0-9]*)$")


@dataclass(frozen=True, slots=True)
class RegisteredVersion:
    name: str
    version: str
    source: str  # the storage location spec.model.uri must name


def parse_version_ref(text: str) -> tuple[str, str]:
    """``iris/3`` (a name may itself contain slashes; the version is the last part, a number)."""
    match = _REF.match(text)
    if match is None:
        raise InvalidInputError(f"--mlflow: got {text!r}, expected NAME/VERSION (for example iris/3)")
    return match["name"], match["version"]


def _client(tracking_uri: str) -> Any:
    return mlflow_client(tracking_uri, request_timeout=30.0)


def lookup_version(tracking_uri: str, name: str, version: str) -> RegisteredVersion:
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    try:
        found = client.get_model_version(name, version)
        source = str(found.source or "")
        if source.startswith(("models:/", "runs:/")):
            source = str(client.get_model_version_download_uri(name, version))
    except MlflowException as exc:
        raise InvalidInputError(f"MLflow {tracking_uri}: model '{name}' version {version}: {exc.message}") from exc
    return RegisteredVersion(name, version, source)


def download_version(tracking_uri: str, registered: RegisteredVersion, destination: Path) -> Path:
    """The version's files, as MLflow's client fetches them from its storage location."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    try:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=registered.source, dst_path=str(destination), tracking_uri=tracking_uri
        )
    except (MlflowException, OSError) as exc:
        raise InvalidInputError(
            f"model '{registered.name}' version {registered.version}: cannot download {registered.source} ({exc}); "
            "give the model's files as MODEL_PATH instead"
        ) from exc
    return Path(local)


def store_signature(
    tracking_uri: str, registered: RegisteredVersion, *, bundle: str, digest: str, sbom: str | None = None
) -> list[str]:
    """Write the tags; returns their keys. The digest tag goes last, so a version with a digest tag always has the
    bundle it came from."""
    tags = [(BUNDLE_TAG, bundle), *([(SBOM_TAG, sbom)] if sbom is not None else []), (DIGEST_TAG, digest)]
    for key, value in tags:
        if len(value) > MAX_TAG_CHARS:
            raise InvalidInputError(
                f"{key}: {len(value)} characters, MLflow stores at most {MAX_TAG_CHARS} in a model version tag"
            )
    client = _client(tracking_uri)
    for key, value in tags:
        client.set_model_version_tag(registered.name, registered.version, key, value)
    return [key for key, _ in tags]
