"""Security review: unsigned files under git paths reach the model server's repository.

mallory chooses ``spec.model.uri``: she copies a signed model into a bucket (or folder) she controls and adds
``.github/backdoor/config.pbtxt`` + ``.github/backdoor/1/model.py`` (or anything under ``.git/``). The byte check
hashes with model_signing's ``ignore_git_paths=True`` (``.git``, ``.github``, ``.gitattributes``, ``.gitignore``),
so these unsigned files are neither hashed nor reported; the plan's scan skips ``.git`` too. The storage initializer
copies them into /mnt/models, and Triton (``--model-control-mode=none``) loads every subdirectory of its repository
as a model (PollAndUpdateInternal skips only op_defs, graphs, resource): a Python-backend ``model.py`` runs code
that nobody signed, in the model server's container. Fails on e8db94b: the initializer serves the extra files."""

from __future__ import annotations

from pathlib import Path

from tests.unit.adapters.test_servingverify import initializer, plan_for


def test_unsigned_files_under_git_paths_are_not_served(tmp_path: Path) -> None:
    model, plan = plan_for(tmp_path)
    (model / ".github" / "backdoor" / "1").mkdir(parents=True)
    (model / ".github" / "backdoor" / "config.pbtxt").write_text('backend: "python"\n')
    (model / ".github" / "backdoor" / "1" / "model.py").write_text("import os\nos.system('id')\n")
    (model / ".git").mkdir()
    (model / ".git" / "payload.pkl").write_bytes(b"cos\nsystem\n(S'id'\ntR.")
    served = tmp_path / "served"
    result = initializer(f"file://{model}", served, plan)
    landed = (
        sorted(p.relative_to(served).as_posix() for p in served.rglob("*") if p.is_file()) if served.exists() else []
    )
    assert result.returncode != 0 or not any(name.startswith(".git") for name in landed), (
        f"initializer exit {result.returncode}; unsigned files served: {[n for n in landed if n.startswith('.git')]}"
    )
