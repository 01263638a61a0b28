"""Standard metrics for regression (EF), binary (devices, findings) and categorical (view) targets.

Thin, NaN-aware wrappers over scikit-learn and SciPy: rows whose truth or
prediction is missing are dropped and counted (``n``), and a metric that is not
defined on the data (AUC with one class present) is ``nan`` rather than an error,
so that one rare device does not stop an evaluation.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

__all__ = [
    "regression_metrics",
    "binary_metrics",
    "categorical_metrics",
    "brier_score",
    "minmax_scale",
    "youden_threshold",
]


def _finite_pairs(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=np.float64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"truth and prediction differ in length: {t.size} vs {p.size}")
    keep = np.isfinite(t) & np.isfinite(p)
    return t[keep], p[keep]


def regression_metrics(y_true: Any, y_pred: Any) -> dict[str, float]:
    """MAE, RMSE, R² and Pearson's r (with its p-value) of predictions against truths."""
    from scipy.stats import pearsonr
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    t, p = _finite_pairs(y_true, y_pred)
    out: dict[str, float] = {"n": int(t.size)}
    if t.size == 0:
        return out | dict.fromkeys(("mae", "rmse", "r2", "pearson_r", "pearson_p"), math.nan)
    out["mae"] = float(mean_absolute_error(t, p))
    out["rmse"] = float(math.sqrt(mean_squared_error(t, p)))
    out["r2"] = float(r2_score(t, p)) if t.size > 1 else math.nan
    if t.size > 2 and np.ptp(t) > 0 and np.ptp(p) > 0:
        r = pearsonr(t, p)
        out["pearson_r"], out["pearson_p"] = float(r.statistic), float(r.pvalue)
    else:
        out["pearson_r"] = out["pearson_p"] = math.nan
    return out


def brier_score(y_true: Any, prob: Any) -> float:
    """Mean squared error of probabilities against 0/1 truths (lower is better)."""
    from sklearn.metrics import brier_score_loss

    t, p = _finite_pairs(y_true, prob)
    if t.size == 0:
        return math.nan
    if p.min() < 0 or p.max() > 1:
        raise ValueError(
            "Brier score needs probabilities in [0, 1]; calibrate or min-max scale the scores first"
        )
    return float(brier_score_loss(t.astype(bool), p))


def minmax_scale(scores: Any) -> np.ndarray:
    """Scores mapped linearly onto [0, 1]: the naive way to read similarities as probabilities."""
    s = np.asarray(scores, dtype=np.float64)
    finite = s[np.isfinite(s)]
    if finite.size == 0:
        return s
    low, span = finite.min(), np.ptp(finite)
    return np.full_like(s, 0.5) if span == 0 else (s - low) / span


def youden_threshold(y_true: Any, score: Any) -> float:
    """The score threshold maximising sensitivity + specificity - 1 on these data."""
    from sklearn.metrics import roc_curve

    t, s = _finite_pairs(y_true, score)
    if t.size == 0 or t.min() == t.max():
        return math.nan
    fpr, tpr, thresholds = roc_curve(t.astype(bool), s)
    best = int(np.argmax(tpr - fpr))
    return float(thresholds[best]) if np.isfinite(thresholds[best]) else float(s.max())


def binary_metrics(y_true: Any, score: Any, threshold: float = 0.5) -> dict[str, float]:
    """AUC of the score, and accuracy, F1, sensitivity, specificity of ``score >= threshold``.

    The Brier score is added when the scores are probabilities (all in [0, 1]).
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, roc_auc_score

    t, s = _finite_pairs(y_true, score)
    t = t.astype(bool)
    out: dict[str, float] = {"n": int(t.size), "n_positive": int(t.sum()), "threshold": float(threshold)}
    if t.size == 0:
        return out | dict.fromkeys(("auc", "accuracy", "f1", "sensitivity", "specificity"), math.nan)
    both = 0 < t.sum() < t.size
    out["auc"] = float(roc_auc_score(t, s)) if both else math.nan
    pred = s >= threshold
    tn, fp, fn, tp = confusion_matrix(t, pred, labels=[False, True]).ravel()
    out["accuracy"] = float(accuracy_score(t, pred))
    out["f1"] = float(f1_score(t, pred, zero_division=0.0))
    out["sensitivity"] = float(tp / (tp + fn)) if tp + fn else math.nan
    out["specificity"] = float(tn / (tn + fp)) if tn + fp else math.nan
    if s.min() >= 0 and s.max() <= 1:
        out["brier"] = brier_score(t, s)
    return out


def categorical_metrics(y_true: Any, y_pred: Any) -> dict[str, float]:
    """Accuracy, balanced accuracy and macro F1 of predicted class labels (missing truths dropped)."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    t = np.asarray(y_true, dtype=object).reshape(-1)
    p = np.asarray(y_pred, dtype=object).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"truth and prediction differ in length: {t.size} vs {p.size}")
    keep = np.array([v is not None and not (isinstance(v, float) and math.isnan(v)) for v in t], dtype=bool)
    t, p = t[keep].astype(str), p[keep].astype(str)
    out: dict[str, float] = {"n": int(t.size)}
    if t.size == 0:
        return out | dict.fromkeys(("accuracy", "balanced_accuracy", "macro_f1"), math.nan)
    out["accuracy"] = float(accuracy_score(t, p))
    with warnings.catch_warnings():  # a predicted class absent from the truths is expected, not news
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        out["balanced_accuracy"] = float(balanced_accuracy_score(t, p))
    out["macro_f1"] = float(f1_score(t, p, average="macro", zero_division=0.0))
    return out
