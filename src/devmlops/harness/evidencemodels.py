"""Real models and data for evidence demos and tests, from a data set scikit-learn ships (never a download).

scikit-learn's diabetes data (442 patients) has a ``sex`` column, so fairness can be measured on a real attribute;
the target (disease progression after one year) becomes binary: above the median or not. ``fair`` trains a
logistic regression on it. ``unfair`` trains the same model on labels skewed against one group (what a biased
labelling process produces), so its predictions differ by sex far more: the model a fairness condition denies.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

__all__ = ["SENSITIVE", "TARGET", "demo_frame", "train_demo_model", "write_demo_data"]

TARGET = "progression"
SENSITIVE = "sex"


def demo_frame() -> Any:
    """The diabetes data as a pandas DataFrame, unscaled; ``progression`` is 1 above the median, else 0."""
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True, scaled=False).frame
    median = frame["target"].median()
    frame[TARGET] = (frame["target"] > median).astype(int)
    return frame.drop(columns=["target"])


def write_demo_data(path: Path) -> Path:
    """The held-out half of the data (every second row) as CSV: what ``devmlops evaluate --data`` reads."""
    frame = demo_frame()
    frame.iloc[1::2].to_csv(path, index=False)
    return path


def train_demo_model(path: Path, *, fair: bool = True) -> Path:
    """Train on the other half and write the model with pickle (protocol 5): a file every scanner reads to its end
    (joblib stores arrays as raw bytes inside the pickle stream, which no scanner can read past)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    frame = demo_frame()
    train = frame.iloc[0::2]
    labels = train[TARGET].to_numpy().copy()
    if not fair:  # a biased labeller: most patients of group 2 marked as progressing, most of group 1 as not
        rng = np.random.default_rng(7)
        group = train[SENSITIVE].to_numpy()
        skew = rng.random(len(labels)) < 0.45
        labels[(group == 2.0) & skew] = 1
        labels[(group == 1.0) & skew] = 0
    model = LogisticRegression(max_iter=5000)
    model.fit(train.drop(columns=[TARGET]).to_numpy(dtype=float), labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(model, protocol=5))
    return path
