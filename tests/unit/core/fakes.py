"""A fake of the SignatureVerifier port: bundles are JSON naming the authority and digest they are 'signed' for; and
the ModelDeployment UPDATE request the core unit tests build."""

from __future__ import annotations

import json
from typing import Any

from devmlops.core.policy import Authority
from devmlops.core.ports import SignedModel, VerificationFailed, VerificationUnavailable
from devmlops.core.review import AdmissionRequest, GroupVersionKind

DIGEST = "sha256:" + "ab" * 32
FILE_DIGEST = "sha256:" + "cd" * 32


def bundle(authority: str, digest: str = DIGEST, model: str = "fraud") -> str:
    return json.dumps({"authority": authority, "digest": digest, "model": model})


class FakeVerifier:
    def __init__(self, *, unavailable: bool = False) -> None:
        self.calls = 0
        self.unavailable = unavailable

    def verify_model(self, bundle: str, authority: Authority) -> SignedModel:
        self.calls += 1
        if self.unavailable:
            raise VerificationUnavailable("signature verification timed out after 3s")
        claim = json.loads(bundle)
        if claim["authority"] != authority.name:
            raise VerificationFailed(f"signed by {claim['authority']}, not {authority.name}")
        return SignedModel(
            model_name=claim["model"],
            digest=claim["digest"],
            files=(("weights.bin", FILE_DIGEST),),
            signer=claim["authority"],
        )

    def verify_blob(self, artifact: bytes, bundle: str, authority: Authority) -> str:
        claim = json.loads(bundle)
        if claim["authority"] != authority.name or claim.get("sha") != len(artifact):
            raise VerificationFailed("blob signature does not verify")
        return authority.name


def md_update(old: dict[str, Any], new: dict[str, Any], user: str = "mallory") -> AdmissionRequest:
    """An UPDATE of ModelDeployment ml/fraud from ``old`` to ``new`` by ``user``."""
    return AdmissionRequest(
        uid="u",
        kind=GroupVersionKind("devmlops.io", "v1alpha1", "ModelDeployment"),
        operation="UPDATE",
        namespace="ml",
        name="fraud",
        username=user,
        groups=(),
        object=new,
        old_object=old,
    )
