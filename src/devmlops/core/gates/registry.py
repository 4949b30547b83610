"""The registry gate: a ModelDeployment that names a registered model version serves that version and no other.

The shell resolves ``spec.model.registry`` (an alias to the version it points to now, the version to its storage
location and tags) before ``decide()`` runs; this gate binds the spec to what was found: ``spec.model.uri`` must be
the version's storage location and ``spec.model.digest`` the digest recorded with it (tag ``devmlops.io/digest``,
written by ``devmlops sign --mlflow``). The signature gate then checks the bundle stored with the version (tag
``devmlops.io/oms-bundle``), so a moved alias, a re-pointed version or a mislabelled digest is a denial naming the
registry, the version, what was found and what was expected. A policy may demand a registry entry, one of its
aliases (``champion``), and refuse versions carrying a tag (``stage=archived``). A lookup that failed or timed out
is an error: the webhook denies (fail closed).
"""

from __future__ import annotations

import functools

from devmlops.core.evidence import Evidence, RegistryVersion
from devmlops.core.gates import policy_result
from devmlops.core.manifests import MlflowRef, ModelDeployment
from devmlops.core.model import GateResult
from devmlops.core.policy import Policy, RegistryRules

__all__ = ["BUNDLE_TAG", "DIGEST_TAG", "GATE", "SBOM_TAG", "check_oci_source", "check_registry", "requested"]

GATE = "registry"
# The convention: what devmlops reads from (and `devmlops sign --mlflow` writes to) a registered model version.
DIGEST_TAG = "devmlops.io/digest"  # the signed subject digest, sha256:<hex>
BUNDLE_TAG = "devmlops.io/oms-bundle"  # the OMS signature bundle (JSON)
SBOM_TAG = "devmlops.io/ml-bom"  # the ML-BOM (CycloneDX or SPDX JSON)
_FIX_SIGN = "sign the registered version with `devmlops sign --mlflow NAME/VERSION` (it writes the digest tag)"


def check_oci_source(deployment: ModelDeployment, policy: Policy) -> GateResult | None:
    """A model stored as an OCI artifact is served by its manifest digest, never by a tag (a tag can be pushed
    again); None for other storage URIs."""
    uri = deployment.spec.model.uri
    if not uri.startswith("oci://"):
        return None
    if "@sha256:" in uri:
        return policy_result(GATE, policy, "pass", f"spec.model.uri '{uri}' is an OCI artifact pinned by digest")
    return policy_result(
        GATE,
        policy,
        "fail",
        f"spec.model.uri: got '{uri}', expected an OCI artifact pinned by its manifest digest "
        "(oci://host/repository@sha256:...)",
        "name the digest (the mutating webhook pins a tag to its digest: is it installed?)",
    )


def requested(ref: MlflowRef) -> str:
    """What a ModelDeployment asks for, as reasons name it: ``alias champion`` or ``version 3``."""
    return f"alias {ref.alias}" if ref.alias is not None else f"version {ref.version}"


def check_registry(deployment: ModelDeployment, policy: Policy, evidence: Evidence) -> GateResult | None:
    """None when the model names no registry and the policy demands none (nothing to report)."""
    result = functools.partial(policy_result, GATE, policy)
    registry = deployment.spec.model.registry
    rules = policy.registry or RegistryRules()
    if registry is None:
        if not rules.required:
            return None
        wanted = f" by one of the aliases {list(rules.required_aliases)}" if rules.required_aliases else ""
        return result(
            "fail",
            f"spec.model.registry: missing, expected a registered model version{wanted} (policy {policy.name})",
            "name the model as spec.model.registry.mlflow {name, alias}",
        )
    ref = registry.mlflow
    found = evidence.registry
    if found is None:
        return result(
            "error",
            f"spec.model.registry.mlflow: model '{ref.name}' {requested(ref)} could not be looked up: no MLflow "
            "registry is configured for devmlops (expected --mlflow-tracking-uri on the webhook and operator)",
            "ask the platform team to configure the model registry, or name the model by uri and digest alone",
        )
    if found.error:
        return result("error", f"{found.describe()}: {found.error}", "check the registry entry and try again")
    problems = _policy_problems(ref, found, rules, policy.name) + _binding_problems(deployment, found)
    if problems:
        reason, hint = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return result("fail", reason + more, hint)
    return result(
        "pass",
        f"{found.describe()}: stored at '{found.source}', digest {deployment.spec.model.digest}",
    )


def _policy_problems(ref: MlflowRef, found: RegistryVersion, rules: RegistryRules, name: str) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if rules.required_aliases:
        if ref.alias not in rules.required_aliases:
            problems.append(
                (
                    f"spec.model.registry.mlflow: got {requested(ref)}, expected one of the aliases "
                    f"{list(rules.required_aliases)} (policy {name})",
                    f"name the model by alias (for example alias: {rules.required_aliases[0]})",
                )
            )
        elif ref.alias not in found.aliases:
            problems.append(
                (
                    f"{found.describe()}: carries the aliases {list(found.aliases)}, expected '{ref.alias}'",
                    "move the alias in the registry to the version to serve",
                )
            )
    for forbidden in rules.forbidden_tags:
        key, sep, value = forbidden.partition("=")
        if key in found.tags and (not sep or found.tags[key] == value):
            problems.append(
                (
                    f"{found.describe()}: carries the tag '{key}={found.tags[key]}', which policy {name} forbids "
                    f"('{forbidden}')",
                    "serve another version, or remove the tag in the registry if it no longer holds",
                )
            )
    return problems


def _binding_problems(deployment: ModelDeployment, found: RegistryVersion) -> list[tuple[str, str]]:
    model = deployment.spec.model
    problems: list[tuple[str, str]] = []
    if model.uri != found.source:
        problems.append(
            (
                f"spec.model.uri: got '{model.uri}', expected '{found.source}', where {found.describe()} is stored",
                "set spec.model.uri to the registered version's storage location",
            )
        )
    recorded = found.tags.get(DIGEST_TAG)
    if recorded is None:
        problems.append((f"{found.describe()}: no tag {DIGEST_TAG}, expected the signed digest", _FIX_SIGN))
    elif recorded != model.digest:
        problems.append(
            (
                f"spec.model.digest: got {model.digest}, expected {recorded}, the digest {found.describe()} "
                f"carries (tag {DIGEST_TAG})",
                "set spec.model.digest to the registered version's digest, or name the version you signed",
            )
        )
    if model.version is not None and model.version != found.version:
        problems.append(
            (
                f"spec.model.version: got '{model.version}', expected '{found.version}', the version "
                f"{found.describe()} resolves to",
                "drop spec.model.version or set it to the resolved version",
            )
        )
    return problems
