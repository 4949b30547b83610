"""``devmlops evaluate``: performance, fairness and robustness figures for a classifier, as attestation predicates.

- performance: scikit-learn's metrics (accuracy, balanced accuracy, precision, recall, F1; ROC AUC for a binary
  model with ``predict_proba``);
- fairness: fairlearn's demographic parity difference and equalized odds difference for each sensitive feature,
  and the per-group figures behind them (``MetricFrame``);
- baseline (in the evaluation predicate): per feature, quantile bins of the evaluation data and each bin's share,
  the signed reference the serving guard measures input drift against (core/drift.py);
- robustness: accuracy under a bounded L-inf perturbation of ``epsilon`` feature standard deviations, from the
  Adversarial Robustness Toolbox's Fast Gradient Method where ART can take the model's gradients (logistic
  regression, SVMs), else the worst of several uniform random perturbations of the same bound (no gradient needed).

The model file is scanned (``adapters/scan.py``) before it is loaded: loading a pickle runs it. These libraries are
the optional extra ``devmlops[evaluate]``; the webhook's image does not carry them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devmlops.adapters.scan import scan_model
from devmlops.core.drift import DEFAULT_BINS, BaselineError, baseline_from_columns
from devmlops.errors import InvalidInputError

__all__ = ["Evaluation", "evaluate_model"]

_RANDOM_TRIES = 10


@dataclass(frozen=True, slots=True)
class Evaluation:
    evaluation: dict[str, Any]
    fairness: dict[str, Any] | None
    robustness: dict[str, Any] | None
    seconds: float


def _libraries() -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ART warns that PyTorch and TensorFlow are absent: they are not needed
            import joblib
            import numpy
            import pandas
            from art.attacks.evasion import FastGradientMethod
            from art.estimators.classification import SklearnClassifier
            from art.estimators.classification.scikitlearn import ClassGradientsMixin
            from fairlearn import metrics as fairness
            from sklearn import metrics
    except ImportError as exc:
        raise InvalidInputError(
            f"devmlops evaluate needs the evaluate extra: pip install 'devmlops[evaluate]' ({exc.name} is missing)"
        ) from exc
    return joblib, numpy, pandas, metrics, fairness, SklearnClassifier, FastGradientMethod, ClassGradientsMixin


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _load(model_path: Path, joblib: Any) -> Any:
    scan = scan_model(model_path)
    if not scan.ok:
        raise InvalidInputError(
            f"{model_path}: not loaded, the scan found unsafe content: " + "; ".join(scan.problems()[:3])
        )
    if model_path.is_dir():
        candidates = [p for p in sorted(model_path.iterdir()) if p.suffix in (".joblib", ".pkl", ".pickle")]
        if len(candidates) != 1:
            raise InvalidInputError(f"{model_path}: expected one .joblib/.pkl/.pickle file, found {len(candidates)}")
        model_path = candidates[0]
    try:
        model = joblib.load(model_path)
    except Exception as exc:  # a model file is arbitrary input: any failure to load it is the user's to fix
        raise InvalidInputError(f"{model_path}: cannot be loaded as a scikit-learn model ({exc})") from exc
    if not hasattr(model, "predict"):
        raise InvalidInputError(f"{model_path}: got a {type(model).__name__}, expected a model with predict()")
    return model


def _ratio(value: Any) -> float:
    return round(min(max(float(value), 0.0), 1.0), 6)


def evaluate_model(
    model_path: Path,
    data_path: Path,
    *,
    target: str,
    sensitive_features: Sequence[str] = (),
    exclude: Sequence[str] = (),
    epsilon: float = 0.1,
    robustness: bool = True,
    seed: int = 0,
    baseline_bins: int = DEFAULT_BINS,
) -> Evaluation:
    """Evaluate the model in ``model_path`` on the CSV ``data_path``; predicates for the three attestations.
    ``baseline_bins`` 0 leaves the drift baseline out."""
    started = time.perf_counter()
    joblib, np, pd, metrics, fairness, sklearn_classifier, fgm, gradients = _libraries()
    model = _load(model_path, joblib)
    raw = data_path.read_bytes()
    try:
        frame = pd.read_csv(data_path)
    except (ValueError, OSError) as exc:
        raise InvalidInputError(f"--data {data_path}: not a readable CSV file ({exc})") from exc
    missing = [c for c in (target, *sensitive_features, *exclude) if c not in frame.columns]
    if missing:
        raise InvalidInputError(f"--data {data_path}: no column(s) {missing}; columns: {list(frame.columns)}")
    if len(frame) == 0:
        raise InvalidInputError(f"--data {data_path}: no rows")
    y = frame[target].to_numpy()
    features = frame.drop(columns=[target, *exclude])
    x = features.to_numpy(dtype=float)
    try:
        predicted = model.predict(x)
    except Exception as exc:  # the model and the data disagree (feature count, types): say so
        raise InvalidInputError(f"the model cannot predict on {data_path}'s features ({exc})") from exc
    labels = np.unique(y)
    binary = len(labels) == 2
    average = "binary" if binary else "macro"
    positive = labels.max() if binary else 1
    scores = {
        "accuracy": _ratio(metrics.accuracy_score(y, predicted)),
        "balancedAccuracy": _ratio(metrics.balanced_accuracy_score(y, predicted)),
        "precision": _ratio(
            metrics.precision_score(y, predicted, average=average, pos_label=positive, zero_division=0)
        ),
        "recall": _ratio(metrics.recall_score(y, predicted, average=average, pos_label=positive, zero_division=0)),
        "f1": _ratio(metrics.f1_score(y, predicted, average=average, pos_label=positive, zero_division=0)),
    }
    if binary and hasattr(model, "predict_proba"):
        scores["rocAuc"] = _ratio(metrics.roc_auc_score(y, model.predict_proba(x)[:, 1]))
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    libraries = {name: _version(name) for name in ("scikit-learn", "fairlearn", "adversarial-robustness-toolbox")}
    tool = {"name": "devmlops evaluate", "version": _version("devmlops"), "libraries": libraries}
    dataset = {
        "name": data_path.name,
        "digest": "sha256:" + hashlib.sha256(raw).hexdigest(),
        "rows": len(frame),
        "target": target,
    }
    evaluation = {
        "timestamp": now,
        "tool": tool,
        "dataset": dataset,
        "task": "binary-classification" if binary else "multiclass-classification",
        "metrics": scores,
    }
    if baseline_bins:
        try:
            baseline = baseline_from_columns(
                [x[:, i].tolist() for i in range(x.shape[1])], [str(c) for c in features.columns], bins=baseline_bins
            )
        except BaselineError as exc:
            raise InvalidInputError(f"--data {data_path}: no drift baseline: {exc}") from exc
        evaluation["baseline"] = baseline.to_dict()
    fair = None
    if sensitive_features:
        if not binary:
            raise InvalidInputError(
                f"--sensitive-feature: fairness differences need a binary target; {target!r} has {len(labels)} values"
            )
        fair = {
            "timestamp": now,
            "tool": tool,
            "dataset": dataset,
            "sensitiveFeatures": [
                _fairness(frame[name], y, predicted, positive, name, fairness, metrics) for name in sensitive_features
            ],
        }
    robust: dict[str, Any] | None = None
    if robustness:
        robust = _robustness(model, x, y, epsilon, seed, np, sklearn_classifier, fgm, gradients)
        robust = {"timestamp": now, "tool": tool, "dataset": dataset, **robust}
    return Evaluation(evaluation, fair, robust, time.perf_counter() - started)


def _fairness(
    column: Any, y: Any, predicted: Any, positive: Any, name: str, fairness: Any, metrics: Any
) -> dict[str, Any]:
    y_bin, p_bin = (y == positive).astype(int), (predicted == positive).astype(int)
    frame = fairness.MetricFrame(
        metrics={
            "accuracy": metrics.accuracy_score,
            "selectionRate": fairness.selection_rate,
            "truePositiveRate": fairness.true_positive_rate,
            "falsePositiveRate": fairness.false_positive_rate,
            "count": fairness.count,
        },
        y_true=y_bin,
        y_pred=p_bin,
        sensitive_features=column.astype(str),
    )
    groups: dict[str, Any] = {}
    for group, row in frame.by_group.iterrows():
        groups[str(group)] = {
            "count": int(row["count"]),
            **{k: _ratio(row[k]) for k in ("accuracy", "selectionRate", "truePositiveRate", "falsePositiveRate")},
        }
    sensitive = column.astype(str)
    return {
        "name": name,
        "demographicParityDifference": _ratio(
            fairness.demographic_parity_difference(y_bin, p_bin, sensitive_features=sensitive)
        ),
        "equalizedOddsDifference": _ratio(
            fairness.equalized_odds_difference(y_bin, p_bin, sensitive_features=sensitive)
        ),
        "groups": groups,
    }


def _robustness(
    model: Any, x: Any, y: Any, epsilon: float, seed: int, np: Any, sklearn_classifier: Any, fgm: Any, gradients: Any
) -> dict[str, Any]:
    clean = float((model.predict(x) == y).mean())
    low, high = x.min(axis=0), x.max(axis=0)
    bound = epsilon * x.std(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            wrapped = sklearn_classifier(model=model, clip_values=(low, high))
        except Exception:  # ART has no wrapper for this model type: the gradient-free bound below still applies
            wrapped = None
    if wrapped is not None and isinstance(wrapped, gradients):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            adversarial = fgm(wrapped, eps=bound, eps_step=bound, norm=np.inf).generate(x.astype(np.float32))
        perturbed = float((model.predict(adversarial) == y).mean())
        attack = {
            "name": "FastGradientMethod",
            "library": f"adversarial-robustness-toolbox {_version('adversarial-robustness-toolbox')}",
        }
    else:
        rng = np.random.default_rng(seed)
        still_right = model.predict(x) == y
        for _ in range(_RANDOM_TRIES):
            noise = rng.uniform(-1.0, 1.0, size=x.shape) * bound
            still_right &= model.predict(np.clip(x + noise, low, high)) == y
        perturbed = float(still_right.mean())
        attack = {
            "name": f"uniform random perturbation, worst of {_RANDOM_TRIES}",
            "library": f"numpy {_version('numpy')}",
        }
    return {
        "attack": {
            **attack,
            "norm": "inf",
            "epsilon": epsilon,
            "parameters": {"epsilonUnit": "feature standard deviations", "seed": seed},
        },
        "cleanAccuracy": _ratio(clean),
        "perturbedAccuracy": _ratio(perturbed),
        "accuracyDrop": round(clean - perturbed, 6),
    }
