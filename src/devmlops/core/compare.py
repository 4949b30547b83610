"""Field-by-field comparison of an object with what devmlops rendered for it.

Every field the renderer wrote must be there with the same value; a field it did not write may be there only when
it is one the API server or KServe fills in by default (and, for a few, only with the default value). Anything else
(another image, an extra container, a changed argument, an annotation KServe would act on) is a difference.
The operator uses the same comparison to find drift; the webhook to admit children.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["ANY", "differences", "metadata_differences"]

ANY = object()  # a defaulted field that may hold any value

# Fields that defaulting adds to what the renderer wrote, by key name, with the values they may hold. None of them
# changes which bytes a server loads or which programme runs.
_DEFAULTED: Mapping[str, object] = {
    # apps/v1 Deployment
    "progressDeadlineSeconds": ANY,
    "revisionHistoryLimit": ANY,
    "strategy": ANY,
    "creationTimestamp": (None,),
    # core/v1 pod template and container
    "dnsPolicy": ("ClusterFirst",),
    "restartPolicy": ("Always",),
    "schedulerName": ("default-scheduler",),
    "terminationGracePeriodSeconds": (30,),
    "imagePullPolicy": ("IfNotPresent", "Always", "Never"),
    "terminationMessagePath": ("/dev/termination-log",),
    "terminationMessagePolicy": ("File", "FallbackToLogsOnError"),
    "protocol": ("TCP",),
    "timeoutSeconds": ANY,
    "successThreshold": (1,),
    "failureThreshold": ANY,
    "periodSeconds": ANY,
    "scheme": ("HTTP",),
    # core/v1 Service
    "clusterIP": ANY,
    "clusterIPs": ANY,
    "type": ("ClusterIP",),
    "sessionAffinity": ("None",),
    "ipFamilies": ANY,
    "ipFamilyPolicy": ("SingleStack",),
    "internalTrafficPolicy": ("Cluster",),
}
_EMPTY_OK = ("resources", "securityContext", "name")  # KServe's defaulter adds model.name "" and resources {}


def _allowed_extra(key: str, value: Any) -> bool:
    if key in _EMPTY_OK and value in ({}, "", None):
        return True
    allowed = _DEFAULTED.get(key)
    if allowed is None:
        return False
    return allowed is ANY or (isinstance(allowed, tuple) and value in allowed)


def _same_scalar(wanted: Any, found: Any) -> bool:
    if isinstance(wanted, bool) or isinstance(found, bool):
        return wanted is found
    if isinstance(wanted, (int, float, str)) and isinstance(found, (int, float, str)):
        return str(wanted) == str(found)  # quantities: the API server keeps 1 as "1"
    return bool(wanted == found)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def differences(wanted: Any, found: Any, path: str = "") -> list[str]:
    """Every place where ``found`` is not ``wanted`` (allowing defaulted extras), as "path: got X, expected Y"."""
    if isinstance(wanted, Mapping):
        if not isinstance(found, Mapping):
            return [f"{path or '.'}: got {_short(found)}, expected an object"]
        problems: list[str] = []
        for key, value in wanted.items():
            where = f"{path}.{key}" if path else key
            if key not in found:
                if value not in ({}, [], None, ""):
                    problems.append(f"{where}: missing, expected {_short(value)}")
                continue
            problems.extend(differences(value, found[key], where))
        for key, value in found.items():
            if key not in wanted and not _allowed_extra(str(key), value):
                problems.append(f"{path}.{key}: got {_short(value)}, expected nothing there")
        return problems
    if isinstance(wanted, list):
        if not isinstance(found, list):
            return [f"{path}: got {_short(found)}, expected a list"]
        if len(found) != len(wanted):
            return [f"{path}: got {len(found)} item(s), expected {len(wanted)}"]
        return [
            problem
            for i, (w, f) in enumerate(zip(wanted, found, strict=True))
            for problem in differences(w, f, f"{path}[{i}]")
        ]
    if not _same_scalar(wanted, found):
        return [f"{path}: got {_short(found)}, expected {_short(wanted)}"]
    return []


def metadata_differences(
    wanted: Mapping[str, Any],
    found: Mapping[str, Any],
    *,
    ignored: tuple[str, ...] = (),
    extra_ok: tuple[str, ...] = (),
) -> list[str]:
    """Labels and annotations: every rendered one with its value; others only when their key starts with one of
    ``extra_ok`` (what a trusted controller adds). ``ignored`` keys are informational (any value, or absent)."""
    problems: list[str] = []
    for part in ("labels", "annotations"):
        want = {k: v for k, v in (wanted.get(part) or {}).items() if k not in ignored}
        have = found.get(part) or {}
        if not isinstance(have, Mapping):
            problems.append(f"metadata.{part}: got {_short(have)}, expected an object")
            continue
        for key, value in want.items():
            if have.get(key) != value:
                problems.append(f"metadata.{part}.{key}: got {_short(have.get(key))}, expected {_short(value)}")
        for key in have:
            if key not in want and key not in ignored and not key.startswith(extra_ok):
                problems.append(f"metadata.{part}.{key}: got {_short(have[key])}, expected nothing there")
    return problems
