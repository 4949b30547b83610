"""The allow-list gate: storage URI, runtime kind, serving image and model format are ones the policy allows.

A storage URI is matched as written, but fetched as its client reads it: requests, urllib3 and httpx remove dot
segments (RFC 3986), and servers decode ``%2e`` before they resolve a path, so ``https://host/prod/../staging/m``
matched ``https://host/prod/**`` and was fetched from ``/staging`` (bytes attack review). A URI with a ``.`` or
``..`` segment, written or percent-encoded (its slashes too) or with a path parameter (``..;``: Tomcat resolves it as
``..``; second attack round), or a backslash (a ``/`` to WHATWG parsers) matches no allow-list. Nor does one
with ``$(`` or ``$$``: the URI is an argument of the storage initializer's container, and
the kubelet expands ``$(NAME)`` there from the container's environment (``$$`` to ``$``) before the initializer reads
it; that environment holds ``DEVMLOPS_REGISTRY_AUTH`` from a Secret the namespace's editors write (core/render.py), so
``https://host/prod/$(DEVMLOPS_REGISTRY_AUTH)`` matched ``https://host/prod/**`` and was fetched from wherever the
Secret pointed (pods and KServe reviews). Nor does one whose host part (up to the first ``/``) has a ``?``, ``#``
or ``@``: a client ends the host there (or takes what comes before ``@`` as a user), but ``*`` spans it, so
``https://*.models.example.com/**`` matched ``https://evil.example?.models.example.com/m`` and its client would fetch
from ``evil.example`` (gates review).
"""

from __future__ import annotations

import re

from devmlops.core.gates import policy_result
from devmlops.core.globs import matching_glob
from devmlops.core.manifests import ModelDeployment
from devmlops.core.model import GateResult
from devmlops.core.policy import Policy

__all__ = ["GATE", "check_allowlist"]

GATE = "allowlist"
_HOST_ENDS = re.compile(r"[?#@]")  # in the host part: a client's host ends there (or is what follows "@")
# "/" or "%2f" before, and after it the end, a "/", "?" or "#", or a path parameter (";", "%3b": "..;" is ".." to
# Tomcat, and to Spring and Jetty behind it, which take a segment's parameters off before they resolve it)
_DOT_SEGMENT = re.compile(r"(?:^|/|%2f)(?:\.|%2e){1,2}(?:/|%2f|;|%3b|[?#]|$)", re.IGNORECASE)
_EXPANDED = ("$(", "$$")  # what the kubelet rewrites in a container's args (a variable reference, an escaped "$")


def check_allowlist(deployment: ModelDeployment, policy: Policy) -> GateResult:
    model, runtime = deployment.spec.model, deployment.spec.runtime
    allow = policy.allow
    uri, kind, image, fmt = model.uri, runtime.kind, runtime.image or "", model.format or ""
    problems: list[tuple[str, str]] = []
    walks = _DOT_SEGMENT.search(uri.partition("://")[2]) is not None or "\\" in uri or "%5c" in uri.lower()
    expands = any(mark in uri for mark in _EXPANDED)
    if allow.storage_uris is not None and walks:
        problems.append(
            (
                f"spec.model.uri: got '{uri}', expected a URI without '.' or '..' segments (written or "
                f"percent-encoded) or backslashes: its client would fetch another path than {list(allow.storage_uris)}"
                " allow",
                "write the storage location in its plain form",
            )
        )
    elif allow.storage_uris is not None and expands:
        problems.append(
            (
                f"spec.model.uri: got '{uri}', expected a URI without '$(' or '$$': the kubelet expands them in the "
                f"storage initializer's arguments from its environment, so its client would fetch another location "
                f"than {list(allow.storage_uris)} allow",
                "write the storage location in its plain form (percent-encode a '$' it really contains: %24)",
            )
        )
    elif allow.storage_uris is not None and _HOST_ENDS.search(uri.partition("://")[2].partition("/")[0]):
        problems.append(
            (
                f"spec.model.uri: got '{uri}', expected a URI whose host part has no '?', '#' or '@': its client would "
                f"fetch from another host than {list(allow.storage_uris)} allow",
                "write the storage location in its plain form",
            )
        )
    elif allow.storage_uris is not None and matching_glob(allow.storage_uris, uri) is None:
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
