"""Fine-tuning a video encoder with a head on labelled studies: the library behind ``echoclip finetune``.

Tasks:

- ``ef``: ejection fraction regression (L1 by default, or MSE), with ESV and EDV as
  further outputs when every training study has them (EchoNet-Dynamic does);
- ``ef50``: EF < 50 % as a binary classification;
- ``findings``: multi-label classification of a manifest's ``finding_*`` columns (or
  any label columns named);
- ``view``: the echocardiographic view, a categorical target read from the manifest's
  ``view`` column (cross-entropy). Its classes are the sorted distinct views of the
  training split, saved with the model as its ``targets``, so predictions map back to
  names. A video without a view is left out of the loss and the scores; a validation
  or test video whose view is not one of the training classes is a :class:`DataError`
  naming it (the model cannot predict that view, so its score would mislead).

The run uses the training loop of ``echoclip train`` (checkpoints, exact resume,
``metrics.csv``, TensorBoard); at the end the model is scored on the test split,
averaging over several clips per video when asked, and the report
(``metrics.json``, ``predictions.csv``, figures) is written next to ``final/``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from echoclip.errors import ConfigError, DataError, ModelError
from echoclip.finetune.model import FineTuneModel, read_finetune_info, save_finetuned
from echoclip.finetune.report import EF_THRESHOLD, predict, task_metrics, write_report
from echoclip.loop.config import LoopConfig
from echoclip.loop.trainer import Trainer, TrainResult
from echoclip.models.encoders import load_video_encoder

log = logging.getLogger(__name__)

TASKS = ("ef", "ef50", "findings", "view")
VIEW_COLUMN = "view"
VOLUMES = ("esv", "edv")


@dataclass(frozen=True)
class Task:
    """What the head predicts: ``targets``, ``kind`` and ``loss``.

    ``targets`` are table columns, except for a categorical task, where they are the
    class names (one output each) and ``column`` is the table column holding the class.
    """

    name: str
    targets: tuple[str, ...]
    kind: str
    loss: str
    column: str | None = None

    @property
    def label(self) -> str:
        """The name the task's figures go under: its column (categorical) or its first target."""
        return self.column or self.targets[0]


def make_task(
    name: str,
    columns: Sequence[str],
    loss: str | None = None,
    labels: Sequence[str] | None = None,
    volumes: bool = True,
    classes: Sequence[str] | None = None,
) -> Task:
    """The :class:`Task` called ``name`` on a table with ``columns``.

    ``labels`` names the columns of ``findings`` (default: every ``finding_*`` column);
    ``volumes`` adds ESV and EDV to ``ef`` when the table has them; ``classes`` are the
    views of ``view`` (see :func:`label_classes`).
    """
    columns = [str(c) for c in columns]
    if name == "view":
        if loss not in (None, "ce"):
            raise ConfigError(f"task 'view' is a categorical classification; its loss is 'ce', not {loss!r}")
        if VIEW_COLUMN not in columns:
            raise DataError(f"task 'view' needs a {VIEW_COLUMN!r} column, and the data has none")
        chosen = tuple(str(c) for c in classes or ())
        if len(chosen) < 2 or len(set(chosen)) != len(chosen):
            raise DataError(f"task 'view' needs two or more distinct views to tell apart, got {list(chosen)}")
        return Task("view", chosen, "categorical", "ce", column=VIEW_COLUMN)
    if name == "ef":
        loss = loss or "l1"
        if loss not in ("l1", "mse"):
            raise ConfigError(f"task 'ef' takes loss 'l1' or 'mse', not {loss!r}")
        extra = tuple(c for c in VOLUMES if volumes and c in columns)
        return Task("ef", ("ef", *extra), "regression", loss)
    if name in ("ef50", "findings"):
        if loss not in (None, "bce"):
            raise ConfigError(f"task {name!r} is a classification; its loss is 'bce', not {loss!r}")
        if name == "ef50":
            return Task("ef50", ("ef",), "binary", "bce")
        chosen = list(labels) if labels else sorted(c for c in columns if c.startswith("finding_"))
        if not chosen:
            raise DataError("task 'findings' needs label columns, and the data has no finding_* column")
        absent = [c for c in chosen if c not in columns]
        if absent:
            raise DataError(f"label columns {absent} are not in the data; it has {sorted(columns)}")
        return Task("findings", tuple(chosen), "binary", "bce")
    raise ConfigError(f"unknown task {name!r}; known: {list(TASKS)}")


def data_source(dataset: Any) -> Path:
    """The file a dataset's rows come from (``FileList.csv`` or the manifest), for messages."""
    path = getattr(dataset, "path", None)
    return Path(path) if path is not None else Path(dataset.root) / "FileList.csv"


def label_classes(dataset: Any, column: str = VIEW_COLUMN) -> list[str]:
    """The sorted distinct values of ``column`` in a dataset's table (missing ones left out)."""
    table = dataset.table
    if column not in table.columns:
        raise DataError(f"{data_source(dataset)}: has no {column!r} column to learn classes from")
    return sorted(set(_class_names(table[column]).dropna()))


def _class_names(values: Any) -> Any:
    """Class names as stripped text; missing or empty ones as ``None``."""
    names = values.astype("string").str.strip()
    return names.where(names.notna() & (names != ""), None).astype(object)


def target_matrix(dataset: Any, task: Task) -> np.ndarray:
    """``float [N, K]`` targets of every row of a clip dataset (``nan``: unknown label).

    Every row needs an EF for ``ef`` and ``ef50``: a missing one is a :class:`DataError`
    naming the file and the first such video. A categorical task gives ``[N, 1]`` class
    indices; a class outside the task's is a :class:`DataError` naming it.
    """
    import pandas as pd

    table = dataset.table
    source = data_source(dataset)
    if task.kind == "categorical":
        return _class_matrix(table, task, source)
    missing_cols = [c for c in task.targets if c not in table.columns]
    if missing_cols:
        raise DataError(f"{source}: has no {missing_cols} column for task {task.name!r}")
    y = np.stack(
        [
            (table[c] if table[c].dtype == bool else pd.to_numeric(table[c], errors="coerce")).to_numpy(
                np.float64, na_value=np.nan
            )
            for c in task.targets
        ],
        axis=1,
    )
    if task.name in ("ef", "ef50"):
        bad = ~np.isfinite(y[:, 0])
        if bad.any():
            first = str(table["study_id"].iat[int(np.argmax(bad))])
            raise DataError(
                f"{source}: {int(bad.sum())} of {len(y)} videos have no EF value (first: {first}); "
                "fill them in or remove those rows"
            )
    if task.name == "ef50":
        y = (y < EF_THRESHOLD).astype(np.float64)
    return y


def _class_matrix(table: Any, task: Task, source: Path) -> np.ndarray:
    column = str(task.column)
    if column not in table.columns:
        raise DataError(f"{source}: has no {column!r} column for task {task.name!r}")
    names = _class_names(table[column])
    index = {c: float(i) for i, c in enumerate(task.targets)}
    unknown = names.notna() & ~names.isin(list(task.targets))
    if unknown.any():
        first = int(np.argmax(unknown.to_numpy()))
        where = table["video_path"].iat[first] if "video_path" in table.columns else f"row {first}"
        raise DataError(
            f"{source}: {int(unknown.sum())} videos have a {column} outside the model's classes "
            f"{list(task.targets)}: {sorted(set(names[unknown]))} (first: {where})"
        )
    return np.array(names.map(index), dtype=np.float64)[:, None]


class FineTuneObjective:
    """The :class:`~echoclip.loop.trainer.Objective` of fine-tuning: targets by sample index, the
    task's loss, validation figures on the held-out split, and the fine-tuned model directory."""

    def __init__(
        self,
        task: Task,
        targets: np.ndarray,
        val_dataset: Any | None = None,
        val_targets: np.ndarray | None = None,
        val_limit: int = 64,
        batch_size: int = 8,
        info: Mapping[str, Any] | None = None,
    ) -> None:
        self.task = task
        self.targets = torch.as_tensor(targets, dtype=torch.float32)
        self.val_dataset, self.val_targets = val_dataset, val_targets
        self.val_limit, self.batch_size = val_limit, batch_size
        self.info = dict(info or {})

    def collate(self, samples: list[Any], epoch: int) -> dict[str, torch.Tensor] | None:
        good = [s for s in samples if s is not None]
        if not good:
            return None
        index = torch.tensor([int(s["index"]) for s in good])
        return {"video": torch.stack([s["video"] for s in good]), "target": self.targets[index]}

    def loss(self, model: nn.Module, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        net: FineTuneModel = getattr(model, "module", model)
        raw = model(batch["video"]).float()
        y = batch["target"].to(raw.device)
        known = torch.isfinite(y)
        y = torch.where(known, y, torch.zeros_like(y))
        if self.task.kind == "categorical":
            return self._categorical_loss(raw, y[:, 0], known[:, 0])
        if self.task.kind == "regression":
            scaled = (y - net.target_mean) / net.target_std
            per = F.l1_loss(raw, scaled, reduction="none") if self.task.loss == "l1" else (raw - scaled) ** 2
        else:
            per = F.binary_cross_entropy_with_logits(raw, y, reduction="none")
        loss = (per * known).sum() / known.sum().clamp(min=1)
        figures = {"loss": float(loss.detach())}
        if self.task.kind == "regression":
            error = (net.to_outputs(raw.detach()) - y).abs()[:, 0][known[:, 0]]
            figures[f"{self.task.targets[0]}_mae"] = float(error.mean()) if error.numel() else math.nan
        return loss, figures

    def _categorical_loss(
        self, logits: torch.Tensor, label: torch.Tensor, known: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        per = F.cross_entropy(logits, label.long(), reduction="none")
        n = known.sum().clamp(min=1)
        loss = (per * known).sum() / n
        correct = ((logits.detach().argmax(dim=-1) == label.long()) & known).sum() / n
        return loss, {"loss": float(loss.detach()), "accuracy": float(correct)}

    def validate(self, model: nn.Module) -> dict[str, float]:
        """MAE and R² (regression), AUC (binary) or accuracy (categorical) on the held-out split."""
        if self.val_dataset is None or self.val_targets is None:
            return {}
        index, pred = predict(model, self.val_dataset, 1, self.batch_size, limit=self.val_limit)
        if not len(index):
            return {}
        figures = task_metrics(self.task, self.val_targets[index], pred)
        first = self.task.label
        keys = {"regression": ("mae", "r2"), "binary": ("auc",), "categorical": ("accuracy",)}[self.task.kind]
        return {f"{first}_{k}": float(figures[first][k]) for k in keys}

    def save_model(self, model: nn.Module, directory: Path) -> None:
        save_finetuned(getattr(model, "module", model), directory, task=asdict(self.task), **self.info)


@dataclass
class FineTuneResult:
    """A fine-tuning run: the training result, the test figures and the trained model."""

    train: TrainResult
    metrics: dict[str, Any]
    metrics_path: Path | None
    model: FineTuneModel
    final_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        self.final_dir = self.train.final_dir


def finetune(
    data: str | os.PathLike[str],
    config: LoopConfig,
    init: str | os.PathLike[str] = "echoclip-tiny",
    head: str = "stfnet",
    task: str = "ef",
    *,
    model: str | os.PathLike[str] | None = None,
    freeze: bool = False,
    layer_decay: float | None = None,
    loss: str | None = None,
    labels: Sequence[str] | None = None,
    volumes: bool = True,
    head_options: Mapping[str, Any] | None = None,
    test_clips: int = 1,
    resume: bool = False,
    train_split: str = "train",
    val_split: str | None = "val",
    test_split: str | None = "test",
    model_overrides: Mapping[str, Any] | None = None,
    augment: bool = True,
    preload: bool = False,
    video_cache: dict[str, Any] | None = None,
    plots: bool = True,
    read_options: Mapping[str, Any] | None = None,
) -> FineTuneResult:
    """Fine-tune the video encoder of ``init`` with a ``head`` on ``task``; score it on ``test_split``.

    ``init`` is a model directory, an encoder checkpoint of ``echoclip pretrain`` or a
    model config name (random weights); ``model`` names the architecture expected of
    it. ``freeze`` keeps the encoder fixed; ``layer_decay`` scales the learning rate of
    deeper encoder blocks down. ``test_clips`` clips per test video are averaged.
    ``preload`` decodes every training video once; ``video_cache`` (a dict, path ->
    decoded video) keeps the decoded training and test videos for further runs on the
    same data in this process (comparing heads), so each video is decoded once in all.

    Example::

        cfg = LoopConfig(out="runs/ft", steps=600, batch_size=16, lr=1e-3)
        result = finetune("EchoNet-Dynamic", cfg, init="runs/clip/final", head="stfnet", test_clips=4)
        result.metrics["ef"]["mae"]
    """
    from echoclip.data.augment import TrainTransform
    from echoclip.data.datasets import open_dataset
    from echoclip.data.transforms import VideoTransform
    from echoclip.loop.distributed import init_distributed

    if test_clips < 1:
        raise ConfigError(f"test clips per video must be at least 1, got {test_clips}")
    torch.manual_seed(config.seed)  # the same seed gives the same head, hence the same run
    encoder, preprocess, origin = load_video_encoder(init, model, model_overrides)
    transform = TrainTransform(preprocess, seed=config.seed) if augment else VideoTransform(preprocess)
    options = dict(read_options or {})  # for load_video: {"fps": 30} for files that record no frame rate
    train_set = open_dataset(data, train_split, transform, read_options=options)
    if len(train_set) == 0:
        raise DataError(f"{data}: no videos in split {train_split!r}")
    classes = label_classes(train_set, VIEW_COLUMN) if task == "view" else None
    the_task = make_task(task, list(train_set.table.columns), loss, labels, volumes, classes)
    y_train = target_matrix(train_set, the_task)
    if the_task.kind == "regression":
        mean, std = np.nanmean(y_train, axis=0), np.nanstd(y_train, axis=0)
        std = np.where(std > 0, std, 1.0)
    else:
        mean, std = np.zeros(len(the_task.targets)), np.ones(len(the_task.targets))
    net = FineTuneModel(
        encoder,
        head,
        the_task.targets,
        the_task.kind,
        head_options=head_options,
        freeze=freeze,
        layer_decay=layer_decay,
        target_mean=mean.tolist(),
        target_std=std.tolist(),
        preprocess=preprocess,
    )
    if resume:
        _check_resumable(Path(config.out), net, the_task)
    if preload or video_cache is not None:
        train_set.preload(progress=config.progress, cache=video_cache)
    val_set, y_val = _optional_split(data, val_split, VideoTransform(preprocess), the_task, options)
    info = {"init": str(init), "init_kind": origin}
    objective = FineTuneObjective(the_task, y_train, val_set, y_val, batch_size=config.batch_size, info=info)
    result = Trainer(net, objective, train_set, config, resume=resume).fit()
    out = Path(config.out)
    metrics: dict[str, Any] = {}
    metrics_path: Path | None = None
    if init_distributed().is_main and test_split:
        test_set = open_dataset(data, test_split, VideoTransform(preprocess), read_options=options)
        y_test = target_matrix(test_set, the_task)
        index, pred = predict(
            net,
            test_set,
            test_clips,
            config.batch_size,
            config.num_workers,
            progress=config.progress,
            cache=video_cache,
        )
        metrics = {
            "task": the_task.name,
            "targets": list(the_task.targets),
            "head": head,
            "freeze": freeze,
            "layer_decay": layer_decay,
            "init": str(init),
            "init_kind": origin,
            "steps": result.step,
            "test_split": test_split,
            "test_clips": test_clips,
            "n_test": len(index),
            "n_test_skipped": len(test_set) - len(index),
            **task_metrics(
                the_task, y_test[index], pred, mean.tolist() if the_task.kind == "regression" else None
            ),
            "train_seconds": round(result.seconds, 1),
            "model": str(result.final_dir),
        }
        ids = test_set.table["study_id"].astype(str).to_numpy()[index]
        videos = test_set.table["video_path"].to_numpy()[index] if "video_path" in test_set.table else None
        metrics_path = write_report(
            out, the_task, ids, y_test[index], pred, metrics, plots=plots, videos=videos
        )
        _write_skipped(out, train_set, val_set, test_set)
    return FineTuneResult(result, metrics, metrics_path, net)


def _optional_split(
    data: str | os.PathLike[str], split: str | None, transform: Any, task: Task, read_options: dict[str, Any]
) -> tuple[Any, np.ndarray | None]:
    from echoclip.data.datasets import open_dataset

    if not split:
        return None, None
    try:
        dataset = open_dataset(data, split, transform, read_options=read_options)
    except DataError:
        log.info("no %r split in %s: fine-tuning without validation", split, data)
        return None, None
    if len(dataset) == 0:
        return None, None
    return dataset, target_matrix(dataset, task)


def _check_resumable(out: Path, net: FineTuneModel, task: Task) -> None:
    """A resumed run must fine-tune the same encoder architecture, head and targets as its checkpoints."""
    from echoclip.loop.checkpoint import latest_checkpoint

    checkpoint = latest_checkpoint(out)
    if checkpoint is None:
        return
    saved = read_finetune_info(checkpoint / "model")
    wanted = net.info()
    for key in ("video", "head", "head_options", "targets", "kind", "freeze", "grid", "width"):
        if _plain(saved.get(key)) != _plain(wanted.get(key)):
            raise ModelError(
                f"{checkpoint}: was trained with {key}={saved.get(key)!r}, but this run has "
                f"{key}={wanted.get(key)!r}; use another --out or start without --resume"
            )


def _plain(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))


def _write_skipped(out: Path, *datasets: Any) -> None:
    from echoclip.data.datasets import write_skip_report

    skipped = [s for d in datasets if d is not None for s in getattr(d, "skipped", [])]
    if skipped:
        write_skip_report(skipped, out / "skipped.csv")


__all__ = [
    "TASKS",
    "FineTuneObjective",
    "FineTuneResult",
    "Task",
    "finetune",
    "label_classes",
    "make_task",
    "target_matrix",
]
