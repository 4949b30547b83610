"""The serving pod's check, run as the real command on real model folders: bytes served == bytes signed."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from devmlops.adapters.oms import OmsVerifier
from devmlops.adapters.servingverify import ENV_PLAN, VerificationPlan, run_plan
from devmlops.core.manifests import parse_model_deployment
from devmlops.core.policy import Authority, Policy, compile_policy
from devmlops.core.ports import VerificationFailed
from devmlops.core.render import ANNOTATION_VERIFICATION, render_children
from tests.support.models import KeyFiles, make_key, make_model, sign_with_key


def plan_for(tmp_path: Path, files: dict[str, bytes] | None = None) -> tuple[Path, str]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    key = make_key(tmp_path)
    model = make_model(tmp_path / "source", files)
    bundle = sign_with_key(model, key, tmp_path / "model.sig")
    digest = OmsVerifier().verify_model(bundle, Authority(name="k", kind="key", public_key=key.public_pem)).digest
    policy = compile_policy(
        {
            "metadata": {"name": "p"},
            "spec": {"authorities": [{"name": "release", "key": {"publicKey": key.public_pem}}]},
        }
    )
    return model, VerificationPlan.for_policies(bundle, digest, [policy]).to_json()


def initializer(source: str, dest: Path, plan: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != ENV_PLAN}
    if plan is not None:
        env[ENV_PLAN] = plan
    return subprocess.run(
        [sys.executable, "-m", "devmlops", "storage-initializer", source, str(dest)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_an_untouched_model_is_fetched_verified_and_reported(tmp_path: Path) -> None:
    model, plan = plan_for(tmp_path)
    result = initializer(f"file://{model}", tmp_path / "served", plan)
    assert result.returncode == 0, result.stderr
    assert "2 files of source match sha256:" in result.stdout
    assert sorted(p.name for p in (tmp_path / "served").iterdir()) == ["config.json", "weights.bin"]


def test_a_tampered_source_keeps_the_server_from_starting(tmp_path: Path) -> None:
    model, plan = plan_for(tmp_path)
    (model / "weights.bin").write_bytes(b"poisoned")
    result = initializer(f"devmlops+file://{model}", tmp_path / "served", plan)
    assert result.returncode == 1
    assert "NOT serving" in result.stderr
    assert "weights.bin: got sha256:" in result.stderr


def test_a_plan_for_another_digest_or_key_fails(tmp_path: Path) -> None:
    model, plan_json = plan_for(tmp_path)
    plan = VerificationPlan.from_json(plan_json)
    moved = replace(plan, digest="sha256:" + "0" * 64)
    result = initializer(str(model), tmp_path / "a", moved.to_json())
    assert result.returncode == 1
    assert f"the signature covers {plan.digest}, but sha256:000" in result.stderr
    stranger = Authority(name="x", kind="key", public_key=make_key(tmp_path, "stranger").public_pem)
    foreign = replace(plan, groups=((1, (stranger,)),))
    result = initializer(str(model), tmp_path / "b", foreign.to_json())
    assert result.returncode == 1
    assert "signature verified for 0 of 1 required authorities" in result.stderr


def test_without_a_plan_nothing_is_served(tmp_path: Path) -> None:
    model, _plan = plan_for(tmp_path)
    result = initializer(str(model), tmp_path / "served", None)
    assert result.returncode == 2
    assert "DEVMLOPS_VERIFICATION: not a verification plan" in result.stderr


def test_fetching_into_a_folder_it_may_write_but_not_chmod_leaves_that_folder_as_it_was(tmp_path: Path) -> None:
    """KServe's /mnt/models is a root-owned, world-writable emptyDir and the initializer runs as 65532: copying the
    source folder's mode and times onto it (shutil.copytree onto the destination) fails there with EPERM. The fetch
    copies the entries only, so the destination keeps its own mode (run as root here, so the mode is what shows)."""
    model, plan = plan_for(tmp_path)
    os.chmod(model, 0o700)
    dest = tmp_path / "mnt-models"
    dest.mkdir()
    os.chmod(dest, 0o777)  # noqa: S103 - an emptyDir's mode

    done = initializer(f"devmlops+file://{model}", dest, plan)

    assert done.returncode == 0, done.stderr
    assert dest.stat().st_mode & 0o777 == 0o777, "copytree would have made it 0o700"
    assert sorted(p.name for p in dest.iterdir()) == ["config.json", "weights.bin"]


def scanning_plan_for(tmp_path: Path, files: dict[str, bytes], *, scan: bool) -> tuple[Path, str]:
    """A model signed by its release key (so every byte verifies), under a policy that requires scan evidence."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    key = make_key(tmp_path)
    model = make_model(tmp_path / "source", files)
    bundle = sign_with_key(model, key, tmp_path / "model.sig")
    digest = OmsVerifier().verify_model(bundle, Authority(name="k", kind="key", public_key=key.public_pem)).digest
    evidence = [{"name": "scan", "predicateType": "scan"}] if scan else []
    policy = compile_policy(
        {
            "metadata": {"name": "p"},
            "spec": {"authorities": [{"name": "release", "key": {"publicKey": key.public_pem}}], "evidence": evidence},
        }
    )
    return model, VerificationPlan.for_policies(bundle, digest, [policy]).to_json()


def test_a_signed_model_with_an_unsafe_pickle_is_stopped_when_a_policy_requires_scans(tmp_path: Path) -> None:
    """Signed by the trusted key, bytes intact, nobody attested a scan: the initializer scans and refuses."""
    from tests.support.evidence import malicious_files

    payload = malicious_files(tmp_path / "bad")["os_system"].read_bytes()
    files = {"model.pkl": payload, "config.json": b"{}"}
    model, plan = scanning_plan_for(tmp_path / "scanned", files, scan=True)
    result = initializer(f"file://{model}", tmp_path / "served", plan)
    assert result.returncode == 1
    assert "NOT serving" in result.stderr
    assert "model.pkl: unsafe: imports posix.system" in result.stderr
    unscanned, plan = scanning_plan_for(tmp_path / "unscanned", files, scan=False)
    assert initializer(f"file://{unscanned}", tmp_path / "served-2", plan).returncode == 0


def test_a_clean_model_is_scanned_and_served(tmp_path: Path) -> None:
    from devmlops.harness.evidencemodels import train_demo_model

    pickled = train_demo_model(tmp_path / "m" / "model.pkl").read_bytes()
    model, plan = scanning_plan_for(tmp_path / "clean", {"model.pkl": pickled}, scan=True)
    result = initializer(f"file://{model}", tmp_path / "served", plan)
    assert result.returncode == 0, result.stderr
    assert "scanned 1 file(s): nothing unsafe" in result.stdout


def test_the_scan_flag_is_part_of_the_plan_the_webhook_compares(tmp_path: Path) -> None:
    _model, scanning = scanning_plan_for(tmp_path / "a", {"w.bin": b"x"}, scan=True)
    plan = VerificationPlan.from_json(scanning)
    assert plan.scan
    assert not plan.same_as(replace(plan, scan=False))


# -- k of n: one bundle per authority, the files hashed once ---------------------------------------------------------


def two_of_two(tmp_path: Path) -> tuple[Path, dict[str, str], Policy]:
    """A model signed by two keys (one bundle each), a stranger's signature of it, and a 2-of-2 policy of the two."""
    model = make_model(tmp_path / "source")
    keys = {name: make_key(tmp_path, name) for name in ("release", "security", "stranger")}
    bundles = {name: sign_with_key(model, key, tmp_path / f"{name}.sig") for name, key in keys.items()}
    authorities = [{"name": name, "key": {"publicKey": keys[name].public_pem}} for name in ("release", "security")]
    policy = compile_policy({"metadata": {"name": "p"}, "spec": {"authorities": authorities, "threshold": 2}})
    return model, bundles, policy


def test_a_model_signed_two_of_two_is_served_with_the_plan_derived_from_both_bundles(tmp_path: Path) -> None:
    model, bundles, policy = two_of_two(tmp_path)
    digest = OmsVerifier().verify_model(bundles["release"], policy.authorities[0]).digest
    offered = [bundles["stranger"], bundles["release"], bundles["security"]]
    plan = VerificationPlan.for_bundles(offered, digest, [policy], OmsVerifier())
    assert set(plan.bundles) == {bundles["release"], bundles["security"]}  # not the stranger's; in content order
    assert list(plan.bundles) == sorted(plan.bundles, key=lambda b: hashlib.sha256(b.encode()).hexdigest())
    out = io.StringIO()
    check = run_plan(f"file://{model}", tmp_path / "served", VerificationPlan.from_json(plan.to_json()), out=out)
    assert (check.ok, check.files) == (True, 2)
    assert f"2 files of source match {digest} (signed by " in out.getvalue()
    result = initializer(f"devmlops+file://{model}", tmp_path / "served-by-the-command", plan.to_json())
    assert result.returncode == 0, result.stderr


def test_two_of_two_with_one_bundle_swapped_for_another_keys_is_not_served(tmp_path: Path) -> None:
    model, bundles, policy = two_of_two(tmp_path)
    digest = OmsVerifier().verify_model(bundles["release"], policy.authorities[0]).digest
    both = VerificationPlan.for_policies([bundles["release"], bundles["security"]], digest, [policy])
    swapped = replace(both, bundles=(bundles["release"], bundles["stranger"]))
    with pytest.raises(VerificationFailed, match=r"verified for 1 of 2 required authorities \(release, security\)"):
        run_plan(f"file://{model}", tmp_path / "a", swapped)
    assert not (tmp_path / "a").exists()  # refused before anything was fetched
    doubled = replace(both, bundles=(bundles["release"], bundles["release"]))
    with pytest.raises(VerificationFailed, match="verified for 1 of 2 required authorities"):
        run_plan(f"file://{model}", tmp_path / "b", doubled)
    result = initializer(str(model), tmp_path / "c", swapped.to_json())
    assert result.returncode == 1
    assert "NOT serving" in result.stderr


def test_two_signers_of_different_files_are_not_two_of_two(tmp_path: Path) -> None:
    """Each bundle verifies for its authority, but the second signs other bytes: the plan names one digest."""
    model, bundles, policy = two_of_two(tmp_path)
    digest = OmsVerifier().verify_model(bundles["release"], policy.authorities[0]).digest
    other = make_model(tmp_path / "other", {"weights.bin": b"other weights", "config.json": b"{}"})
    security_key = tmp_path / "security.key"
    other_bundle = sign_with_key(other, KeyFiles(security_key, tmp_path / "security.pub"), tmp_path / "other.sig")
    plan = VerificationPlan.for_policies([bundles["release"], other_bundle], digest, [policy])
    with pytest.raises(VerificationFailed, match=f"the signature covers sha256:[0-9a-f]{{64}}, but {digest}"):
        run_plan(f"file://{model}", tmp_path / "served", plan)


# -- MLServer behind the guard: no server settings among the model's files -------------------------------------------


def guarded_plan(tmp_path: Path, files: dict[str, bytes]) -> tuple[Path, str]:
    """A signed model and the plan the renderer puts into its guarded KServe InferenceService (core/render.py)."""
    model, plan_json = plan_for(tmp_path, files)
    parsed = parse_model_deployment(
        {
            "metadata": {"name": "fraud", "namespace": "ml", "uid": "u1"},
            "spec": {
                "model": {
                    "name": "fraud",
                    "uri": "s3://models/fraud",
                    "digest": VerificationPlan.from_json(plan_json).digest,
                },
                "runtime": {"kind": "kserve", "servingRuntime": "mlserver"},
                "guard": {"protocol": "v2"},
            },
        }
    )
    (isvc,) = render_children(parsed, plan_json=plan_json, verifier_image="devmlops@v1")
    return model, isvc["spec"]["predictor"]["annotations"][ANNOTATION_VERIFICATION]


def test_a_signed_settings_json_at_the_root_keeps_mlserver_behind_the_guard_from_starting(tmp_path: Path) -> None:
    """The model tests/integration/test_guard_mlserver.py shows opening a real MLServer to every interface, signed by
    the trusted key: the storage initializer of its guarded InferenceService refuses it, naming the file."""
    files = {"model.joblib": b"weights", "settings.json": b'{"host": "0.0.0.0"}'}
    model, plan = guarded_plan(tmp_path / "guarded", files)
    result = initializer(f"devmlops+file://{model}", tmp_path / "served", plan)
    assert result.returncode == 1
    assert "NOT serving" in result.stderr
    assert "the model has a settings.json at its root, which MLServer behind the guard would read" in result.stderr
    assert not (tmp_path / "served").exists()  # refused from the signed manifest, before fetching
    unguarded, plain = plan_for(tmp_path / "plain", files)
    assert initializer(f"file://{unguarded}", tmp_path / "served-plain", plain).returncode == 0


def test_behind_the_guard_a_settings_json_elsewhere_or_a_model_settings_json_is_served(tmp_path: Path) -> None:
    """MLServer takes server settings only from the root; model-settings.json and nested files are the model's."""
    files = {"model-settings.json": b'{"name": "fraud"}', "sub/settings.json": b"{}", "model.joblib": b"w"}
    model, plan = guarded_plan(tmp_path, files)
    result = initializer(f"devmlops+file://{model}", tmp_path / "served", plan)
    assert result.returncode == 0, result.stderr


def test_behind_the_guard_a_settings_json_that_appears_at_fetching_is_refused(tmp_path: Path) -> None:
    """Not in the signed manifest but in the fetched folder: refused before hashing, naming the file."""
    model, plan = guarded_plan(tmp_path, {"model.joblib": b"w"})
    (model / "settings.json").write_text('{"host": "0.0.0.0"}')
    with pytest.raises(VerificationFailed, match=r"the model has a settings\.json at its root"):
        run_plan(f"file://{model}", tmp_path / "served", VerificationPlan.from_json(plan), out=io.StringIO())
