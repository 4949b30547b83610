"""What the serving pod needs to check that the bytes it loads are the bytes that were signed.

The operator writes a ``VerificationPlan`` (JSON) into the pod: the OMS bundle, the digest admission verified,
and the authorities (with thresholds) of the policies that admitted it. ``devmlops storage-initializer`` reads it,
fetches the model, verifies the bundle again and re-hashes every file before the model server may start.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from devmlops.adapters.modelverify import ByteCheck, check_model_bytes
from devmlops.adapters.oms import OmsVerifier
from devmlops.core.childreview import VERIFY_URI_PREFIX
from devmlops.core.policy import Authority, Policy
from devmlops.core.ports import SignatureVerifier, SignedModel, VerificationFailed
from devmlops.errors import InvalidInputError

__all__ = ["ENV_PLAN", "PREFIX", "VerificationPlan", "fetch_model", "run_plan"]

ENV_PLAN = "DEVMLOPS_VERIFICATION"
PREFIX = VERIFY_URI_PREFIX  # storageUri scheme prefix that routes KServe to the devmlops storage initializer


def _authority_json(a: Authority) -> dict[str, str]:
    fields = {
        "name": a.name,
        "kind": a.kind,
        "publicKey": a.public_key,
        "certificates": a.certificates,
        "identity": a.identity,
        "identityRegExp": a.identity_regexp,
        "issuer": a.issuer,
        "trustConfig": a.trust_config,
    }
    return {k: v for k, v in fields.items() if v}


def _authority(raw: Mapping[str, Any]) -> Authority:
    return Authority(
        name=str(raw["name"]),
        kind=raw["kind"],
        public_key=raw.get("publicKey", ""),
        certificates=raw.get("certificates", ""),
        identity=raw.get("identity", ""),
        identity_regexp=raw.get("identityRegExp", ""),
        issuer=raw.get("issuer", ""),
        trust_config=raw.get("trustConfig", ""),
    )


@dataclass(frozen=True, slots=True)
class VerificationPlan:
    bundle: str
    digest: str
    groups: tuple[tuple[int, tuple[Authority, ...]], ...]  # (threshold, authorities) per admitting policy

    @classmethod
    def for_policies(cls, bundle: str, digest: str, policies: Sequence[Policy]) -> VerificationPlan:
        return cls(bundle, digest, tuple((p.threshold, p.authorities) for p in policies if p.authorities))

    def to_json(self) -> str:
        groups = [{"threshold": t, "authorities": [_authority_json(a) for a in auths]} for t, auths in self.groups]
        return json.dumps({"bundle": self.bundle, "digest": self.digest, "policies": groups}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> VerificationPlan:
        try:
            raw = json.loads(text)
            groups = tuple(
                (int(g["threshold"]), tuple(_authority(a) for a in g["authorities"])) for g in raw["policies"]
            )
            plan = cls(str(raw["bundle"]), str(raw["digest"]), groups)
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidInputError(f"{ENV_PLAN}: not a verification plan ({exc})") from exc
        if not plan.groups:
            raise InvalidInputError(f"{ENV_PLAN}: names no authority; refusing to serve unverified bytes")
        return plan

    def verify_signature(self, verifier: SignatureVerifier | None = None) -> SignedModel:
        """Every admitting policy's threshold must be met again, and the bundle must sign the admitted digest."""
        verifier = verifier or OmsVerifier()
        signed: SignedModel | None = None
        for threshold, authorities in self.groups:
            passed = 0
            for authority in authorities:
                try:
                    signed = verifier.verify_model(self.bundle, authority)
                except VerificationFailed:
                    continue
                passed += 1
            if passed < threshold:
                names = ", ".join(a.name for a in authorities)
                raise VerificationFailed(
                    f"signature verified for {passed} of {threshold} required authorities ({names})"
                )
        assert signed is not None  # a group with threshold >= 1 passed
        if signed.digest != self.digest:
            raise VerificationFailed(f"the signature covers {signed.digest}, but {self.digest} was admitted")
        return signed


def fetch_model(uri: str, destination: Path) -> None:
    """Copy a local model (file:// or a path) or download with KServe's storage library when it is installed."""
    uri = uri.removeprefix(PREFIX)
    destination.mkdir(parents=True, exist_ok=True)
    local = Path(uri.removeprefix("file://")) if uri.startswith("file://") or uri.startswith("/") else None
    if local is not None:
        if not local.exists():
            raise InvalidInputError(f"model source {uri}: does not exist")
        if local.is_dir():
            shutil.copytree(local, destination, dirs_exist_ok=True)
        else:
            shutil.copy2(local, destination / local.name)
        return
    try:
        from kserve_storage import Storage  # type: ignore[import-not-found]
    except ImportError as exc:
        raise InvalidInputError(
            f"model source {uri}: downloading needs the kserve-storage package (pip install 'devmlops[kserve]')"
        ) from exc
    Storage.download(uri, str(destination))


def run_plan(uri: str, destination: Path, plan: VerificationPlan, *, out: TextIO = sys.stdout) -> ByteCheck:
    """Fetch, verify the signature, re-hash the bytes. Raises VerificationFailed when anything differs."""
    signed = plan.verify_signature()
    fetch_model(uri, destination)
    check = check_model_bytes(destination, signed, progress=sys.stderr)
    if not check.ok:
        raise VerificationFailed("the fetched model differs from its signature: " + "; ".join(check.problems[:10]))
    out.write(f"devmlops: {check.files} files of {signed.model_name} match {signed.digest} (signer {signed.signer})\n")
    return check
