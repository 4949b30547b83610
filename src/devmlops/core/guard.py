"""The serving guard's rules as pure functions: whether a ModelDeployment's guard meets its policies' demands, the
token buckets that limit request rates, and what a request or a response to a model may not contain.

The guard process (``devmlops.guard``) applies them to live traffic; the webhook applies ``guard_problems`` at
admission. Nothing here reads a clock, a socket or the cluster: the caller passes the time and the bytes.
"""

from __future__ import annotations

import base64
import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from devmlops.core.drift import Baseline, leaves, parse_baseline
from devmlops.core.manifests import Drift, DriftPolicy, Guard, GuardPolicy, RateLimit, TextChecks

__all__ = [
    "Finding",
    "GuardConfig",
    "Split",
    "TextScanner",
    "TokenBucket",
    "drift_required",
    "guard_config_json",
    "guard_problems",
    "inspect_request",
    "inspect_text",
    "is_inference",
    "parse_guard_config",
    "read_request",
    "request_texts",
    "response_texts",
    "tightest",
]


@dataclass(frozen=True, slots=True)
class Finding:
    """Why the guard refuses (or, in log mode, reports) a request or a response."""

    reason: str  # a metric label: rate_limited, too_large, schema, injection, secret, pii, blocked_pattern
    detail: str  # for the audit line and the client; never the matched text itself


# A scanner looks at one text and names what it found ('' for nothing); the guard plugs in secret detection
# (a library of the field) this way, the core stays free of it.
TextScanner = Callable[[str], str]


# -- admission: a ModelDeployment's guard against its policies ------------------------------------------------------


def _looser_rate(name: str, wanted: RateLimit | None, limit: RateLimit | None) -> list[str]:
    if limit is None:
        return []
    if wanted is None:
        return [f"spec.guard.{name} is missing; expected at most {limit.requests_per_second}/s, burst {limit.burst}"]
    found = []
    if wanted.requests_per_second > limit.requests_per_second:
        found.append(
            f"spec.guard.{name}.requestsPerSecond: found {wanted.requests_per_second}, "
            f"expected at most {limit.requests_per_second}"
        )
    if wanted.burst > limit.burst:
        found.append(f"spec.guard.{name}.burst: found {wanted.burst}, expected at most {limit.burst}")
    return found


def _looser_checks(name: str, wanted: TextChecks | None, limit: TextChecks | None) -> list[str]:
    if limit is None:
        return []
    have = wanted or TextChecks()
    found = [
        f"spec.guard.{name}.{field}: found {getattr(have, attr)!r}, expected true"
        for field, attr in (("injection", "injection"), ("secrets", "secrets"), ("pii", "pii"))
        if getattr(limit, attr) and not getattr(have, attr)
    ]
    missing = sorted(set(limit.blocked_patterns or ()) - set(have.blocked_patterns or ()))
    if missing:
        found.append(f"spec.guard.{name}.blockedPatterns: missing {missing}")
    return found


def _looser_drift(drift: Drift | None, limit: Drift | None, demand: DriftPolicy | None) -> list[str]:
    required = limit is not None or (demand is not None and demand.required)
    if drift is None:
        return ["spec.guard.drift is missing; drift monitoring is required"] if required else []
    found = []
    ceilings = [t for t in (limit.threshold if limit else None, demand.max_threshold if demand else None) if t]
    if ceilings and drift.threshold > min(ceilings):
        found.append(f"spec.guard.drift.threshold: found {drift.threshold}, expected at most {min(ceilings)}")
    if limit is not None and drift.sample_size < limit.sample_size:
        found.append(f"spec.guard.drift.sampleSize: found {drift.sample_size}, expected at least {limit.sample_size}")
    return found


def drift_required(demand: GuardPolicy | None) -> bool:
    """Whether a policy's guard demand requires drift monitoring (and with it a signed baseline)."""
    return demand is not None and (
        (demand.drift is not None and demand.drift.required)
        or (demand.limits is not None and demand.limits.drift is not None)
    )


def guard_problems(
    guard: Guard | None, demands: Iterable[tuple[str, GuardPolicy]], *, signed_baseline: bool | None = None
) -> list[str]:
    """What makes ``guard`` (a ModelDeployment's ``spec.guard``) looser than the policies' demands, each naming the
    field, what was found and what the policy (by name) expects. A ModelDeployment may only tighten.

    ``signed_baseline`` says whether a verified evaluation attestation of the model carries a drift baseline (None:
    the caller did not look); a policy requiring drift monitoring needs one."""
    problems: list[str] = []
    for policy, demand in demands:
        found: list[str] = []
        if guard is None:
            if demand.required or demand.limits is not None or drift_required(demand):
                found.append("spec.guard is missing; a guard in front of the model server is required")
        elif demand.limits is not None:
            limit = demand.limits
            found += _looser_rate("rateLimit", guard.rate_limit, limit.rate_limit)
            found += _looser_rate("perClient", guard.per_client, limit.per_client)
            if limit.per_client is not None and guard.client_header != limit.client_header:
                # A client header names the client as the client says: another value, another bucket.
                found.append(
                    f"spec.guard.clientHeader: found {guard.client_header!r}, expected {limit.client_header!r} "
                    "(a client picks its own header value, and with it a fresh perClient bucket)"
                )
            if limit.max_request_bytes is not None and (
                guard.max_request_bytes is None or guard.max_request_bytes > limit.max_request_bytes
            ):
                found.append(
                    f"spec.guard.maxRequestBytes: found {guard.max_request_bytes}, "
                    f"expected at most {limit.max_request_bytes}"
                )
            if limit.protocol is not None and guard.protocol != limit.protocol:
                found.append(f"spec.guard.protocol: found {guard.protocol!r}, expected {limit.protocol!r}")
            found += _looser_checks("input", guard.input, limit.input)
            found += _looser_checks("output", guard.output, limit.output)
            if limit.action == "block" and guard.action != "block":
                found.append(f"spec.guard.action: found {guard.action!r}, expected 'block'")
            if guard.audit_content and not limit.audit_content:
                # Request and response bodies in the guard's log, which a namespace editor reads: only where allowed.
                found.append("spec.guard.auditContent: found true, expected false (the policy's limits do not allow "
                             "request and response bodies in the audit line)")  # fmt: skip
        if guard is not None:
            found += _looser_drift(guard.drift, demand.limits.drift if demand.limits else None, demand.drift)
            if drift_required(demand) and guard.drift is not None and signed_baseline is False:
                found.append(
                    "spec.guard.drift: no verified evaluation attestation of spec.model.digest carries a baseline "
                    "(predicate.baseline); drift monitoring needs a signed one"
                )
        problems += [f"{text} (ClusterModelPolicy {policy})" for text in found]
    return problems


def _lower(a: RateLimit | None, b: RateLimit | None) -> RateLimit | None:
    if a is None or b is None:
        return a or b
    return RateLimit(requests_per_second=min(a.requests_per_second, b.requests_per_second), burst=min(a.burst, b.burst))


def _both(a: TextChecks | None, b: TextChecks | None) -> TextChecks | None:
    if a is None or b is None:
        return a or b
    patterns = list(dict.fromkeys([*(a.blocked_patterns or ()), *(b.blocked_patterns or ())]))
    return TextChecks(
        injection=a.injection or b.injection or None,
        secrets=a.secrets or b.secrets or None,
        pii=a.pii or b.pii or None,
        blocked_patterns=patterns or None,
    )


def tightest(demands: Sequence[GuardPolicy]) -> Guard | None:
    """The guard a new ModelDeployment gets when it declares none and policies demand one: every demand's limits
    at once (lowest rates and sizes, every check, block). None when no policy demands a guard. Protocols that
    disagree cannot both hold: the first is taken and the guard gate names the other policy's."""
    demanding = [d for d in demands if d.required or d.limits is not None or drift_required(d)]
    if not demanding:
        return None
    guard = Guard()
    for limits in (d.limits for d in demanding if d.limits is not None):
        sizes = [n for n in (guard.max_request_bytes, limits.max_request_bytes) if n is not None]
        guard = Guard(
            rate_limit=_lower(guard.rate_limit, limits.rate_limit),
            per_client=_lower(guard.per_client, limits.per_client),
            client_header=guard.client_header or limits.client_header,
            max_request_bytes=min(sizes) if sizes else None,
            protocol=guard.protocol or limits.protocol,
            input=_both(guard.input, limits.input),
            output=_both(guard.output, limits.output),
            action="block" if "block" in (guard.action, limits.action) else "log",
            drift=_stricter_drift(guard.drift, limits.drift),
        )
    for demand in (d.drift for d in demanding if d.drift is not None and d.drift.required):
        ceiling = demand.max_threshold
        drift = _stricter_drift(guard.drift, Drift(threshold=ceiling) if ceiling else Drift())
        guard = guard.model_copy(update={"drift": drift})
    return guard


def _stricter_drift(a: Drift | None, b: Drift | None) -> Drift | None:
    if a is None or b is None:
        return a or b
    return Drift(threshold=min(a.threshold, b.threshold), sample_size=max(a.sample_size, b.sample_size))


# -- rate limits ----------------------------------------------------------------------------------------------------


class TokenBucket:
    """``rate`` tokens a second up to ``burst``; ``take(now)`` spends one when there is one. Not thread-safe: the
    guard serves from one event loop."""

    __slots__ = ("_burst", "_rate", "_stamp", "_tokens")

    def __init__(self, limit: RateLimit, now: float) -> None:
        self._rate = float(limit.requests_per_second)
        self._burst = float(limit.burst)
        self._tokens = self._burst
        self._stamp = now

    def take(self, now: float) -> bool:
        elapsed = max(0.0, now - self._stamp)  # a clock that steps back never refills
        self._stamp = max(self._stamp, now)
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


# -- what a request may not contain ---------------------------------------------------------------------------------

# Phrasings of prompt injection and jailbreak attempts that are common and cheap to match; a heuristic floor, not
# a classifier (docs/guard.md says what it misses).
_INJECTION = re.compile(
    r"(?is)\b(?:ignore|disregard|forget|override)\b.{0,40}?\b(?:previous|prior|above|earlier|all|your|system)\b"
    r".{0,40}?\b(?:instructions?|prompts?|rules|guidelines|directions)\b"
    r"|\b(?:reveal|print|show|repeat|leak)\b.{0,40}?\b(?:system prompt|hidden instructions|initial prompt)\b"
    r"|\byou are now\b.{0,40}?\b(?:DAN|unrestricted|jailbroken|developer mode)\b"
    r"|\b(?:do anything now|developer mode enabled|jailbreak mode)\b"
)
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")


def _luhn(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _pii(text: str) -> str:
    if _EMAIL.search(text):
        return "an e-mail address"
    for match in _CARD.finditer(text):
        digits = re.sub(r"\D", "", match.group())
        if 13 <= len(digits) <= 19 and _luhn(digits):
            return "a payment card number"
    return ""


def _normalised(text: str) -> str:
    """What a reader (a person, a language model) reads: compatibility forms folded (fullwidth letters, ligatures)
    and invisible format characters (zero-width spaces and joiners, direction marks) dropped."""
    folded = unicodedata.normalize("NFKC", text)
    return "".join(c for c in folded if unicodedata.category(c) != "Cf") if not folded.isascii() else folded


def inspect_text(
    texts: Sequence[str], checks: TextChecks | None, secrets: TextScanner | None, where: str
) -> Finding | None:
    """The first thing ``checks`` forbids in ``texts`` (prompts or completions); ``where`` is 'input' or 'output'."""
    if checks is None:
        return None
    patterns = [re.compile(p) for p in checks.blocked_patterns or ()]
    for text in map(_normalised, texts):
        if checks.injection and _INJECTION.search(text):
            return Finding("injection", f"{where}: prompt-injection or jailbreak phrasing")
        for index, pattern in enumerate(patterns):
            if pattern.search(text):
                return Finding("blocked_pattern", f"{where}: matches blockedPatterns[{index}]")
        if checks.pii:
            kind = _pii(text)
            if kind:
                return Finding("pii", f"{where}: contains {kind}")
        if checks.secrets and secrets is not None:
            kind = secrets(text)
            if kind:
                return Finding("secret", f"{where}: contains a credential ({kind})")
    return None


# -- request schemas ------------------------------------------------------------------------------------------------

_V2_INFER = re.compile(r"^/v2/models/[^/]+(?:/versions/[^/]+)?/infer$")
# Triton's generate extension: a text endpoint of the v2 family (body {"text_input": ...}).
_V2_GENERATE = re.compile(r"^/v2/models/[^/]+(?:/versions/[^/]+)?/generate(?:_stream)?$")
_OPENAI = ("/v1/chat/completions", "/v1/completions")
_V2_TYPES = {
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES", "BF16",
}  # fmt: skip


def _schema(where: str, detail: str) -> Finding:
    return Finding("schema", f"{where}: {detail}")


def _check_v2(body: Any) -> Finding | None:
    """An Open Inference Protocol (v2) inference request: ``inputs`` of named tensors with shape, datatype, data."""
    if not isinstance(body, dict):
        return _schema("body", "expected a JSON object")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        return _schema("inputs", "expected a non-empty list of tensors")
    for index, tensor in enumerate(inputs):
        where = f"inputs[{index}]"
        if not isinstance(tensor, dict):
            return _schema(where, "expected an object")
        if not isinstance(tensor.get("name"), str) or not tensor["name"]:
            return _schema(f"{where}.name", "expected a non-empty string")
        shape = tensor.get("shape")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
            return _schema(f"{where}.shape", "expected a list of integers")
        if tensor.get("datatype") not in _V2_TYPES:
            return _schema(f"{where}.datatype", f"found {tensor.get('datatype')!r}, expected one of the v2 types")
        if "data" not in tensor:
            return _schema(f"{where}.data", "missing")
    outputs = body.get("outputs")
    if outputs is not None and not isinstance(outputs, list):
        return _schema("outputs", "expected a list")
    return None


def _check_openai(path: str, body: Any) -> Finding | None:
    """An OpenAI-compatible chat or text completion request."""
    if not isinstance(body, dict):
        return _schema("body", "expected a JSON object")
    if not isinstance(body.get("model"), str):
        return _schema("model", "expected a string")
    if path.endswith("/chat/completions"):
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _schema("messages", "expected a non-empty list")
        for index, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                return _schema(f"messages[{index}].role", "expected a string")
            content = message.get("content")
            if not (content is None or isinstance(content, (str, list))):
                return _schema(f"messages[{index}].content", "expected a string or a list of parts")
    else:
        prompt = body.get("prompt")
        if not (isinstance(prompt, str) or (isinstance(prompt, list) and all(isinstance(p, str) for p in prompt))):
            return _schema("prompt", "expected a string or a list of strings")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        return _schema("stream", "expected true or false")
    return None


def _parts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return []


def _strings(value: Any) -> list[str]:
    """Every string in a JSON value, at any depth, in document order (keys aside)."""
    found: list[str] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            found.append(item)
        elif isinstance(item, dict):
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, list):
            stack.extend(reversed(item))
    return found


def _tensor_texts(tensor: Any) -> list[str]:
    """A v2 BYTES tensor's strings, and what a model server makes of them: MLServer decodes a tensor whose content
    type is ``base64`` (the request's ``parameters.content_type``, or, without one, the model's own metadata, which
    the guard cannot see), and its HuggingFace codecs parse strings as JSON (``hg_json``), where ``\\u0049gnore``
    reads "Ignore". Each string is read as written, as the text it is the base64 of (when it is one), and as the
    strings of the JSON it parses to."""
    if not isinstance(tensor, dict) or tensor.get("datatype") != "BYTES":
        return []
    texts = [d for d in leaves(tensor.get("data")) if isinstance(d, str)]
    texts += [decoded for decoded in map(_base64_text, texts) if decoded]
    return texts + [inner for text in texts for inner in _json_strings(text)]


def _base64_text(text: str) -> str:
    """The UTF-8 text ``text`` is the base64 of, as MLServer's base64 codec decodes it; '' when it is none."""
    if len(text) < 4 or len(text) % 4:
        return ""
    try:
        return base64.b64decode(text, validate=True).decode("utf-8")
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        return ""


def _json_strings(text: str) -> list[str]:
    """The strings of the JSON document ``text`` is, if it is one (an object, a list or a string)."""
    if not text.lstrip().startswith(("{", "[", '"')):
        return []
    try:
        return _strings(json.loads(text))
    except (ValueError, RecursionError):
        return []


# What Triton's generate extension answers besides the model's output tensors.
_GENERATE_METADATA = frozenset({"model_name", "model_version", "id"})
# What an OpenAI-compatible request names rather than says: the model served and the end user's identifier (often
# an e-mail address, which the personal-data check would refuse in every request); no model reads them as text.
_OPENAI_IDENTIFIERS = frozenset({"model", "user"})


def request_texts(body: Any, path: str = "") -> list[str]:
    """The texts a request carries to a model: chat messages, completion prompts, v2 BYTES tensors. By ``path``:
    for Triton's generate extension, every string in the body (Triton passes each property of the request object to
    the model as the input tensor, or parameter, of that name, so a text input may be called anything); for the
    OpenAI completions, every string but the model's and the user's names (tool descriptions, tool-call arguments,
    response-format schemas: the server writes them into the prompt the model reads)."""
    if not isinstance(body, dict):
        return []
    if _V2_GENERATE.match(path):
        return _strings(body)
    if path in _OPENAI:
        return _strings({key: value for key, value in body.items() if key not in _OPENAI_IDENTIFIERS})
    texts: list[str] = []
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            texts += _parts(message.get("content"))
    for key in ("prompt", "text_input"):  # completions; Triton's generate extension
        value = body.get(key)
        texts += [value] if isinstance(value, str) else [p for p in value or [] if isinstance(p, str)]
    for tensor in body.get("inputs") or []:
        texts += _tensor_texts(tensor)
    return texts


def response_texts(body: Any, path: str = "") -> list[str]:
    """The texts a model answers with: chat and completion choices (whole or streamed deltas), v2 BYTES outputs;
    to a request at Triton's generate extension (``path``), every string of the answer's output tensors
    (``text_output`` and every further one, each under its own name), whole or one server-sent event at a time."""
    if not isinstance(body, dict):
        return []
    if _V2_GENERATE.match(path):
        # Triton's own fields, repeated in every event of a stream, stay out: between two events' text they would
        # split a credential the model streams piece by piece (the request's "id" is the client's to choose).
        return _strings({key: value for key, value in body.items() if key not in _GENERATE_METADATA})
    texts: list[str] = []
    for choice in body.get("choices") or []:
        if isinstance(choice, dict):
            if isinstance(choice.get("text"), str):
                texts.append(choice["text"])
            for key in ("message", "delta"):
                part = choice.get(key)
                if isinstance(part, dict):
                    texts += _parts(part.get("content")) + _answer_extras(part)
    for tensor in body.get("outputs") or []:
        texts += _tensor_texts(tensor)
    return texts


def _answer_extras(message: dict[str, Any]) -> list[str]:
    """What else an OpenAI-compatible answer says besides its content: a refusal, reasoning (``reasoning`` in vLLM
    since late 2025, ``reasoning_content`` before and elsewhere), and the arguments of the tools it calls (the client
    runs them with what the model wrote there)."""
    keys = ("refusal", "reasoning", "reasoning_content")
    texts = [message[key] for key in keys if isinstance(message.get(key), str)]
    calls = message.get("tool_calls")
    for call in [*(calls if isinstance(calls, list) else []), message.get("function_call")]:
        function = call.get("function", call) if isinstance(call, dict) else None
        if isinstance(function, dict) and isinstance(function.get("arguments"), str):
            texts.append(function["arguments"])
    return texts


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Python keeps the last of duplicate keys, Triton's rapidjson the first: a body the guard and the model server
    would read differently is refused."""
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {key[:64]!r}")
        obj[key] = value
    return obj


def inspect_request(
    guard: Guard, method: str, path: str, body: bytes, secrets: TextScanner | None = None
) -> Finding | None:
    """What the guard refuses in a request it has read whole (its size is checked while reading): a body that is not
    the endpoint's schema, or input text ``guard.input`` forbids. Reads and probes pass (no body to check)."""
    return read_request(guard, method, path, body, secrets)[0]


def read_request(
    guard: Guard, method: str, path: str, body: bytes, secrets: TextScanner | None = None, *, parse: bool = False
) -> tuple[Finding | None, Any]:
    """``inspect_request``'s finding and the body as parsed for it (None when the checks did not need it and
    ``parse`` is false, or it is not JSON), so that the drift and probing signals read it without a second parse."""
    if method in ("GET", "HEAD", "OPTIONS"):
        # Read without a look at the body: so none may go with them (a server that answered a GET with a body
        # as it answers a POST would have taken input no check read).
        return (
            _schema("body", f"{method} with a body: only POST bodies are read by the checks") if body else None
        ), None
    checks = guard.input is not None or guard.output is not None
    if method != "POST" and (guard.protocol is not None or checks):
        # Inference endpoints take POST; another method with a body is no inference request for the split and the
        # signals (``is_inference``), yet a model server might answer it as one.
        return _schema("method", f"{method} {path}: only POST requests carry a body the checks read"), None
    if guard.protocol == "v2" and not _V2_INFER.match(path):
        return _schema("path", f"{method} {path} is not a v2 inference endpoint"), None
    if guard.protocol == "openai" and path not in _OPENAI:
        return _schema("path", f"{method} {path} is not an OpenAI-compatible completion endpoint"), None
    if guard.protocol is None and checks and not _readable_endpoint(path):
        # The checks read prompts and answers where these endpoints carry them; elsewhere (Triton's logging, trace or
        # shared-memory APIs, MLServer's /invocations or a model's own REST handler, an extension added later) they
        # would read nothing and pass everything, a question or an answer.
        return _schema("path", f"{method} {path} is not an endpoint whose texts the checks can read"), None
    if guard.output is not None and _binary_output(body):
        return _schema("parameters", "binary tensor data was asked for; the output checks read JSON answers only"), None
    parsed: Any = None
    if guard.protocol is not None or guard.input is not None:
        try:
            parsed = json.loads(body, object_pairs_hook=_no_duplicate_keys)
        except (ValueError, RecursionError) as exc:
            return _schema("body", f"not JSON ({exc})"), None
    elif parse and _V2_INFER.match(path):
        try:
            parsed = json.loads(body)
        except (ValueError, RecursionError):
            parsed = None  # not read by any check: forwarded as before, only left out of the signals
    if guard.protocol == "v2":
        found = _check_v2(parsed)
    elif guard.protocol == "openai":
        found = _check_openai(path, parsed)
    else:
        found = None
    return found or inspect_text(request_texts(parsed, path), guard.input, secrets, "input"), parsed


def _readable_endpoint(path: str) -> bool:
    return bool(_V2_INFER.match(path) or _V2_GENERATE.match(path)) or path in _OPENAI


def _binary_output(body: bytes) -> bool:
    """Whether a v2 request asks for outputs as raw bytes after the JSON (Triton's binary tensor extension), which
    no text check can read. Looked for in the raw body: a body that does not parse is refused elsewhere."""
    return b"binary_data" in body


def is_inference(method: str, path: str) -> bool:
    """Whether a request asks a model for an answer (v2 infer or generate, OpenAI completions): what the guard's
    split may send elsewhere and what its drift and probing signals read. Health, readiness and metadata never."""
    return method == "POST" and _readable_endpoint(path)


# -- the guard's configuration ----------------------------------------------------------------------------------------

_SPLIT_UPSTREAM = re.compile(r"^https?://[A-Za-z0-9.\-]+(?::\d{1,5})?$")


@dataclass(frozen=True, slots=True)
class Split:
    """Send ``weight`` percent (0 to 100) of the inference requests to ``upstream`` (a canary's guard, scheme, host
    and port) instead of the local model server, after every input check."""

    upstream: str
    weight: int

    def __post_init__(self) -> None:
        if not isinstance(self.upstream, str) or not _SPLIT_UPSTREAM.match(self.upstream):
            raise ValueError(f"split.upstream: got {self.upstream!r:.100}, expected http(s)://host[:port]")
        if not isinstance(self.weight, int) or isinstance(self.weight, bool) or not 0 <= self.weight <= 100:
            raise ValueError(f"split.weight: got {self.weight!r:.40}, expected an integer from 0 to 100")

    def takes(self, count: int) -> bool:
        """Whether the inference request numbered ``count`` (0, 1, 2, ... in arrival order) goes to the split
        upstream: smooth and exact, over any 100 consecutive requests exactly ``weight`` go there."""
        return (count + 1) * self.weight // 100 > count * self.weight // 100


@dataclass(frozen=True, slots=True)
class GuardConfig:
    """What the guard process runs with: ``spec.guard``, the traffic split (rollouts) and the signed baseline."""

    guard: Guard
    split: Split | None = None
    baseline: Baseline | None = None


def guard_config_json(guard: Guard, *, split: Split | None = None, baseline_json: str = "") -> str:
    """The guard's configuration as the sidecar reads it (``devmlops guard --config``): ``spec.guard`` camelCase
    without nulls, the split, and the baseline (only where drift monitoring is declared). Deterministic: the webhook
    compares it with the child's, byte for byte."""
    data: dict[str, Any] = guard.model_dump(mode="json", by_alias=True, exclude_none=True)
    if split is not None:
        data["split"] = {"upstream": split.upstream, "weight": split.weight}
    if baseline_json and guard.drift is not None:
        data["baseline"] = json.loads(baseline_json)
    return json.dumps(data, sort_keys=True)


def parse_guard_config(text: str) -> GuardConfig:
    """The sidecar's ``--config``; a ``ValueError`` names the wrong field."""
    data: Any = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("config: expected a JSON object")
    split_raw, baseline_raw = data.pop("split", None), data.pop("baseline", None)
    split = None
    if split_raw is not None:
        if not isinstance(split_raw, dict) or set(split_raw) != {"upstream", "weight"}:
            raise ValueError("split: expected an object of upstream and weight")
        split = Split(upstream=split_raw["upstream"], weight=split_raw["weight"])
    baseline = parse_baseline(baseline_raw) if baseline_raw is not None else None
    return GuardConfig(guard=Guard.model_validate(data), split=split, baseline=baseline)
