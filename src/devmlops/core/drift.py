"""Input drift against a signed baseline: the baseline's shape, how it is made, and PSI and KS on a bounded sample.

The baseline is part of a model's signed evaluation evidence (``predicate.baseline`` of the evaluation predicate,
docs/evidence.md): per feature (a column of the first input tensor), the interior cut points of quantile bins of the
evaluation data and the share of rows in each bin. The guard keeps a sliding sample of the rows it forwards, binned
on arrival (one byte per feature and row), with per-bin counts kept up to date, so that the statistics at scrape time
cost features x bins, whatever the traffic. Nothing here reads a clock or a socket.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_BINS",
    "MAX_BINS",
    "MAX_FEATURES",
    "Baseline",
    "BaselineError",
    "BaselineFeature",
    "DriftSample",
    "baseline_from_columns",
    "first_tensor_rows",
    "ks_binned",
    "leaves",
    "parse_baseline",
    "psi",
]

DEFAULT_BINS = 10
MAX_BINS = 50
MAX_FEATURES = 256
MAX_FEATURE_INDEX = 65_535
_EPSILON = 1e-4  # the share an empty bin counts as: PSI's logarithm needs both shares above zero
_SUM_TOLERANCE = 1e-6


class BaselineError(ValueError):
    """A baseline that is not one; the message names the field (``baseline.features[2].edges: ...``)."""


@dataclass(frozen=True, slots=True)
class BaselineFeature:
    """One feature's bins: ``edges`` are the ascending interior cut points (bin i holds edges[i-1] <= x < edges[i];
    the first and last bins are open), ``proportions`` the evaluation data's share per bin."""

    name: str
    index: int  # the column of the first input tensor's rows
    edges: tuple[float, ...]
    proportions: tuple[float, ...]

    def bin_of(self, value: float) -> int:
        return bisect.bisect_right(self.edges, value)


@dataclass(frozen=True, slots=True)
class Baseline:
    features: tuple[BaselineFeature, ...]
    rows: int

    def to_json(self) -> str:
        """Canonical JSON: the same baseline renders to the same bytes (the webhook compares renderings)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "features": [
                {"name": f.name, "index": f.index, "edges": list(f.edges), "proportions": list(f.proportions)}
                for f in self.features
            ],
        }


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _integral(value: object) -> int | None:
    """An integer, written as one or as a number without a fraction (signed statements pass through protobuf's
    Struct, which keeps every number as a double: 20 comes back as 20.0); None for anything else."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    return value


def _feature(raw: object, where: str) -> BaselineFeature:
    if not isinstance(raw, dict):
        raise BaselineError(f"{where}: got {_kind(raw)}, expected an object")
    name, index, edges, proportions = (raw.get(k) for k in ("name", "index", "edges", "proportions"))
    if not isinstance(name, str) or not 1 <= len(name) <= 128:
        raise BaselineError(f"{where}.name: got {_kind(name)}, expected a string of 1 to 128 characters")
    column = _integral(index)
    if column is None or not 0 <= column <= MAX_FEATURE_INDEX:
        raise BaselineError(f"{where}.index: got {index!r:.40}, expected an integer from 0 to {MAX_FEATURE_INDEX}")
    if not isinstance(edges, list) or not all(_number(e) for e in edges):
        raise BaselineError(f"{where}.edges: got {_kind(edges)}, expected a list of finite numbers")
    if len(edges) > MAX_BINS - 1:
        raise BaselineError(f"{where}.edges: got {len(edges)} cut points, expected at most {MAX_BINS - 1}")
    if any(b <= a for a, b in itertools.pairwise(edges)):
        raise BaselineError(f"{where}.edges: expected strictly ascending cut points")
    if not isinstance(proportions, list) or not all(_number(p) and p >= 0 for p in proportions):
        raise BaselineError(f"{where}.proportions: got {_kind(proportions)}, expected a list of numbers >= 0")
    if len(proportions) != len(edges) + 1:
        raise BaselineError(
            f"{where}.proportions: got {len(proportions)} bins, expected {len(edges) + 1} (one more than edges)"
        )
    if abs(sum(proportions) - 1.0) > _SUM_TOLERANCE:
        raise BaselineError(f"{where}.proportions: they sum to {sum(proportions):.6g}, expected 1")
    return BaselineFeature(name, column, tuple(map(float, edges)), tuple(map(float, proportions)))


def parse_baseline(raw: object, where: str = "baseline") -> Baseline:
    """A baseline from its JSON value, bounded (at most 256 features of at most 50 bins), or ``BaselineError``
    naming the field."""
    if not isinstance(raw, dict):
        raise BaselineError(f"{where}: got {_kind(raw)}, expected an object")
    rows = _integral(raw.get("rows"))
    if rows is None or rows < 1:
        raise BaselineError(f"{where}.rows: got {raw.get('rows')!r:.40}, expected a positive integer")
    features = raw.get("features")
    if not isinstance(features, list) or not features:
        raise BaselineError(f"{where}.features: got {_kind(features)}, expected a non-empty list")
    if len(features) > MAX_FEATURES:
        raise BaselineError(f"{where}.features: got {len(features)}, expected at most {MAX_FEATURES}")
    parsed = tuple(_feature(f, f"{where}.features[{i}]") for i, f in enumerate(features))
    for kind, values in (("name", [f.name for f in parsed]), ("index", [f.index for f in parsed])):
        if len(set(values)) != len(values):
            twice = next(v for i, v in enumerate(values) if v in values[:i])
            raise BaselineError(f"{where}.features: {kind} {twice!r} appears more than once")
    return Baseline(parsed, rows)


def _quantile(ordered: Sequence[float], q: float) -> float:
    """The linear-interpolation quantile (numpy's default) of sorted values."""
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def baseline_from_columns(
    columns: Sequence[Sequence[float]], names: Sequence[str], *, bins: int = DEFAULT_BINS
) -> Baseline:
    """The baseline of evaluation data given column by column: quantile cut points (repeated ones merged: a column
    of few distinct values gets fewer bins; a constant column one) and each bin's share of the rows."""
    if not 2 <= bins <= MAX_BINS:
        raise BaselineError(f"bins: got {bins}, expected 2 to {MAX_BINS}")
    if not columns or len(columns) != len(names):
        raise BaselineError(f"features: got {len(columns)} columns and {len(names)} names, expected as many, >= 1")
    if len(columns) > MAX_FEATURES:
        raise BaselineError(f"features: got {len(columns)}, expected at most {MAX_FEATURES}")
    rows = len(columns[0])
    features = []
    for index, (name, column) in enumerate(zip(names, columns, strict=True)):
        values = [float(v) for v in column]
        if len(values) != rows or not rows or not all(math.isfinite(v) for v in values):
            raise BaselineError(f"features[{index}] ({name}): expected {rows} finite numbers (>= 1)")
        ordered = sorted(values)
        # A cut point at the minimum would leave the first bin empty (bins hold edges[i-1] <= x < edges[i]).
        edges = sorted({q for q in (_quantile(ordered, k / bins) for k in range(1, bins)) if q > ordered[0]})
        counts = [0] * (len(edges) + 1)
        for value in values:
            counts[bisect.bisect_right(edges, value)] += 1
        features.append(BaselineFeature(str(name)[:128], index, tuple(edges), tuple(c / rows for c in counts)))
    return Baseline(tuple(features), rows)


def psi(expected: Sequence[float], counts: Sequence[int]) -> float:
    """Population stability index of observed bin ``counts`` against ``expected`` shares: sum (o - e) ln(o / e),
    empty bins counted as a share of 1e-4. 0 when nothing was observed."""
    total = sum(counts)
    if not total:
        return 0.0
    value = 0.0
    for share, count in zip(expected, counts, strict=True):
        e, o = max(share, _EPSILON), max(count / total, _EPSILON)
        value += (o - e) * math.log(o / e)
    return value


def ks_binned(expected: Sequence[float], counts: Sequence[int]) -> float:
    """Kolmogorov-Smirnov distance on the binned distributions: the largest gap between the cumulative shares at
    the bin edges (a lower bound of the exact statistic). 0 when nothing was observed."""
    total = sum(counts)
    if not total:
        return 0.0
    gap, e_sum, o_sum = 0.0, 0.0, 0.0
    for share, count in zip(expected, counts, strict=True):
        e_sum += share
        o_sum += count / total
        gap = max(gap, abs(o_sum - e_sum))
    return gap


def leaves(data: Any, limit: int | None = None) -> list[Any]:
    """Row-major leaves of nested lists at any depth (Triton reads row-major nested ``data`` of any depth); with a
    ``limit``, none at all ([]) when there are more."""
    if isinstance(data, list) and all(not isinstance(d, list) for d in data):
        return data if limit is None or len(data) <= limit else []
    found: list[Any] = []
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            found.append(item)
            if limit is not None and len(found) > limit:
                return []
    return found


def first_tensor_rows(body: Any, *, max_values: int) -> tuple[list[Any], int]:
    """The first input tensor of a v2 inference request as (flat row-major values, columns per row); ([], 0) when
    there is none, it is not numeric, its data disagree with its shape, or it holds more than ``max_values``."""
    if not isinstance(body, Mapping):
        return [], 0
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs or not isinstance(inputs[0], Mapping):
        return [], 0
    tensor = inputs[0]
    if tensor.get("datatype") in ("BYTES", "BOOL"):
        return [], 0
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not shape or not all(isinstance(d, int) and d >= 0 for d in shape):
        return [], 0
    columns = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
    values = leaves(tensor.get("data"), max_values)
    if not columns or not values or len(values) != math.prod(shape):
        return [], 0
    return values, columns


class DriftSample:
    """The last ``size`` rows seen, binned per baseline feature (one byte each), with the per-bin counts kept as
    rows come and go. Not thread-safe: the guard serves from one event loop."""

    __slots__ = ("_baseline", "_counts", "_edges", "_indexes", "_rows", "_size")

    def __init__(self, baseline: Baseline, size: int) -> None:
        self._baseline = baseline
        self._size = size
        self._rows: deque[bytes] = deque()
        self._counts = [[0] * len(f.proportions) for f in baseline.features]
        self._indexes = [f.index for f in baseline.features]
        self._edges = [f.edges for f in baseline.features]

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, values: Sequence[Any], columns: int) -> int:
        """Add the rows of ``values`` (row-major, ``columns`` per row), at most the last ``size`` of them; rows that
        lack a feature's column or hold something other than a finite number there are skipped. Returns how many
        were added."""
        indexes, edges, size = self._indexes, self._edges, self._size
        if max(indexes) >= columns:
            return 0
        rows = len(values) // columns
        added = 0
        for row in range(max(0, rows - size), rows):
            start = row * columns
            cells = [values[start + index] for index in indexes]
            try:
                if not math.isfinite(sum(cells)):  # one C-level pass: NaN and infinity propagate
                    continue
            except TypeError:  # a string, null or list where a number belongs
                continue
            binned = bytes([bisect.bisect_right(cuts, cell) for cuts, cell in zip(edges, cells, strict=True)])
            for counts, index in zip(self._counts, binned, strict=True):
                counts[index] += 1
            self._rows.append(binned)
            if len(self._rows) > size:
                for counts, index in zip(self._counts, self._rows.popleft(), strict=True):
                    counts[index] -= 1
            added += 1
        return added

    def statistics(self) -> list[tuple[str, float, float]]:
        """Per feature: (name, PSI, binned KS) of the sample against the baseline; cost features x bins."""
        return [
            (f.name, psi(f.proportions, counts), ks_binned(f.proportions, counts))
            for f, counts in zip(self._baseline.features, self._counts, strict=True)
        ]
