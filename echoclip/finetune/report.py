"""Predictions with test-time clip averaging, and the evaluation report of a fine-tuned model.

EchoNet-Dynamic scores a video by the mean prediction over clips spread along it;
:class:`VideoClips` gives every video's ``n`` evenly spaced clips and :func:`predict`
averages the model's outputs over them. :func:`write_report` writes ``metrics.json``,
``predictions.csv`` and the figures: MAE, RMSE, R² and Pearson's r for EF (plus the
EF < 50 % classification read off the predicted EF), accuracy, F1 and AUC for binary
targets, R² of ESV and EDV when they are predicted.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from echoclip.atomic import write_json, write_text
from echoclip.errors import VideoReadError

EF_THRESHOLD = 50.0


def clip_starts(total: int, span: float, n: int) -> np.ndarray:
    """First frames of ``n`` clips spanning ``span`` source frames, spread evenly over ``total`` frames.

    One clip is centred (as the inference transform takes it); a video shorter than a
    clip gives clips that all start at 0 (they loop, as the cine does).
    """
    room = max(0, int(math.floor(total - span)))
    if n == 1:
        return np.array([room // 2])
    return np.linspace(0, room, n).round().astype(np.int64)


class VideoClips(Dataset):
    """``n`` clips of each video of a clip dataset: items ``{"video": [n, 3, T, H, W], "index": i}``.

    The video is decoded once and cut at :func:`clip_starts`, at the frame rate of the
    dataset's (inference) transform. An unreadable video gives ``None`` and is recorded
    in the dataset's ``skipped`` log. ``cache`` (path -> decoded video) keeps decoded
    videos for later passes over the same data.
    """

    def __init__(self, dataset: Any, clips: int = 1, cache: dict[str, Any] | None = None) -> None:
        if clips < 1:
            raise ValueError(f"clips per video must be at least 1, got {clips}")
        self.dataset, self.clips, self.cache = dataset, int(clips), cache

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        from echoclip.data.video import load_video

        ds = self.dataset
        path = ds.video_path(index)
        video = self.cache.get(str(path)) if self.cache is not None else None
        if video is None:
            try:
                video = load_video(path, **ds.read_options)
            except VideoReadError as e:
                ds.skipped.add(path, e)
                return None
            if self.cache is not None:
                self.cache[str(path)] = video
        sampler = ds.sampler
        step = sampler.step(video.fps)
        offsets = np.floor(np.arange(sampler.num_frames) * step + 1e-6).astype(np.int64)
        starts = clip_starts(video.num_frames, step * (sampler.num_frames - 1) + 1, self.clips)
        clips = [ds.transform(video.frames[(s + offsets) % video.num_frames]) for s in starts]
        return {"video": torch.stack(clips), "index": index}


def _collate(samples: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    good = [s for s in samples if s is not None]
    if not good:
        return None
    return {"video": torch.stack([s["video"] for s in good]), "index": [s["index"] for s in good]}


@torch.no_grad()
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
    ``indices``. ``limit`` reads only the first videos; ``cache`` is that of :class:`VideoClips`.
    """
    from tqdm.auto import tqdm

    source = VideoClips(dataset, clips, cache)
    if limit is not None and limit < len(source):
        source = torch.utils.data.Subset(source, range(limit))  # type: ignore[assignment]
    loader = DataLoader(source, batch_size=batch_size, num_workers=num_workers, collate_fn=_collate)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    indices: list[int] = []
    outputs: list[torch.Tensor] = []
    for batch in tqdm(loader, desc="predict", unit="batch", disable=not progress):
        if batch is None:
            continue
        x = batch["video"].to(device)  # [B, n, 3, T, H, W]
        b, n = x.shape[:2]
        y = model.predict(x.flatten(0, 1)).reshape(b, n, -1).mean(dim=1)
        outputs.append(y.float().cpu())
        indices += batch["index"]
    model.train(was_training)
    width = len(getattr(model, "targets", ())) or 1
    pred = torch.cat(outputs).numpy().astype(np.float64) if outputs else np.zeros((0, width))
    return np.asarray(indices, dtype=np.int64), pred


# ---------------------------------------------------------------------------------------
# metrics


def task_metrics(
    task: Any, truth: np.ndarray, pred: np.ndarray, train_mean: Sequence[float] | None = None
) -> dict[str, Any]:
    """Figures of predictions ``[N, K]`` against truths ``[N, K]`` for a :class:`~echoclip.finetune.Task`.

    For EF regression: ``ef`` (MAE, RMSE, R², Pearson), ``ef50`` (EF < 50 % from the
    predicted EF), ``esv``/``edv`` when predicted, and ``baseline``: the MAE of always
    predicting the training mean. Binary targets: AUC, accuracy, F1 at probability 0.5.
    """
    from echoclip.metrics import binary_metrics, regression_metrics

    out: dict[str, Any] = {}
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
) -> Path:
    """Write ``predictions.csv``, the figures and ``metrics.json`` (returned) into ``out_dir``."""
    import pandas as pd

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame({"study_id": list(study_ids)})
    for j, name in enumerate(task.targets):
        table[f"{name}_true"] = truth[:, j]
        table[f"{name}_pred"] = pred[:, j]
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


__all__ = ["VideoClips", "clip_starts", "predict", "task_metrics", "write_report"]
