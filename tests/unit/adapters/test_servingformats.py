"""allow.formats where the bytes load: real signed model folders through run_plan (and once through the real
storage-initializer command); the format is read from the verified files, never taken from spec.model.format."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import pytest

from devmlops.adapters.oms import OmsVerifier
from devmlops.adapters.servingverify import VerificationPlan, run_plan
from devmlops.core.plan import served_plan
from devmlops.core.policy import Authority, compile_policy
from devmlops.core.ports import VerificationFailed
from tests.support.models import make_key, make_model, sign_with_key
from tests.unit.adapters.test_servingverify import initializer

ONNX_CONFIG = b'name: "fraud"\nbackend: "onnxruntime"\nmax_batch_size: 8\ninput [ { name: "x" dims: [ 4 ] } ]\n'


def signed(tmp_path: Path, files: dict[str, bytes], *, formats: list[str] | None, runtime: str) -> tuple[Path, str]:
    """A model folder signed by a trusted key, and the plan its rendered child carries under a policy that allows
    ``formats`` (None: no restriction) for ``runtime``."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    key = make_key(tmp_path)
    model = make_model(tmp_path / "source", files)
    bundle = sign_with_key(model, key, tmp_path / "model.sig")
    digest = OmsVerifier().verify_model(bundle, Authority(name="k", kind="key", public_key=key.public_pem)).digest
    spec: dict[str, object] = {"authorities": [{"name": "release", "key": {"publicKey": key.public_pem}}]}
    if formats is not None:
        spec["allow"] = {"formats": formats}
    policy = compile_policy({"metadata": {"name": "p"}, "spec": spec})
    return model, served_plan(VerificationPlan.for_policies(bundle, digest, [policy]).to_json(), runtime=runtime)


def run(tmp_path: Path, files: dict[str, bytes], formats: list[str] | None = None, runtime: str = "triton") -> str:
    model, plan = signed(tmp_path, files, formats=["onnx"] if formats is None else formats, runtime=runtime)
    out = io.StringIO()
    run_plan(f"file://{model}", tmp_path / "served", VerificationPlan.from_json(plan), out=out)
    return out.getvalue()


def refused(tmp_path: Path, files: dict[str, bytes], formats: list[str] | None = None, runtime: str = "triton") -> str:
    with pytest.raises(VerificationFailed) as caught:
        run(tmp_path, files, formats, runtime)
    return caught.value.user_message


PYTHON_BACKEND = {"fraud/config.pbtxt": b'backend: "python"\n', "fraud/1/model.py": b"import os\nos.system('id')\n"}


def test_a_signed_python_backend_declared_onnx_keeps_triton_from_starting(tmp_path: Path) -> None:
    """The model of the data-path review, through the real storage-initializer command."""
    model, plan = signed(tmp_path, PYTHON_BACKEND, formats=["onnx"], runtime="triton")
    result = initializer(f"devmlops+file://{model}", tmp_path / "served", plan)
    assert result.returncode == 1
    assert "NOT serving" in result.stderr
    assert "fraud/config.pbtxt: got format python, expected one of ['onnx']" in result.stderr
    open_model, open_plan = signed(tmp_path / "open", PYTHON_BACKEND, formats=None, runtime="triton")
    assert '"formats"' not in open_plan
    assert initializer(f"file://{open_model}", tmp_path / "served-open", open_plan).returncode == 0
    allowed, plan = signed(tmp_path / "allowed", PYTHON_BACKEND, formats=["onnx", "python"], runtime="triton")
    assert initializer(f"file://{allowed}", tmp_path / "served-allowed", plan).returncode == 0


def test_an_onnx_model_by_backend_platform_or_file_name_is_served(tmp_path: Path) -> None:
    out = run(tmp_path / "backend", {"fraud/config.pbtxt": ONNX_CONFIG, "fraud/1/model.onnx": b"o"})
    assert "every model's format is one of ['onnx'] (triton)" in out
    run(tmp_path / "platform", {"fraud/config.pbtxt": b'platform: "onnxruntime_onnx"', "fraud/1/model.onnx": b"o"})
    run(tmp_path / "named", {"fraud/1/model.onnx": b"o"})  # no config: Triton infers onnxruntime from the name
    run(tmp_path / "unused", {"fraud/config.pbtxt": ONNX_CONFIG, "fraud/1/model.onnx": b"o", "fraud/1/model.py": b""})
    ensemble = {
        "pipeline/config.pbtxt": b'platform: "ensemble"\nensemble_scheduling { step [ { model_name: "fraud" } ] }\n',
        "fraud/config.pbtxt": ONNX_CONFIG,
        "fraud/1/model.onnx": b"o",
    }
    run(tmp_path / "ensemble", ensemble)
    savedmodel = {"tf/config.pbtxt": b'platform: "tensorflow_savedmodel"', "tf/1/model.savedmodel/saved_model.pb": b"t"}
    run(tmp_path / "tf", savedmodel, formats=["tensorflow"])


@pytest.mark.parametrize(
    ("files", "found"),
    [
        ({"fraud/1/model.py": b"import os"}, "fraud/1/model.py: got format python (Triton infers the backend"),
        ({"fraud/1/weights.bin": b"w"}, "fraud/: got no backend or platform and no model file to tell it from"),
        ({"fraud/config.pbtxt": b'backend: "vllm"', "fraud/1/model.json": b"{}"}, 'got backend "vllm" (not one'),
        ({"fraud/config.pbtxt": b'backend: "python', "fraud/1/model.py": b""}, "no config Triton format devmlops"),
        ({"fraud/config.pbtxt": b'backend: "onnxruntime"\nbackend: "python"'}, "given more than once"),
        ({"fraud/config.pbtxt": b'platform: "onnxruntime_onnx" backend: "pytorch"'}, "onnx, pytorch at once"),
        ({"fraud/config.pbtxt": b'backend: "pytorch" runtime: "model.py"'}, "python, pytorch at once"),
        ({"fraud/config.pbtxt": ONNX_CONFIG, "fraud/1/libtriton_onnxruntime.so": b"\x7fELF"}, "a shared library"),
        ({"fraud/config.pbtxt": ONNX_CONFIG + b'model_operations { op_library_filename: "x.so" }'}, "model_operations"),
        ({"fraud/config.pbtxt": b'default_model_filename: "model.py"', "fraud/1/model.py": b""}, "got format python"),
        ({"fraud/config.pbtxt": b"backend: python"}, "expected a quoted string"),
        ({"model.onnx": b"o"}, ".: got no model folder"),
    ],
)
def test_a_triton_model_of_another_or_an_undecidable_format_is_refused_naming_the_file(
    tmp_path: Path, files: dict[str, bytes], found: str
) -> None:
    message = refused(tmp_path, {**files})
    assert "the signed model is of a format no admitting policy allows (allow.formats)" in message
    assert found in message
    assert "expected one of ['onnx']" in message


def test_an_mlserver_implementation_in_model_settings_is_judged_as_its_format(tmp_path: Path) -> None:
    """KServe: a model-settings.json names the MLServer runtime; any other class is the model's own Python code."""
    sklearn = {"model-settings.json": b'{"implementation": "mlserver_sklearn.SKLearnModel"}', "model.joblib": b"w"}
    assert "(kserve)" in run(tmp_path / "sklearn", sklearn, formats=["sklearn"], runtime="kserve")
    message = refused(tmp_path / "as-xgboost", sklearn, formats=["xgboost"], runtime="kserve")
    assert 'model-settings.json: got implementation "mlserver_sklearn.SKLearnModel", format sklearn' in message
    custom = {"model-settings.json": b'{"implementation": "models.Mine"}', "models.py": b"import os"}
    message = refused(tmp_path / "custom", custom, formats=["sklearn"], runtime="kserve")
    assert 'implementation "models.Mine", format python' in message
    run(tmp_path / "none", {"model.joblib": b"w"}, formats=["sklearn"], runtime="kserve")  # the runtime decides


def test_a_triton_repository_served_by_kserve_is_judged_by_its_configs(tmp_path: Path) -> None:
    """KServe's Triton runtime loads the same config.pbtxt: a python backend is refused there too."""
    assert "(kserve)" in run(
        tmp_path / "onnx", {"fraud/config.pbtxt": ONNX_CONFIG, "fraud/1/model.onnx": b"o"}, runtime="kserve"
    )
    message = refused(tmp_path / "python", PYTHON_BACKEND, runtime="kserve")
    assert "fraud/config.pbtxt: got format python, expected one of ['onnx']" in message


def test_a_plan_that_restricts_formats_but_names_no_runtime_serves_nothing(tmp_path: Path) -> None:
    model, plan = signed(tmp_path, {"fraud/1/model.onnx": b"o"}, formats=["onnx"], runtime="triton")
    unnamed = replace(VerificationPlan.from_json(plan), runtime="")
    with pytest.raises(VerificationFailed, match="runtime kind none in the plan"):
        run_plan(f"file://{model}", tmp_path / "served", unnamed, out=io.StringIO())
