"""Contrastive video-report training from a manifest: the library behind ``echoclip train``."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from echoclip.errors import DataError
from echoclip.loop.trainer import Trainer, TrainResult
from echoclip.models.embed import table_views
from echoclip.train.config import DEFAULT_STUDY_POOLING, TrainConfig
from echoclip.train.contrastive import ContrastiveObjective
from echoclip.train.pairs import StudyPairs

log = logging.getLogger(__name__)


def build_clip_model(
    model: str | Path,
    tokenizer: Any | None,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for training: a config name (fresh weights) or a model directory."""
    from echoclip.models.factory import create_model, get_tokenizer, load_model

    path = Path(model)
    if path.is_dir():
        net = load_model(path)
        net.ood_reference = None  # fitted on weights training will change; refitted at the end
        tok = tokenizer if tokenizer is not None else get_tokenizer(path)
        return net, tok
    tok = tokenizer if tokenizer is not None else get_tokenizer(str(model))
    return create_model(str(model), tokenizer=tok, **dict(overrides or {})), tok


def load_tokenizer(path: str | Path) -> Any:
    from echoclip.tokenizer import EchoTokenizer

    return EchoTokenizer.load(path)


def train_clip(
    data: str | Path,
    config: TrainConfig,
    model: str | Path = "echoclip-tiny",
    tokenizer: Any | None = None,
    init: str | Path | None = None,
    resume: bool = False,
    train_split: str = "train",
    val_split: str | None = "val",
    model_overrides: Mapping[str, Any] | None = None,
    augment: bool = True,
    zero_shot_prompts: str | dict | None = "ejection_fraction",
    preload: bool = False,
    video_cache: dict[str, Any] | None = None,
    init_prefixes: Sequence[str] | None = None,
    read_options: Mapping[str, Any] | None = None,
    ood: bool = True,
) -> TrainResult:
    """Train a video-report CLIP model on the studies of a manifest.

    Example::

        cfg = TrainConfig(out="runs/clip", steps=800, batch_size=32, lr=2e-3)
        result = train_clip("runs/sim", cfg, model="echoclip-tiny", tokenizer=EchoTokenizer.load("runs/tok"))

    ``init`` is a pretraining checkpoint (``echoclip pretrain``) loaded into the video
    tower (only its tensors under ``init_prefixes``, e.g. ``("backbone.",)``, when given); ``tokenizer`` is an ``EchoTokenizer`` (or a folder with ``tokenizer.json``).
    ``preload=True`` decodes every video once into memory (small data sets, many epochs);
    ``video_cache`` (a dict, path -> decoded video; implies ``preload``) keeps them for
    later runs on the same videos in this process. ``read_options`` go to ``load_video``
    for every file (``{"fps": 30}`` for files that record no frame rate).

    ``config.level = "study"`` trains study embeddings: each item is a study with up to
    ``config.videos_per_study`` of its videos and their views (``config.view_column``), and
    the model's ``encode_study`` (pooling ``config.study_pooling``, by default the model's
    own or ``attention``; saved with the model) meets the report; ``batch_size`` counts
    studies. The data set must have a ``study_id`` column.

    With a validation split (and ``ood``), the final model directory also gets the
    reference that tells inputs unlike the training videos (``ood.safetensors``, see
    :mod:`echoclip.models.ood`): training videos embedded by the final weights, and a
    threshold calibrated on the validation videos.
    """
    import torch

    from echoclip.data.datasets import open_dataset
    from echoclip.data.transforms import VideoTransform

    if isinstance(tokenizer, str | Path):
        tokenizer = load_tokenizer(tokenizer)
    torch.manual_seed(config.seed)  # the same seed gives the same initial weights, hence the same run
    net, tok = build_clip_model(model, tokenizer, model_overrides)
    if init is not None:
        from echoclip.models.encoders import load_pretrained_encoder

        report = load_pretrained_encoder(net, init, prefixes=init_prefixes)
        log.info("initialised the video tower from %s: %s", init, report.summary())
    preprocess = net.preprocess_config
    train_set = open_dataset(
        data,
        split=train_split,
        transform=_train_transform(preprocess, config) if augment else VideoTransform(preprocess),
        read_options=dict(read_options or {}),
    )
    if len(train_set) == 0:
        raise DataError(f"{data}: no studies in split {train_split!r}")
    preload = preload or video_cache is not None
    if preload:
        train_set.preload(progress=config.progress, cache=video_cache)
    study = config.level == "study"
    pairs = StudyPairs.from_table_dataset(
        train_set,
        seed=config.seed,
        skip_empty_reports=config.skip_empty_reports,
        weight_column=config.sample_weight_column,
        videos_per_study=config.videos_per_study if study else None,
        view_column=config.view_column if study else None,
    )
    if study:
        net.set_study_pooling(config.study_pooling or net.config.study_pooling or DEFAULT_STUDY_POOLING)
    val_set = None
    if val_split:
        try:
            val_set = open_dataset(
                data,
                split=val_split,
                transform=VideoTransform(preprocess),
                read_options=dict(read_options or {}),
            )
        except DataError:
            val_set = None
        if val_set is not None and len(val_set) == 0:
            val_set = None
        if val_set is not None and preload:
            val_set.preload(progress=False, cache=video_cache)
    objective = ContrastiveObjective(
        tok,
        config.contrastive,
        seed=config.seed,
        val_dataset=val_set,
        zero_shot_prompts=zero_shot_prompts,
        study_level=study,
        val_views=table_views(val_set.table, config.view_column, data)
        if study and val_set is not None
        else None,
    )
    result = Trainer(net, objective, pairs, config, resume=resume).fit()
    _write_skipped(Path(config.out), train_set, val_set)
    if ood and val_set is not None and _is_main_process():
        reference_set = open_dataset(
            data,
            split=train_split,
            transform=VideoTransform(preprocess),
            read_options=dict(read_options or {}),
        )
        if video_cache is not None:  # decoded already: the videos are looked up, not read again
            reference_set.preload(progress=False, cache=video_cache)
        _fit_ood(result.final_dir, reference_set, val_set, config)
    return result


def _fit_ood(final_dir: Path, train_set: Any, val_set: Any, config: TrainConfig) -> None:
    """Fit the OOD reference of the saved final weights and write it beside them."""
    from echoclip.models.embed import default_device
    from echoclip.models.factory import load_model
    from echoclip.models.ood import fit_ood, save_ood

    model = load_model(final_dir)
    try:
        reference = fit_ood(
            model,
            train_set,
            val_set,
            seed=config.seed,
            batch_size=config.batch_size,
            num_workers=config.num_workers,
            device=default_device(),
            progress=config.progress,
        )
    except DataError as e:  # the trained model stands; it only cannot tell unlike inputs
        log.warning("%s: no OOD reference written: %s", final_dir, e)
        return
    save_ood(reference, final_dir)


def _is_main_process() -> bool:
    """Rank 0 under ``torchrun`` (the one that wrote the final model), or the only process."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _train_transform(preprocess: Any, config: TrainConfig) -> Any:
    """The training transform: random clip start and the recipe's augmentation, seeded per sample."""
    from echoclip.data.augment import TrainTransform

    return TrainTransform(preprocess, seed=config.seed, augment=config.augment)


def _write_skipped(out: Path, *datasets: Any) -> None:
    from echoclip.data.datasets import write_skip_report

    skipped = [s for d in datasets if d is not None for s in getattr(d, "skipped", [])]
    if skipped:
        write_skip_report(skipped, out / "skipped.csv")
