"""The model-format gate: a Triton model whose signed file names show a format the policy does not allow is denied
at admission, whatever ``spec.model.format`` declares (``model.py`` in a version folder: the python backend).

Only names are read here (the signed manifest); what each ``config.pbtxt`` says is checked where the bytes load
(core/modelformats.py, adapters/servingverify.py). KServe models are checked there only.
"""

from __future__ import annotations

import functools

from devmlops.core.gates import policy_result
from devmlops.core.manifests import ModelDeployment
from devmlops.core.model import GateResult
from devmlops.core.modelformats import signed_paths, triton_name_problems
from devmlops.core.policy import Policy
from devmlops.core.ports import SignedModel

__all__ = ["GATE", "check_model_format"]

GATE = "format"


def check_model_format(deployment: ModelDeployment, policy: Policy, signed: SignedModel | None) -> GateResult | None:
    """None when there is nothing to judge: no format restriction, not Triton, or no verified signature (the
    signature gate fails then)."""
    allowed = policy.allow.formats
    if allowed is None or deployment.spec.runtime.kind != "triton" or signed is None:
        return None
    result = functools.partial(policy_result, GATE, policy)
    problems = triton_name_problems(signed_paths(signed), allowed)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        reason = f"the signed files are not of an allowed format: {problems[0].describe(allowed)}{more}"
        return result("fail", reason, "serve a model of an allowed format, or sign it without that file")
    return result("pass", f"no signed file names a format outside {list(allowed)}")
