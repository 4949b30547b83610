"""No bypass: a model server (InferenceService, ServingRuntime, or a Deployment/StatefulSet running a model
server image) is admitted only when it is the child of an admitted ModelDeployment and matches it: owner,
digest, storage URI, image. Deleting and scaling down are always allowed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from devmlops.core.model import Decision, GateResult, Outcome
from devmlops.core.review import AdmissionRequest

__all__ = [
    "ANNOTATION_DIGEST",
    "DEFAULT_SERVER_IMAGES",
    "MODEL_SERVER_LABEL",
    "VERIFY_URI_PREFIX",
    "controller_of",
    "is_model_server",
    "review_child",
]

VERIFY_URI_PREFIX = "devmlops+"
ANNOTATION_DIGEST = "devmlops.io/model-digest"
MODEL_SERVER_LABEL = "devmlops.io/model-server"
GATE = "bypass"
_HINT = "create a ModelDeployment; devmlops creates and verifies the model server for it"


def _result(outcome: Outcome, reason: str, hint: str = "") -> Decision:
    return Decision((GateResult(gate=GATE, outcome=outcome, reason=reason, hint=hint),))


def _containers(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    spec = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


DEFAULT_SERVER_IMAGES = ("tritonserver", "vllm-openai", "kserve/sklearnserver", "kserve/huggingfaceserver")


def is_model_server(obj: Mapping[str, Any], image_patterns: Sequence[str]) -> bool:
    """Labelled as one, or running an image whose name contains one of ``image_patterns`` (so that removing the
    label does not hide a model server)."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    images = [str(c.get("image", "")) for c in _containers(obj)]
    return MODEL_SERVER_LABEL in labels or any(p in image for p in image_patterns for image in images)


def controller_of(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return next((ref for ref in refs if ref.get("controller")), None)


def _scaled_down_only(request: AdmissionRequest, field: tuple[str, ...]) -> bool:
    if request.operation != "UPDATE" or request.old_object is None or request.object is None:
        return False

    def split(obj: Mapping[str, Any]) -> tuple[Any, Any]:
        spec = dict(obj.get("spec") or {})
        node = spec
        for key in field[:-1]:
            node[key] = dict(node.get(key) or {})
            node = node[key]
        value = node.pop(field[-1], None)
        return spec, value

    new_spec, new_value = split(request.object)
    old_spec, old_value = split(request.old_object)
    return new_spec == old_spec and isinstance(new_value, int) and isinstance(old_value, int) and new_value < old_value


def review_child(
    request: AdmissionRequest,
    owner: Mapping[str, Any] | None,
    owner_decision: Decision | None,
    *,
    image_patterns: Sequence[str] = DEFAULT_SERVER_IMAGES,
) -> Decision:
    """``owner`` is the ModelDeployment the object's controller chain leads to (found by the shell),
    ``owner_decision`` that ModelDeployment decided again at the serving stage (approval included)."""
    kind = request.kind.kind
    obj = request.object or {}
    if request.operation == "DELETE":
        return _result("pass", "deletion is always allowed")
    replicas_field = ("predictor", "minReplicas") if kind == "InferenceService" else ("replicas",)
    if _scaled_down_only(request, replicas_field):
        return _result("pass", "scaling down is always allowed")
    if kind in ("Deployment", "StatefulSet") and not is_model_server(obj, image_patterns):
        return _result("pass", f"{kind} runs no model server")
    name = f"{kind} {request.namespace}/{request.name}"
    if kind == "ServingRuntime":
        return _review_runtime(obj, name)
    if owner is None:
        ref = controller_of(obj)
        found = f"owned by {ref.get('kind')} {ref.get('name')}" if ref else "not owned by anything"
        return _result("fail", f"{name} is {found}; expected the child of an admitted ModelDeployment", _HINT)
    md_name = str((owner.get("metadata") or {}).get("name"))
    model = (owner.get("spec") or {}).get("model") or {}
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    # Objects devmlops writes carry the digest; the workloads KServe derives from an admitted InferenceService
    # (owned by it, not by the ModelDeployment) need not: that InferenceService was checked already.
    direct = kind == "InferenceService" or (controller_of(obj) or {}).get("kind") == "ModelDeployment"
    if direct and annotations.get(ANNOTATION_DIGEST) != model.get("digest"):
        return _result(
            "fail",
            f"{name}: annotation {ANNOTATION_DIGEST} is {annotations.get(ANNOTATION_DIGEST)!r}, "
            f"expected {model.get('digest')!r} from ModelDeployment {md_name}",
            _HINT,
        )
    if kind == "InferenceService":
        uri = str((((obj.get("spec") or {}).get("predictor") or {}).get("model") or {}).get("storageUri") or "")
        expected = VERIFY_URI_PREFIX + str(model.get("uri"))
        if uri != expected:
            return _result(
                "fail", f"{name}: storageUri got {uri!r}, expected {expected!r} from ModelDeployment {md_name}", _HINT
            )
    elif (controller_of(obj) or {}).get("kind") == "ModelDeployment":
        problem = _pod_mismatch(obj, owner)
        if problem:
            return _result("fail", f"{name}: {problem} (ModelDeployment {md_name})", _HINT)
    if owner_decision is None or not owner_decision.allowed:
        why = owner_decision.message if owner_decision else "it was not decided"
        return _result("fail", f"{name}: its ModelDeployment {md_name} may not be served now: {why}")
    return _result("pass", f"{name} is the verified child of ModelDeployment {md_name}")


def _pod_mismatch(obj: Mapping[str, Any], owner: Mapping[str, Any]) -> str:
    runtime = (owner.get("spec") or {}).get("runtime") or {}
    model = (owner.get("spec") or {}).get("model") or {}
    containers = _containers(obj)
    images = [
        str(c.get("image", ""))
        for c in ((obj.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers", [])
    ]
    if runtime.get("image") and runtime["image"] not in images:
        return f"images {images}, expected {runtime['image']}"
    verify = [c for c in containers if (c.get("args") or [None])[0] == "storage-initializer"]
    if not verify or model.get("uri") not in (verify[0].get("args") or []):
        return "no devmlops storage-initializer for the model's URI before the server starts"
    return ""


def _review_runtime(obj: Mapping[str, Any], name: str) -> Decision:
    containers = (obj.get("spec") or {}).get("containers") or []
    unpinned = [str(c.get("image", "")) for c in containers if "@sha256:" not in str(c.get("image", ""))]
    if unpinned:
        return _result(
            "fail",
            f"{name}: images {unpinned} are not pinned by digest",
            "pin every serving runtime image by digest (image@sha256:...)",
        )
    return _result("pass", f"{name}: every image pinned by digest")
