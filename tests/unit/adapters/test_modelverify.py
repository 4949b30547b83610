from __future__ import annotations

import io
import time
from pathlib import Path

from devmlops.adapters.modelverify import _Progress, check_model_bytes
from devmlops.adapters.oms import OmsVerifier
from devmlops.core.policy import Authority
from tests.support.models import make_key, make_model, sign_with_key


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_shown_on_a_terminal_and_nowhere_else() -> None:
    terminal, pipe = Terminal(), io.StringIO()
    for stream in (terminal, pipe):
        with _Progress(10 * 2**20, stream):
            time.sleep(0.7)
    assert "hashing" in terminal.getvalue()
    assert "MiB" in terminal.getvalue()
    assert pipe.getvalue() == ""


def test_sharded_signatures_are_checked_shard_by_shard(tmp_path: Path) -> None:
    from model_signing import hashing, signing

    key = make_key(tmp_path)
    model = make_model(tmp_path / "m", {"big.bin": bytes(range(256)) * 4096})
    config = signing.Config().use_elliptic_key_signer(private_key=key.private)
    config.set_hashing_config(hashing.Config().use_shard_serialization(shard_size=65536))
    config.sign(model, tmp_path / "model.sig")
    signed = OmsVerifier().verify_model(
        (tmp_path / "model.sig").read_text(), Authority(name="k", kind="key", public_key=key.public_pem)
    )
    assert signed.serialization["method"] == "shards"
    assert check_model_bytes(model, signed).ok
    data = bytearray((model / "big.bin").read_bytes())
    data[70000] ^= 1
    (model / "big.bin").write_bytes(bytes(data))
    problems = check_model_bytes(model, signed).problems
    assert len(problems) == 1
    assert problems[0].startswith("big.bin:65536:131072: got")


def test_a_model_signed_with_its_own_key_checks_clean(tmp_path: Path) -> None:
    key = make_key(tmp_path)
    model = make_model(tmp_path / "m")
    signed = OmsVerifier().verify_model(
        sign_with_key(model, key, tmp_path / "model.sig"), Authority(name="k", kind="key", public_key=key.public_pem)
    )
    result = check_model_bytes(model, signed)
    assert (result.ok, result.files) == (True, 2)


def test_a_sharded_signature_passes_the_serving_check_and_an_extra_file_still_fails_it(tmp_path: Path) -> None:
    """Where the bytes are served (``strict``) every file present must have been hashed; a sharded signature names
    shards ('big.bin:0:65536'), not files, so every file of a sharded model read as left out and it never served."""
    from model_signing import hashing, signing

    key = make_key(tmp_path)
    model = make_model(tmp_path / "m", {"big.bin": bytes(range(256)) * 1024, "sub/c.json": b"{}"})
    config = signing.Config().use_elliptic_key_signer(private_key=key.private)
    config.set_hashing_config(hashing.Config().use_shard_serialization(shard_size=65536))
    config.sign(model, tmp_path / "model.sig")
    signed = OmsVerifier().verify_model(
        (tmp_path / "model.sig").read_text(), Authority(name="k", kind="key", public_key=key.public_pem)
    )
    check = check_model_bytes(model, signed, strict=True)
    assert check.problems == ()
    (model / ".gitignore").write_bytes(b"x")  # a file the hashing leaves out
    assert check_model_bytes(model, signed, strict=True).problems == (
        "file not covered by the signature (left out of hashing): .gitignore",
    )
