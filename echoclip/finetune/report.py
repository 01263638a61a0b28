"""Predictions with test-time clip averaging, and the evaluation report of a fine-tuned model.

EchoNet-Dynamic scores a video by the mean prediction over clips spread along it;
:func:`predict` averages the model's outputs over ``n`` evenly spaced clips
(:class:`~echoclip.data.datasets.VideoClips`). :func:`write_report` writes ``metrics.json``,
``predictions.csv`` and the figures: MAE, RMSE, R² and Pearson's r for EF (plus the
EF < 50 % classification read off the predicted EF), accuracy, F1 and AUC for binary
targets, R² of ESV and EDV when they are predicted, and accuracy (overall, balanced,
per class) with the confusion matrix for a categorical target (the view).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from echoclip.atomic import write_json, write_text

EF_THRESHOLD = 50.0


def predict(
    model: Any,
    dataset: Any,
    clips: int = 1,
    batch_size: int = 8,
    num_workers: int = 0,
    limit: int | None = None,
    progress: bool = False,
    cache: dict[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(indices, predictions [N, outputs])`` of a fine-tuned model, averaged over ``clips`` per video.

    Regression outputs are in the targets' units and binary ones are probabilities;
    both are averaged over the clips. Videos that fail to load are left out of
    ``indices``. ``limit`` reads only the first videos; ``cache`` is that of
    :class:`~echoclip.data.datasets.VideoClips`.
    """
    from echoclip.data.datasets import VideoClips
    from echoclip.models.embed import encode_videos

    source: Any = VideoClips(dataset, clips, cache)
    if limit is not None and limit < len(source):
        source = torch.utils.data.Subset(source, range(limit))
    out = encode_videos(
        model,
        source,
        encode=model.predict,
        normalize=False,
        batch_size=batch_size,
        num_workers=num_workers,
        progress=progress,
        on_error="drop",
    )
    return out.positions, out.features.astype(np.float64)


# ---------------------------------------------------------------------------------------
# metrics


def task_metrics(
    task: Any, truth: np.ndarray, pred: np.ndarray, train_mean: Sequence[float] | None = None
) -> dict[str, Any]:
    """Figures of predictions ``[N, K]`` against truths ``[N, K]`` for a :class:`~echoclip.finetune.Task`.

    For EF regression: ``ef`` (MAE, RMSE, R², Pearson), ``ef50`` (EF < 50 % from the
    predicted EF), ``esv``/``edv`` when predicted, and ``baseline``: the MAE of always
    predicting the training mean. Binary targets: AUC, accuracy, F1 at probability 0.5.
    A categorical target (truths ``[N, 1]`` class indices, predictions ``[N, classes]``
    probabilities): under its column, accuracy, balanced accuracy, macro F1, the accuracy
    of each class (NaN for a class absent from the truths) and the confusion matrix
    (rows: true class, columns: predicted class, in the order of ``classes``).
    """
    from echoclip.metrics import binary_metrics, regression_metrics

    out: dict[str, Any] = {}
    if task.kind == "categorical":
        out[task.label] = categorical_task_metrics(list(task.targets), truth[:, 0], pred)
        return out
    if task.kind == "regression":
        for j, name in enumerate(task.targets):
            out[name] = regression_metrics(truth[:, j], pred[:, j])
        if "ef" in task.targets:
            j = task.targets.index("ef")
            out["ef50"] = binary_metrics(truth[:, j] < EF_THRESHOLD, EF_THRESHOLD - pred[:, j], threshold=0.0)
            out["ef50"]["score"] = f"{EF_THRESHOLD:g} - predicted EF"
        if train_mean is not None:
            out["baseline"] = {
                f"{name}_mae_mean_predictor": _mean_predictor_mae(truth[:, j], train_mean[j])
                for j, name in enumerate(task.targets)
            }
        return out
    for j, name in enumerate(task.targets):
        out[name] = binary_metrics(truth[:, j], pred[:, j], threshold=0.5)
    if len(task.targets) > 1:
        aucs = [out[n]["auc"] for n in task.targets if np.isfinite(out[n]["auc"])]
        out["macro_auc"] = float(np.mean(aucs)) if aucs else math.nan
    return out


def categorical_task_metrics(classes: Sequence[str], truth: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """Figures of class probabilities ``[N, C]`` against class indices ``[N]`` (NaN: unknown, left out)."""
    from echoclip.metrics import categorical_metrics

    known = np.isfinite(truth)
    t = truth[known].astype(np.int64)
    p = np.asarray(probs)[known].argmax(axis=1)
    names = np.asarray(classes, dtype=object)
    out: dict[str, Any] = dict(categorical_metrics(names[t], names[p]))
    confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(confusion, (t, p), 1)
    totals = confusion.sum(axis=1)
    out["per_class_accuracy"] = {
        c: float(confusion[i, i] / totals[i]) if totals[i] else math.nan for i, c in enumerate(classes)
    }
    out["confusion"] = {"classes": list(classes), "matrix": confusion.tolist()}
    out["n_unlabelled"] = int((~known).sum())
    return out


def _mean_predictor_mae(truth: np.ndarray, mean: float) -> float:
    t = truth[np.isfinite(truth)]
    return float(np.abs(t - mean).mean()) if t.size else math.nan


def write_report(
    out_dir: str | os.PathLike[str],
    task: Any,
    study_ids: Sequence[str],
    truth: np.ndarray,
    pred: np.ndarray,
    metrics: dict[str, Any],
    plots: bool = True,
    videos: Sequence[str] | None = None,
) -> Path:
    """Write ``predictions.csv``, the figures and ``metrics.json`` (returned) into ``out_dir``.

    ``videos`` (each row's file) adds a last ``video_path`` column: a study may hold several videos.
    A categorical target writes ``<column>_true``, ``<column>_pred`` (class names),
    ``<column>_prob`` (the predicted class's probability) and ``<column>_p_<class>``.
    """
    import pandas as pd

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame({"study_id": list(study_ids)})
    if task.kind == "categorical":
        names = np.asarray(task.targets, dtype=object)
        known = np.isfinite(truth[:, 0])
        table[f"{task.label}_true"] = np.where(
            known, names[np.where(known, truth[:, 0], 0).astype(int)], None
        )
        table[f"{task.label}_pred"] = names[pred.argmax(axis=1)] if len(pred) else []
        table[f"{task.label}_prob"] = pred.max(axis=1) if len(pred) else []
        for j, name in enumerate(task.targets):
            table[f"{task.label}_p_{name}"] = pred[:, j]
        plots = False  # no figure of a confusion matrix yet; metrics.json holds it
    else:
        for j, name in enumerate(task.targets):
            table[f"{name}_true"] = truth[:, j]
            table[f"{name}_pred"] = pred[:, j]
    if videos is not None:  # last, so that the first columns stay those of every task
        table["video_path"] = list(videos)
    write_text(out / "predictions.csv", table.to_csv(index=False))
    if plots and len(table):
        metrics["plots"] = _plots(out, task, truth, pred)
    path = out / "metrics.json"
    write_json(path, metrics)
    return path


def _plots(out: Path, task: Any, truth: np.ndarray, pred: np.ndarray) -> dict[str, str]:
    from echoclip.plots import plot_regression, plot_roc_curves

    written: dict[str, str] = {}
    if task.kind == "regression":
        j = task.targets.index("ef") if "ef" in task.targets else 0
        name = task.targets[j]
        label, unit = ("LV ejection fraction", "%") if name == "ef" else (name, "")
        scatter = plot_regression(truth[:, j], pred[:, j], out / f"{name}_scatter.png", name=label, unit=unit)
        written[f"{name}_scatter"] = str(scatter)
        if name == "ef":
            curves = {"EF < 50 %": (truth[:, j] < EF_THRESHOLD, EF_THRESHOLD - pred[:, j])}
            written["roc"] = str(
                plot_roc_curves(curves, out / "roc.png", title="EF < 50 % from predicted EF")
            )
        return written
    curves = {name: (truth[:, j], pred[:, j]) for j, name in enumerate(task.targets)}
    written["roc"] = str(plot_roc_curves(curves, out / "roc.png"))
    return written


__all__ = ["categorical_task_metrics", "predict", "task_metrics", "write_report"]
