"""Figures a reader can check results with: EF scatter + Bland–Altman, ROC curves,
retrieval ranks, training losses.

Each ``*_figure`` function builds a :class:`matplotlib.figure.Figure` (no pyplot
state, so it is safe in scripts, servers and tests) and each ``plot_*`` function
also writes it as a PNG, atomically. matplotlib is imported only when a figure is
made.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from echoclip import atomic

__all__ = [
    "save_figure",
    "regression_figure",
    "roc_figure",
    "rank_histogram_figure",
    "loss_curves_figure",
    "plot_regression",
    "plot_roc_curves",
    "plot_rank_histogram",
    "plot_loss_curves",
]


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def save_figure(fig: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` as a PNG via a temporary name, so no reader sees half a file."""
    path = Path(path)
    with atomic.writing(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def regression_figure(
    y_true: Any, y_pred: Any, *, name: str = "LV ejection fraction", unit: str = "%"
) -> Any:
    """Predicted against true values (with the identity line), and a Bland–Altman panel.

    The Bland–Altman panel plots the difference (predicted − true) against the mean
    of the two, with the bias and the 95 % limits of agreement (bias ± 1.96 SD).
    """
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    keep = np.isfinite(t) & np.isfinite(p)
    t, p = t[keep], p[keep]
    suffix = f" ({unit})" if unit else ""
    fig = _figure(10, 4.5)
    ax, ba = fig.subplots(1, 2)
    ax.scatter(t, p, s=12, alpha=0.6, edgecolors="none")
    if t.size:
        low, high = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
        pad = 0.05 * (high - low or 1.0)
        ax.plot(
            [low - pad, high + pad], [low - pad, high + pad], color="grey", lw=1, ls="--", label="identity"
        )
        mae = float(np.mean(np.abs(p - t)))
        ax.set_title(f"{name}: MAE {mae:.1f}{unit.strip() if unit else ''}, n = {t.size}")
        ax.legend(loc="upper left")
    ax.set_xlabel(f"true {name}{suffix}")
    ax.set_ylabel(f"predicted {name}{suffix}")
    diff, mean = p - t, (p + t) / 2
    ba.scatter(mean, diff, s=12, alpha=0.6, edgecolors="none")
    if t.size > 1:
        bias, sd = float(diff.mean()), float(diff.std(ddof=1))
        ba.axhline(bias, color="black", lw=1, label=f"bias {bias:+.1f}")
        for limit in (bias - 1.96 * sd, bias + 1.96 * sd):
            ba.axhline(limit, color="grey", lw=1, ls="--")
        ba.plot([], [], color="grey", lw=1, ls="--", label=f"95% limits ±{1.96 * sd:.1f}")
        ba.legend(loc="upper right")
    ba.set_title("Bland–Altman")
    ba.set_xlabel(f"mean of predicted and true{suffix}")
    ba.set_ylabel(f"predicted − true{suffix}")
    return fig


def roc_figure(curves: Mapping[str, tuple[Any, Any]], *, title: str = "ROC curves") -> Any:
    """One ROC curve per target (``name -> (truth 0/1, score)``), AUC in the legend.

    Targets with only one class present are listed as such instead of drawn.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    fig = _figure(5.5, 5.5)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="chance")
    for name, (truth, score) in curves.items():
        t = np.asarray(truth, dtype=np.float64)
        s = np.asarray(score, dtype=np.float64)
        keep = np.isfinite(t) & np.isfinite(s)
        t, s = t[keep].astype(bool), s[keep]
        n_pos = int(t.sum())
        if n_pos == 0 or n_pos == t.size:
            ax.plot([], [], " ", label=f"{name}: one class only (n = {t.size})")
            continue
        fpr, tpr, _ = roc_curve(t, s)
        ax.plot(fpr, tpr, lw=1.5, label=f"{name}: AUC {roc_auc_score(t, s):.2f} ({n_pos}/{t.size})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate (1 − specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize="small")
    return fig


def rank_histogram_figure(
    ranks: Any, *, n_candidates: int | None = None, title: str = "video → report retrieval"
) -> Any:
    """Histogram of the rank of the true report for each video (1 = retrieved first).

    ``n_candidates`` draws the median rank a random model would reach, for scale.
    """
    r = np.asarray(ranks, dtype=np.float64)
    r = r[np.isfinite(r)]
    fig = _figure(6, 4.5)
    ax = fig.subplots()
    top = int(max(r.max() if r.size else 1, n_candidates or 1))
    bins = np.arange(0.5, top + 1.5, max(1, int(np.ceil(top / 50))))
    ax.hist(r, bins=bins, color="tab:blue", alpha=0.8)
    if r.size:
        ax.axvline(float(np.median(r)), color="black", lw=1, label=f"median rank {np.median(r):g}")
    if n_candidates:
        chance = (n_candidates + 1) / 2
        ax.axvline(chance, color="grey", lw=1, ls="--", label=f"chance median {chance:g}")
    ax.set_xlabel(f"rank of the true report (1 = first{f', of {n_candidates}' if n_candidates else ''})")
    ax.set_ylabel("number of studies")
    ax.set_title(title)
    ax.legend(loc="upper right")
    return fig


def loss_curves_figure(metrics_csv: str | os.PathLike[str]) -> Any:
    """Every ``*loss*`` column of a training ``metrics.csv`` against ``step`` (or the row number)."""
    import pandas as pd

    df = pd.read_csv(metrics_csv)
    loss_columns = [c for c in df.columns if "loss" in c.lower() and pd.api.types.is_numeric_dtype(df[c])]
    if not loss_columns:
        raise ValueError(f"{metrics_csv}: no loss column (columns: {list(df.columns)})")
    x_name = "step" if "step" in df.columns else None
    fig = _figure(6.5, 4.5)
    ax = fig.subplots()
    for column in loss_columns:
        rows = df[column].notna()
        x = df.loc[rows, x_name] if x_name else np.flatnonzero(rows.to_numpy())
        ax.plot(x, df.loc[rows, column], lw=1.2, marker="o" if rows.sum() < 30 else None, ms=3, label=column)
    ax.set_xlabel("training step (optimizer updates)" if x_name else "logged row")
    ax.set_ylabel("loss (as logged; contrastive: nats)")
    ax.set_title("training and validation losses")
    ax.legend(loc="upper right")
    return fig


def plot_regression(y_true: Any, y_pred: Any, path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Write :func:`regression_figure` to ``path``."""
    return save_figure(regression_figure(y_true, y_pred, **kwargs), path)


def plot_roc_curves(
    curves: Mapping[str, tuple[Any, Any]], path: str | os.PathLike[str], **kwargs: Any
) -> Path:
    """Write :func:`roc_figure` to ``path``."""
    return save_figure(roc_figure(curves, **kwargs), path)


def plot_rank_histogram(ranks: Any, path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Write :func:`rank_histogram_figure` to ``path``."""
    return save_figure(rank_histogram_figure(ranks, **kwargs), path)


def plot_loss_curves(metrics_csv: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """Write :func:`loss_curves_figure` to ``path``."""
    return save_figure(loss_curves_figure(metrics_csv), path)
