"""The allow-list gate: storage URI, runtime kind, serving image and model format are ones the policy allows."""

from __future__ import annotations

from devmlops.core.gates import policy_result
from devmlops.core.globs import matching_glob
from devmlops.core.manifests import ModelDeployment
from devmlops.core.model import GateResult
from devmlops.core.policy import Policy

__all__ = ["GATE", "check_allowlist"]

GATE = "allowlist"


def check_allowlist(deployment: ModelDeployment, policy: Policy) -> GateResult:
    model, runtime = deployment.spec.model, deployment.spec.runtime
    allow = policy.allow
    uri, kind, image, fmt = model.uri, runtime.kind, runtime.image or "", model.format or ""
    problems: list[tuple[str, str]] = []
    if allow.storage_uris is not None and matching_glob(allow.storage_uris, uri) is None:
        problems.append(
            (
                f"spec.model.uri: got '{uri}', expected one of {list(allow.storage_uris)}",
                "store the model in an allowed location",
            )
        )
    if allow.runtimes is not None and kind not in allow.runtimes:
        problems.append(
            (f"spec.runtime.kind: got '{kind}', expected one of {list(allow.runtimes)}", "use an allowed runtime")
        )
    if kind == "triton" and "@sha256:" not in image:
        problems.append(
            (
                f"spec.runtime.image: got '{image}', expected a Triton image pinned by digest (repo@sha256:...)",
                "pin the image by digest",
            )
        )
    if image and allow.images is not None and matching_glob(allow.images, image) is None:
        problems.append(
            (f"spec.runtime.image: got '{image}', expected one of {list(allow.images)}", "use an allowed serving image")
        )
    if allow.formats is not None and fmt not in allow.formats:
        problems.append(
            (
                f"spec.model.format: got '{fmt or 'none'}', expected one of {list(allow.formats)}",
                "use an allowed model format",
            )
        )
    if problems:
        reason, hint = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return policy_result(GATE, policy, "fail", reason + more, hint)
    return policy_result(
        GATE,
        policy,
        "pass",
        f"source '{uri}', runtime {kind}{' ' + image if image else ''} and format '{fmt or 'none'}' allowed",
    )
