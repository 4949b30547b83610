"""The strict reader of Triton's config.pbtxt and the format mapping, pure (core/modelformats.py)."""

from __future__ import annotations

import pytest

from devmlops.core.modelformats import PbtxtError, allowed_formats, read_pbtxt, triton_name_problems


def test_only_top_level_string_fields_are_read_through_comments_blocks_and_lists() -> None:
    text = """
    # backend: "python"   (a comment)
    name: 'fraud'
    platform: "onnx" "runtime_onnx"  # adjacent strings concatenate
    max_batch_size: 8
    input [ { name: "backend" data_type: TYPE_FP32 dims: [ -1, 4 ] } ]
    parameters { key: "backend" value: { string_value: "python" } }
    instance_group < kind: KIND_GPU count: 1 >;
    """
    assert read_pbtxt(text) == {"platform": "onnxruntime_onnx"}
    assert read_pbtxt('backend: "py\\x74hon"') == {"backend": "python"}  # escapes decoded as protobuf does


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('backend: "python', "unexpected"),
        ("input [ { name: 'x' ]", "unbalanced"),
        ("input { name: 'x'", "unclosed"),
        ('backend: "a" backend: "b"', "given more than once"),
        ("backend { name: 'python' }", "expected a string"),
        ('backend: "\\q"', "unknown escape"),
        ('"python"', "expected a field name"),
        ("backend:", "no value"),
        ("backend: !", "unexpected"),
    ],
)
def test_anything_the_reader_does_not_understand_is_an_error_not_a_guess(text: str, message: str) -> None:
    with pytest.raises(PbtxtError, match=message):
        read_pbtxt(text)


def test_the_allowed_formats_are_the_intersection_of_the_restricting_policies() -> None:
    assert allowed_formats([None, ("pytorch", "onnx"), ("onnx", "tensorrt", "pytorch")]) == ("onnx", "pytorch")
    assert allowed_formats([None, None]) is None
    assert allowed_formats([("onnx",), ("python",)]) == ()


def test_the_signed_names_show_a_python_model_and_shared_libraries_but_not_an_unnamed_format() -> None:
    paths = ["fraud/config.pbtxt", "fraud/1/model.py", "fraud/1/model.onnx", "other/lib/libcustom.so.1", "README"]
    problems = triton_name_problems(paths, ("onnx",))
    assert [(p.path, p.found.split(" (")[0]) for p in problems] == [
        ("fraud/1/model.py", "format python"),
        ("other/lib/libcustom.so.1", "a shared library"),
    ]
    assert triton_name_problems(["fraud/config.pbtxt", "fraud/1/model.onnx"], ("onnx",)) == []
