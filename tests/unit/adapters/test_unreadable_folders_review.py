"""Attack review (bytes): a folder the verifier cannot read is served unverified.

The storage initializer runs as its own user (65532) and the model server as another (Triton's, MLServer's 1000):
no ``runAsUser`` or ``fsGroup`` is rendered, each runs as its image says. Whatever the initializer fetches, it owns;
a fetcher that keeps the source's modes (``shutil.copytree`` of a local folder, ``tarfile``'s extraction of an
archive from https, s3 or gs with the kserve extra, which keeps directory modes on Python 3.11) can give a directory
mode 0o005: its owner, the verifier, may not list it, everyone else may. model_signing's hashing and the strict
"left out of hashing" listing both walk with ``pathlib.glob``, which skips a directory it may not list without a
word, so the check passed; Triton, as another user, reads the directory and loads ``backdoor/1/model.py``, which
nobody signed. The same for a symlink to a directory under a signature with ``allow_symlinks``: both walks step
over it, and the server resolves it in its own file system, not the one verified."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from devmlops.adapters.modelverify import check_model_bytes
from devmlops.adapters.oms import OmsVerifier
from devmlops.adapters.servingverify import VerificationPlan, run_plan
from devmlops.core.policy import Authority
from devmlops.core.ports import VerificationFailed
from tests.unit.adapters.test_servingverify import plan_for

VERIFIER_UID = 65532  # the devmlops image's user


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder another user may read (pytest's tmp_path is root's alone), the initializer's own below it."""
    base = Path(tempfile.mkdtemp(prefix="devmlops-unreadable-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        for path in [base, *base.rglob("*")]:
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
        shutil.rmtree(base)


def _as_verifier(served: Path, source: Path, plan: str) -> tuple[int, str]:
    """``run_plan`` (what ``devmlops storage-initializer`` runs) in a child that has become the initializer's user
    (the interpreter lives where that user may not read, so it is forked, not started); its exit code and output."""
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child process
        os.close(reader)
        code, text = 0, ""
        try:
            os.setgroups([])
            os.setgid(VERIFIER_UID)
            os.setuid(VERIFIER_UID)
            out = io.StringIO()
            run_plan(f"file://{source}", served, VerificationPlan.from_json(plan), out=out)
            text = out.getvalue()
        except VerificationFailed as exc:
            code, text = 1, exc.user_message
        except BaseException as exc:  # reported to the parent, which fails the test
            code, text = 2, repr(exc)
        os.write(writer, text.encode())
        os._exit(code)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        text = pipe.read().decode()
    _pid, status = os.waitpid(child, 0)
    return os.waitstatus_to_exitcode(status), text


def test_a_directory_the_verifier_may_not_list_is_not_served_unverified(shared_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to run the initializer's check as another user (its own user, 65532)")
    model, plan = plan_for(shared_dir / "signer")
    (shared_dir / "signer").chmod(0o755)
    backdoor = model / "backdoor"
    (backdoor / "1").mkdir(parents=True)
    (backdoor / "config.pbtxt").write_text('backend: "python"\n')
    (backdoor / "1" / "model.py").write_text("import os\nos.system('id')\n")
    backdoor.chmod(0o005)  # no rights for its owner, read and search for everyone else
    mounted = shared_dir / "pod"
    mounted.mkdir()
    os.chown(mounted, VERIFIER_UID, VERIFIER_UID)
    served = mounted / "models"
    code, text = _as_verifier(served, model, plan)
    landed = sorted(p.relative_to(served).as_posix() for p in served.rglob("*") if p.is_file())
    assert code == 1, f"initializer exit {code} with {landed} in the served folder: {text}"
    assert "backdoor: cannot be read by the verifier" in text, text


def test_a_folder_with_a_symlink_to_a_directory_is_not_served_whatever_the_signature_allows(tmp_path: Path) -> None:
    model, _plan = plan_for(tmp_path)
    outside = tmp_path / "outside" / "1"
    outside.mkdir(parents=True)
    (outside / "model.py").write_text("import os\n")
    (model / "backdoor").symlink_to(tmp_path / "outside", target_is_directory=True)
    key = (tmp_path / "signer.pub").read_text()
    bundle = (tmp_path / "model.sig").read_text()
    signed = OmsVerifier().verify_model(bundle, Authority(name="k", kind="key", public_key=key))
    lenient = replace(signed, serialization={**signed.serialization, "allow_symlinks": True})  # a signer's choice
    check = check_model_bytes(model, lenient, strict=True)
    assert not check.ok
    assert any("backdoor" in problem and "symlink" in problem for problem in check.problems), check.problems
