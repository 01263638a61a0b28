"""Self-supervised pretraining of a video tower: the library behind ``echoclip pretrain``.

The tower of a model config is trained without labels or reports - masked modelling
for a ``videomae`` tower, contrastive learning for the others (see
:func:`echoclip.pretrain.objectives.build_objective`) - in the same training loop as
CLIP training. The run folder holds ``metrics.csv``, TensorBoard logs, checkpoints,
reconstruction images (``images/``) and ``final/``: an encoder checkpoint
(``encoder.safetensors`` + ``encoder.json``) for ``echoclip train --init``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from echoclip.errors import DataError
from echoclip.loop.config import LoopConfig
from echoclip.loop.trainer import Trainer, TrainResult
from echoclip.models.encoders import build_tower
from echoclip.pretrain.objectives import PretrainConfig, build_objective

log = logging.getLogger(__name__)


def open_clips(
    data: str | os.PathLike[str],
    split: str | None,
    transform: Any,
    seed: int | None = None,
    read_options: Mapping[str, Any] | None = None,
) -> Any:
    """A clip dataset of a manifest (or a folder holding one) or of an EchoNet-Dynamic folder."""
    from echoclip.data.datasets import open_dataset

    dataset = open_dataset(data, split, transform, read_options=dict(read_options or {}))
    if seed is not None:
        dataset.seed = int(seed)
    return dataset


def pretrain(
    data: str | os.PathLike[str],
    config: LoopConfig,
    model: str | os.PathLike[str] = "echoclip-tiny",
    mask: str | None = None,
    ratio: float | None = None,
    periodic_weight: float | None = None,
    options: PretrainConfig | None = None,
    resume: bool = False,
    train_split: str | None = "train",
    val_split: str | None = "val",
    model_overrides: Mapping[str, Any] | None = None,
    augment: bool = True,
    preload: bool = False,
    video_cache: dict[str, Any] | None = None,
    read_options: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Pretrain the video tower of ``model`` on the clips of ``data``; returns the run's result.

    ``mask``, ``ratio`` and ``periodic_weight`` override the fields of ``options``
    (a :class:`PretrainConfig`). The encoder checkpoint is ``result.final_dir``.
    ``preload`` decodes every video once; ``video_cache`` (a dict, path -> decoded
    video; implies ``preload``) keeps them for later runs in this process. ``read_options``
    go to ``load_video`` for every file (``{"fps": 30}`` for files that record no frame rate).

    Example::

        cfg = LoopConfig(out="runs/ssl", steps=300, batch_size=16, lr=1e-3, precision="bf16")
        result = pretrain("runs/sim", cfg, model="echoclip-vit-tiny", mask="tube", ratio=0.9)
        clip_model = echoclip.create_model("echoclip-vit-tiny")
        load_pretrained_encoder(clip_model, result.final_dir)
    """
    from echoclip.data.augment import TrainTransform
    from echoclip.data.transforms import VideoTransform
    from echoclip.models.clip_model import default_preprocess

    changes = {
        k: v
        for k, v in dict(mask=mask, ratio=ratio, periodic_weight=periodic_weight).items()
        if v is not None
    }
    options = replace(options or PretrainConfig(), **changes)
    torch.manual_seed(config.seed)  # the same seed gives the same initial weights, hence the same run
    tower, cfg = build_tower(model, model_overrides)
    preprocess = default_preprocess(cfg)
    transform = TrainTransform(preprocess, seed=config.seed) if augment else VideoTransform(preprocess)
    train_set = open_clips(data, train_split, transform, seed=config.seed, read_options=read_options)
    if len(train_set) == 0:
        raise DataError(f"{data}: no videos in split {train_split!r}")
    # the periodic term reads each clip's period: from the table's heart rate, else the whole video
    train_set.needs_period = options.periodic_weight > 0
    if preload or video_cache is not None:  # decode each video once (small data sets, many epochs)
        train_set.preload(progress=config.progress, cache=video_cache)
    val_set = None
    if val_split:
        try:
            val_set = open_clips(
                data, val_split, VideoTransform(preprocess), seed=config.seed, read_options=read_options
            )
            val_set.needs_period = options.periodic_weight > 0
        except DataError:
            log.info("no %r split in %s: pretraining without a held-out loss", val_split, data)
    out = Path(config.out)
    net, objective = build_objective(
        tower,
        options,
        seed=config.seed,
        val_dataset=val_set,
        image_dir=out / "images",
        preprocess=preprocess,
    )
    objective.info = {"model": cfg.name, "preprocess": preprocess.to_dict()}
    result = Trainer(net, objective, train_set, config, resume=resume).fit()
    _write_skipped(out, train_set, val_set)
    return result


def _write_skipped(out: Path, *datasets: Any) -> None:
    from echoclip.data.datasets import write_skip_report

    skipped = [s for d in datasets if d is not None for s in getattr(d, "skipped", [])]
    if skipped:
        write_skip_report(skipped, out / "skipped.csv")
