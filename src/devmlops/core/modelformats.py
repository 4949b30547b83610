"""What format a served model really is, read from its signed files rather than taken from ``spec.model.format``.

A policy's ``allow.formats`` is judged at admission against the requester's word; what a model server loads is
decided by the files. Triton loads, per model folder of its repository, the backend that folder's ``config.pbtxt``
names (``backend: "python"`` runs the folder's ``model.py``), or, when it names none, the one its model file's
name implies. So the storage initializer (``adapters/servingverify.py``) maps each Triton model to a format from the
verified bytes, and admission (``core/gates/modelformat.py``) from the signed file names, and refuses a format no
admitting policy allows. What cannot be decided is refused (fail closed).

The mapping (Triton backend or platform -> format): ``onnxruntime``/``onnxruntime_onnx`` -> onnx, ``pytorch``/
``pytorch_libtorch`` -> pytorch, ``tensorflow``/``tensorflow_savedmodel``/``tensorflow_graphdef`` -> tensorflow,
``tensorrt``/``tensorrt_plan`` -> tensorrt, ``python`` -> python, ``fil`` -> fil and ``openvino`` -> openvino (model
files, no code of the model's own, but not one of the formats above: a policy names them to allow them). An
``ensemble`` composes other models of the same repository, each judged itself, and has no format. Any other backend
(vLLM, TensorRT-LLM, custom ones: Python or native code outside these rules) is refused; so is a ``runtime`` other
than a ``.py`` file (python), a ``model_operations`` block (custom operator libraries: native code), and a shared
library (``*.so``) anywhere in a model folder (Triton loads a backend library from the model's folder first).

For MLServer (KServe), a ``model-settings.json`` names its ``implementation``: the MLServer runtimes map to their
format (``mlserver_sklearn.SKLearnModel`` -> sklearn, ...), any other class is Python code of the model's (python).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from devmlops.core.ports import SignedModel

__all__ = [
    "MAX_CONFIG_BYTES",
    "MLSERVER_MODEL_SETTINGS",
    "TRITON_CONFIG",
    "FormatProblem",
    "PbtxtError",
    "allowed_formats",
    "mlserver_problems",
    "read_pbtxt",
    "signed_paths",
    "triton_name_problems",
    "triton_problems",
]

TRITON_CONFIG = "config.pbtxt"
MLSERVER_MODEL_SETTINGS = "model-settings.json"
MAX_CONFIG_BYTES = 1 << 20  # a config.pbtxt is a few KiB; a larger one is refused, not read

BACKENDS = {
    "onnxruntime": "onnx",
    "pytorch": "pytorch",
    "tensorflow": "tensorflow",
    "tensorrt": "tensorrt",
    "python": "python",
    "fil": "fil",
    "openvino": "openvino",
}
PLATFORMS = {
    "onnxruntime_onnx": "onnx",
    "pytorch_libtorch": "pytorch",
    "tensorflow_savedmodel": "tensorflow",
    "tensorflow_graphdef": "tensorflow",
    "tensorrt_plan": "tensorrt",
}
ENSEMBLE = "ensemble"
# The model file (or folder) names Triton infers a backend from when a config names none (version folder entries).
MODEL_FILES = {
    "model.onnx": "onnx",
    "model.pt": "pytorch",
    "model.savedmodel": "tensorflow",
    "model.graphdef": "tensorflow",
    "model.plan": "tensorrt",
    "model.py": "python",
}
MLSERVER_IMPLEMENTATIONS = {
    "mlserver_sklearn.SKLearnModel": "sklearn",
    "mlserver_xgboost.XGBoostModel": "xgboost",
    "mlserver_lightgbm.LightGBMModel": "lightgbm",
    "mlserver_catboost.CatboostModel": "catboost",
    "mlserver_mlflow.MLflowRuntime": "mlflow",
    "mlserver_huggingface.HuggingFaceRuntime": "huggingface",
}
_READ_FIELDS = ("platform", "backend", "runtime", "default_model_filename")


@dataclass(frozen=True, slots=True)
class FormatProblem:
    """A file whose format is not allowed or cannot be decided: ``found`` says what it is."""

    path: str
    found: str

    def describe(self, allowed: Sequence[str]) -> str:
        return f"{self.path}: got {self.found}, expected one of {list(allowed)}"


class PbtxtError(ValueError):
    """Not protobuf text format as this reader accepts it."""


def allowed_formats(formats: Iterable[tuple[str, ...] | None]) -> tuple[str, ...] | None:
    """The formats every restricting policy allows (their intersection, sorted); None when none restricts."""
    sets = [set(f) for f in formats if f is not None]
    if not sets:
        return None
    return tuple(sorted(set.intersection(*sets)))


def signed_paths(signed: SignedModel) -> list[str]:
    """The file paths a signature covers (a sharded manifest names 'path:start:end' per shard)."""
    sharded = signed.serialization.get("method") == "shards"
    return sorted({name.rsplit(":", 2)[0] if sharded else name for name, _digest in signed.files})


# -- protobuf text format, top-level string fields only -----------------------------------------------------------

_TOKEN = re.compile(
    r"""(?P<space>\s+)|(?P<comment>\#[^\n]*)|(?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')"""
    r"""|(?P<word>[A-Za-z0-9_.+-]+)|(?P<punct>[{}\[\]<>:,;])"""
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "a": "\a", "b": "\b", "f": "\f"}
_ESCAPE = re.compile(r"\\(?:([0-7]{1,3})|x([0-9A-Fa-f]{1,2})|(.))")
_CLOSING = {"{": "}", "<": ">", "[": "]"}
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _unescape(quoted: str) -> str:
    def one(match: re.Match[str]) -> str:
        octal, hexa, char = match.groups()
        if octal or hexa:
            return chr(int(octal, 8) if octal else int(hexa, 16))
        if char not in _ESCAPES:
            raise PbtxtError(f"unknown escape \\{char} in {quoted[:40]}")
        return _ESCAPES[char]

    return _ESCAPE.sub(one, quoted[1:-1])


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise PbtxtError(f"unexpected {text[position : position + 20]!r} at offset {position}")
        kind = match.lastgroup or ""
        if kind not in ("space", "comment"):
            tokens.append((kind, match.group()))
        position = match.end()
    return tokens


def _skip_message(tokens: Sequence[tuple[str, str]], start: int) -> int:
    """The index past the balanced ``{...}``, ``<...>`` or ``[...]`` opened at ``start``."""
    stack: list[str] = []
    for index in range(start, len(tokens)):
        kind, value = tokens[index]
        if kind != "punct":
            continue
        if value in _CLOSING:
            stack.append(_CLOSING[value])
        elif value in ("}", ">", "]"):
            if not stack or stack.pop() != value:
                raise PbtxtError(f"unbalanced {value!r}")
            if not stack:
                return index + 1
    raise PbtxtError(f"unclosed {tokens[start][1]!r}")


def read_pbtxt(text: str) -> dict[str, str]:
    """The top-level ``platform``, ``backend``, ``runtime`` and ``default_model_filename`` of a Triton model config
    (protobuf text format), and ``model_operations`` ('' when present). Strict: an unbalanced block, an unterminated
    string, a repeated or non-string field of these is an error (PbtxtError), never a guess."""
    tokens = _tokens(text)
    found: dict[str, str] = {}
    index = 0
    while index < len(tokens):
        kind, name = tokens[index]
        if kind != "word" or not _FIELD.fullmatch(name):
            raise PbtxtError(f"expected a field name, got {name!r}")
        index += 1
        if index < len(tokens) and tokens[index] == ("punct", ":"):
            index += 1
        if index >= len(tokens):
            raise PbtxtError(f"field {name}: no value")
        kind, value = tokens[index]
        if kind == "punct" and value in _CLOSING:
            if name in _READ_FIELDS:
                raise PbtxtError(f"field {name}: got a block or list, expected a string")
            if name == "model_operations":
                found[name] = ""
            index = _skip_message(tokens, index)
        elif kind == "string":
            parts = []
            while index < len(tokens) and tokens[index][0] == "string":  # adjacent strings concatenate
                parts.append(_unescape(tokens[index][1]))
                index += 1
            if name in _READ_FIELDS:
                if name in found:
                    raise PbtxtError(f"field {name}: given more than once")
                found[name] = "".join(parts)
        elif kind == "word":
            if name in _READ_FIELDS:
                raise PbtxtError(f"field {name}: got {value!r}, expected a quoted string")
            index += 1
        else:
            raise PbtxtError(f"field {name}: got {value!r}, expected a value")
        if index < len(tokens) and tokens[index] in (("punct", ","), ("punct", ";")):
            index += 1
    return found


# -- Triton --------------------------------------------------------------------------------------------------------


def _is_library(name: str) -> bool:
    return name.endswith(".so") or ".so." in name


def _by_model(paths: Iterable[str]) -> dict[str, list[str]]:
    """Paths grouped by the repository's model folder (the first segment); files at the root are no model's."""
    models: dict[str, list[str]] = {}
    for path in paths:
        model, sep, rest = path.partition("/")
        if sep and rest:
            models.setdefault(model, []).append(rest)
    return models


def _named_formats(model: str, inside: Sequence[str]) -> list[tuple[str, str]]:
    """(path, format) for each version-folder entry named as Triton infers a backend from."""
    found = []
    for rest in inside:
        parts = rest.split("/")
        if len(parts) >= 2 and parts[1] in MODEL_FILES:
            found.append((f"{model}/{parts[0]}/{parts[1]}", MODEL_FILES[parts[1]]))
    return sorted(set(found))


def _libraries(model: str, inside: Sequence[str]) -> list[FormatProblem]:
    return [
        FormatProblem(f"{model}/{rest}", "a shared library (native code Triton may load as the model's backend)")
        for rest in sorted(inside)
        if _is_library(rest.rsplit("/", 1)[-1])
    ]


def triton_name_problems(paths: Iterable[str], allowed: Sequence[str]) -> list[FormatProblem]:
    """What the signed file names alone show against ``allowed``: a version-folder entry whose name makes Triton load
    a format not allowed (``model.py``: the python backend) and shared libraries. The configs' contents are judged
    where the bytes load (``triton_problems``)."""
    problems: list[FormatProblem] = []
    for model, inside in sorted(_by_model(paths).items()):
        problems += _libraries(model, inside)
        problems += [
            FormatProblem(path, f"format {fmt} (a {path.rsplit('/', 1)[-1]} Triton loads by its name)")
            for path, fmt in _named_formats(model, inside)
            if fmt not in allowed
        ]
    return problems


def _config_formats(fields: Mapping[str, str]) -> tuple[set[str] | None, str]:
    """The format a config names (None: it names none), or a reason it cannot be decided."""
    if "model_operations" in fields:
        return set(), "model_operations (custom operator libraries: native code)"
    runtime, backend, platform = fields.get("runtime", ""), fields.get("backend", ""), fields.get("platform", "")
    named: set[str] = set()
    if runtime:
        if not runtime.endswith(".py"):
            return set(), f'runtime "{runtime}" (not one devmlops can map to a format)'
        named.add("python")
    if backend:
        if backend not in BACKENDS:
            return set(), f'backend "{backend}" (not one devmlops can map to a format)'
        named.add(BACKENDS[backend])
    if platform == ENSEMBLE and not backend and not runtime:
        return {ENSEMBLE}, ""
    if platform:
        if platform not in PLATFORMS:
            return set(), f'platform "{platform}" (not one devmlops can map to a format)'
        named.add(PLATFORMS[platform])
    if len(named) > 1:
        return set(), f"{', '.join(sorted(named))} at once (platform, backend and runtime disagree)"
    default = fields.get("default_model_filename", "")
    if not named and default:
        return (
            ({MODEL_FILES[default]}, "") if default in MODEL_FILES else (set(), f'default_model_filename "{default}"')
        )
    return (named or None), ""


def triton_problems(paths: Iterable[str], configs: Mapping[str, str], allowed: Sequence[str]) -> list[FormatProblem]:
    """Every model folder of a Triton repository judged against ``allowed``: ``paths`` are the repository's files
    (relative), ``configs`` the text of each ``<model>/config.pbtxt`` by its path. A model's format is its config's
    backend, platform or runtime, else the format its version folders' model files are named for (every one of them
    allowed); a model of none, or of one this module cannot decide, is refused."""
    models = _by_model(paths)
    if not models:
        return [FormatProblem(".", "no model folder (a Triton repository holds one folder per model)")]
    problems: list[FormatProblem] = []
    for model, inside in sorted(models.items()):
        problems += _libraries(model, inside)
        config = f"{model}/{TRITON_CONFIG}"
        formats: set[str] | None = None
        if config in configs:
            try:
                formats, undecided = _config_formats(read_pbtxt(configs[config]))
            except PbtxtError as exc:
                formats, undecided = set(), f"no config Triton format devmlops can read ({exc})"
            if undecided:
                problems.append(FormatProblem(config, undecided))
                continue
            if formats == {ENSEMBLE}:
                continue  # composes the repository's other models, each judged itself
        if formats is not None:
            problems += [FormatProblem(config, f"format {fmt}") for fmt in sorted(formats) if fmt not in allowed]
            continue
        named = _named_formats(model, inside)
        if not named:
            problems.append(FormatProblem(f"{model}/", "no backend or platform and no model file to tell it from"))
        problems += [
            FormatProblem(path, f"format {fmt} (Triton infers the backend from the file name)")
            for path, fmt in named
            if fmt not in allowed
        ]
    return problems


# -- MLServer -------------------------------------------------------------------------------------------------------


def mlserver_problems(settings: Mapping[str, str], allowed: Sequence[str]) -> list[FormatProblem]:
    """Each ``model-settings.json`` (text by path) whose ``implementation`` is a format not ``allowed``: an MLServer
    runtime maps to its format, any other class is the model's own Python code (python). One without an
    implementation leaves the choice to the serving runtime, which the policy allows or not (``allow.runtimes``)."""
    problems: list[FormatProblem] = []
    for path, text in sorted(settings.items()):
        try:
            raw = json.loads(text)
        except ValueError as exc:
            problems.append(FormatProblem(path, f"no JSON ({exc})"))
            continue
        implementation = raw.get("implementation") if isinstance(raw, dict) else None
        if implementation is None:
            continue
        if not isinstance(implementation, str):
            problems.append(FormatProblem(path, f"implementation {implementation!r:.60} (expected a class name)"))
            continue
        fmt = MLSERVER_IMPLEMENTATIONS.get(implementation, "python")
        if fmt not in allowed:
            problems.append(FormatProblem(path, f'implementation "{implementation}", format {fmt}'))
    return problems
