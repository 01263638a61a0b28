"""``zero_shot``: ask a model questions in words, one row of answers per study.

::

    import echoclip
    model = echoclip.load_model("runs/clip/final")
    tokenizer = echoclip.get_tokenizer("runs/clip/final")
    df = echoclip.zero_shot(model, tokenizer, videos, prompts="ejection_fraction")
    df = echoclip.zero_shot(model, tokenizer, dataset, prompts="devices", method="contrast")

The videos may be given as decoded :class:`~echoclip.data.video.Video` objects,
preprocessed clips, a dataset yielding ``{"video", "study_id", ...}`` dicts, or
embeddings computed before (``[N, D]``, with ``study_ids=``). Several clips of one
study are scored together, as EchoCLIP scored the frames of a video together.
Prompt embeddings are cached per model (and dropped when its weights change), so
asking again costs only the video side.
"""

from __future__ import annotations

import functools
import logging
import os
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from echoclip.errors import ConfigError, DataError
from echoclip.zeroshot.calibration import Calibration
from echoclip.zeroshot.prompts import (
    BinaryTarget,
    CategoricalTarget,
    PromptSet,
    RegressionTarget,
    Target,
    load_prompt_set,
)
from echoclip.zeroshot.scoring import DEFAULT_LOGIT_SCALE, default_method, get_scorer, require_method

__all__ = [
    "zero_shot",
    "encode_prompts",
    "video_embeddings",
    "score_embeddings",
    "resolve_methods",
    "model_logit_scale",
    "study_ood",
    "study_embeddings",
]

log = logging.getLogger(__name__)

_STUDIES_PER_CHUNK = 4096
LEVELS = ("clip", "study")

# model -> (weights fingerprint, tokenizer -> {(context_length, texts): embeddings})
_TEXT_CACHE: weakref.WeakKeyDictionary[Any, tuple[int, Any]] = weakref.WeakKeyDictionary()


def zero_shot(
    model: Any,
    tokenizer: Any,
    data: Any,
    prompts: str | os.PathLike[str] | Mapping[str, Any] | PromptSet = "ejection_fraction",
    method: str | Mapping[str, str] | None = None,
    *,
    study_ids: Sequence[Any] | None = None,
    batch_size: int = 16,
    num_workers: int = 0,
    transform: Any = None,
    device: Any = None,
    read_options: Mapping[str, Any] | None = None,
    per_frame: bool | None = None,
    neighbours: Any = None,
    k: int | None = None,
    ood_features: Any = None,
    level: str = "clip",
    views: Sequence[Any] | None = None,
    max_videos: int | None = None,
) -> pd.DataFrame:
    """Predict every target of a prompt set for every study, with no labelled training.

    Args:
        model: an EchoCLIP-like model (``encode_video``, ``encode_text``, ``logit_scale``).
        tokenizer: callable ``texts -> LongTensor [B, L]`` matching the model.
        data: video file paths, ``Video`` objects, clips ``float [3,T,H,W]`` (or a batch
            ``[B,3,T,H,W]``), a dataset of dicts with ``"video"`` and ``"study_id"``, or
            embeddings ``[N, D]``. Files that cannot be read are skipped and counted (a
            warning); their studies are absent from the result.
        prompts: a shipped prompt set name, a JSON file, a dict or a :class:`PromptSet`.
        method: one method for the targets of its kind (others use the defaults: the
            target's own ``method`` where the prompt set names one, else ``echoclip_rank``;
            ``contrast`` for binary targets with negative prompts, else ``similarity``;
            ``argmax``), or ``{target: method}``.
        study_ids: the study of each video or embedding row; rows of one study are
            scored together. Default: the dataset's ``study_id``, else one study per row.
        transform: turns a ``Video`` into model input; default: the model's preprocess config.
        read_options: for file paths, options of ``load_video`` (``{"fps": 30}`` for files
            that do not record their frame rate).
        per_frame: score every frame of every clip, as the published EchoCLIP does
            (regression: prompts ranked per frame, the ranked values averaged over
            frames and clips, the median of the top share; binary: similarities
            averaged over frames). Default: for models whose video tower embeds frames
            (``model.embeds_frames``: a ``frames`` tower with ``mean`` aggregation,
            which includes checkpoints loaded with ``load_open_clip_checkpoint``);
            otherwise each clip's video embedding is scored.
        neighbours: reference reports with labels for ``method="knn"`` (see
            :func:`echoclip.zeroshot.neighbours.load_neighbours`: a store folder, the folder
            ``echoclip embed`` wrote, or ``(embeddings, labels)``).
        k: how many neighbours ``knn`` averages (default 50).
        ood_features: for ``data`` given as embeddings, the videos' layer statistics
            (``video_embeddings``' third value), so that their OOD score is known.
        level: ``"clip"`` scores every clip of a study together (the scorers see them all);
            ``"study"`` first pools a study's videos into one study embedding with the
            model's study pooling (:meth:`EchoCLIP.encode_study`; the mean without one, see
            :func:`echoclip.models.embed.embed_studies`) and scores that. ``data`` may then
            also be what ``embed_studies`` returned. Studies with no readable video are
            absent, and listed in ``df.attrs["skipped_studies"]``.
        views: at study level, each video's view (default: a manifest's ``view_pred`` or
            ``view`` column, else unknown).
        max_videos: at study level, the most videos pooled per study; more are subsampled,
            seeded by the study id (default 64).

    Returns:
        One row per study, in order of first appearance: ``study_id``, ``n_clips``,
        ``ood_score`` (the mean over its clips of :mod:`echoclip.models.ood`'s distance; NaN
        for a model without an OOD reference) and ``out_of_distribution`` (whether the
        score is above the reference's threshold, so that the answers should not be
        trusted; ``None`` without a reference), then per target its prediction
        (regression: the value; binary: the score, a probability with ``calibrated``;
        categorical: the class and ``<target>_p_<class>``).
    """
    prompt_set = load_prompt_set(prompts)
    methods = resolve_methods(prompt_set, method)
    if level not in LEVELS:
        raise ConfigError(f"level must be one of {LEVELS}, not {level!r}")
    if level == "study":
        studies = study_embeddings(
            model,
            data,
            study_ids=study_ids,
            views=views,
            max_videos=max_videos,
            batch_size=batch_size,
            num_workers=num_workers,
            transform=transform,
            device=device,
            read_options=read_options,
        )
        text_emb = encode_prompts(model, tokenizer, _unique(prompt_set.texts()), device=device)
        df = score_embeddings(
            studies.features,
            studies.study_ids,
            prompt_set,
            text_emb,
            methods=methods,
            logit_scale=model_logit_scale(model),
            neighbours=neighbours,
            k=k,
        )
        df = df.rename(columns={"n_clips": "n_videos"})
        df["n_videos"] = np.array([len(r) for r in studies.rows], dtype=np.int64)
        score, flag = study_ood(model, studies.video_ood_features, studies.video_study_ids)
        df.insert(2, "ood_score", score)
        df.insert(3, "out_of_distribution", flag)
        df.attrs.update(level="study", skipped_studies=list(studies.skipped))
        return df
    if per_frame is None:
        per_frame = bool(getattr(model, "embeds_frames", False))
    video_emb, found_ids, found_stats = video_embeddings(
        model,
        data,
        batch_size=batch_size,
        num_workers=num_workers,
        transform=transform,
        device=device,
        read_options=read_options,
        per_frame=per_frame,
    )
    if study_ids is None:
        study_ids = found_ids
    elif len(study_ids) != len(video_emb):
        raise DataError(f"got {len(study_ids)} study ids for {len(video_emb)} videos")
    text_emb = encode_prompts(model, tokenizer, _unique(prompt_set.texts()), device=device)
    df = score_embeddings(
        video_emb,
        study_ids,
        prompt_set,
        text_emb,
        methods=methods,
        logit_scale=model_logit_scale(model),
        neighbours=neighbours,
        k=k,
    )
    score, flag = study_ood(model, found_stats if found_stats is not None else ood_features, study_ids)
    df.insert(2, "ood_score", score)
    df.insert(3, "out_of_distribution", flag)
    return df


def study_embeddings(
    model: Any,
    data: Any,
    *,
    study_ids: Sequence[Any] | None = None,
    views: Sequence[Any] | None = None,
    max_videos: int | None = None,
    **options: Any,
) -> Any:
    """``data`` as :class:`~echoclip.models.embed.StudyEmbeddings`: itself when it is one,
    video embeddings ``[N, D]`` pooled per study (``study_ids``; default: one study), or
    videos embedded and pooled (:func:`~echoclip.models.embed.embed_studies`)."""
    import torch

    from echoclip.models.embed import DEFAULT_MAX_VIDEOS, StudyEmbeddings, embed_studies, pool_studies

    max_videos = DEFAULT_MAX_VIDEOS if max_videos is None else int(max_videos)
    if isinstance(data, StudyEmbeddings):
        return data
    if isinstance(data, np.ndarray | torch.Tensor) and data.ndim == 2:
        ids = [0] * len(data) if study_ids is None else study_ids
        return pool_studies(model, data, ids, views, max_videos=max_videos, device=options.get("device"))
    options["read_options"] = dict(options.get("read_options") or {})
    studies = embed_studies(
        model, data, study_ids=study_ids, views=views, max_videos=max_videos, progress=False, **options
    )
    if not len(studies):
        raise DataError("no video could be read; nothing to score")
    return studies


def study_ood(model: Any, features: Any, study_ids: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Per study, in order of first appearance: the mean OOD score of its videos (from their
    layer statistics, ``None`` when unknown), and whether it is above the model's threshold
    (``None`` for every study of a model without a reference, or without statistics).
    """
    from echoclip.models.ood import score_ood

    scores, _ = score_ood(model, features, rows=len(study_ids))
    per_study = np.array([np.mean(scores[rows]) for _, rows in _group_rows(study_ids)], dtype=np.float32)
    reference = getattr(model, "ood_reference", None)
    threshold = getattr(reference, "threshold", None)
    if threshold is None or features is None:
        return per_study, np.full(len(per_study), None, dtype=object)
    return per_study, per_study > threshold


def resolve_methods(prompt_set: PromptSet, method: str | Mapping[str, str] | None) -> dict[str, str]:
    """The scoring method of each target; a :class:`ConfigError` for unknown or unusable ones."""
    chosen = {
        name: getattr(t, "method", None) or default_method(t.kind, bool(getattr(t, "negative", ())))
        for name, t in prompt_set.targets.items()
    }
    if method is None:
        return chosen
    if isinstance(method, str):
        kinds = require_method(method)
        applies = [name for name, t in prompt_set.targets.items() if t.kind in kinds]
        if not applies:
            have = sorted({t.kind for t in prompt_set.targets.values()})
            raise ConfigError(
                f"method {method!r} scores {'/'.join(kinds)} targets, but prompt set "
                f"{prompt_set.name!r} has only {'/'.join(have)} targets"
            )
        chosen.update(dict.fromkeys(applies, method))
        return chosen
    for name, m in method.items():
        target = prompt_set.targets.get(name)
        if target is None:
            raise ConfigError(f"method given for {name!r}, which prompt set {prompt_set.name!r} lacks")
        get_scorer(target.kind, m)
        chosen[name] = m
    return chosen


def model_logit_scale(model: Any) -> float:
    """The model's softmax temperature as a multiplier.

    ``model.logit_scale`` is stored in log space, as open_clip stores it (its
    ``forward`` returns the exponent); CLIP clamps the multiplier at 100.
    """
    value = getattr(model, "logit_scale", None)
    if value is None:
        return DEFAULT_LOGIT_SCALE
    if hasattr(value, "detach"):
        value = value.detach().cpu()
    return float(min(np.exp(float(value)), DEFAULT_LOGIT_SCALE))


def score_embeddings(
    video_emb: Any,
    study_ids: Sequence[Any],
    prompt_set: str | os.PathLike[str] | Mapping[str, Any] | PromptSet,
    text_emb: Mapping[str, np.ndarray],
    *,
    methods: str | Mapping[str, str] | None = None,
    logit_scale: float = DEFAULT_LOGIT_SCALE,
    neighbours: Any = None,
    k: int | None = None,
) -> pd.DataFrame:
    """Score precomputed, normalised embeddings: the model-free half of :func:`zero_shot`.

    ``video_emb`` is ``[N, D]`` (a row per clip) or ``[N, T, D]`` (a row per clip of
    ``T`` frame embeddings, scored frame by frame as EchoCLIP scores them).

    ``text_emb`` maps every prompt text of the set to its embedding ``[D]``. ``neighbours``
    and ``k`` serve the ``knn`` method (as for :func:`zero_shot`).
    """
    prompt_set = load_prompt_set(prompt_set)
    if not isinstance(methods, dict) or set(methods) != set(prompt_set.targets):
        methods = resolve_methods(prompt_set, methods)
    video_emb = np.asarray(video_emb, dtype=np.float32)
    if video_emb.ndim not in (2, 3) or len(video_emb) == 0:
        raise DataError(f"no videos to score (embeddings of shape {video_emb.shape})")
    if len(study_ids) != len(video_emb):
        raise DataError(f"got {len(study_ids)} study ids for {len(video_emb)} videos")
    groups = _group_rows(study_ids)
    columns: dict[str, Any] = {
        "study_id": [sid for sid, _ in groups],
        "n_clips": np.array([len(rows) for _, rows in groups], dtype=np.int64),
    }
    knn = None
    if "knn" in methods.values() and neighbours is not None:
        from echoclip.zeroshot.neighbours import DEFAULT_K, load_neighbours

        knn = (load_neighbours(neighbours), DEFAULT_K if k is None else int(k))
    for name, target in prompt_set.targets.items():
        columns.update(_score_target(target, methods[name], video_emb, groups, text_emb, logit_scale, knn))
    df = pd.DataFrame(columns)
    df.attrs.update(prompt_set=prompt_set.name, methods=dict(methods))
    return df


def _score_target(
    target: Target,
    method: str,
    video_emb: np.ndarray,
    groups: list[tuple[Any, np.ndarray]],
    text_emb: Mapping[str, np.ndarray],
    logit_scale: float,
    knn: tuple[Any, int] | None = None,
) -> dict[str, np.ndarray]:
    def emb(texts: Sequence[str]) -> np.ndarray:
        return np.stack([text_emb[t] for t in texts])

    fn = get_scorer(target.kind, method)
    if method == "knn":
        if target.label is None:
            raise ConfigError(f"target {target.name!r} has no 'label': method 'knn' needs its column")
        if knn is not None:
            fn = functools.partial(
                fn, neighbours=knn[0].for_label(target.label.column, target.label.below), k=knn[1]
            )
    if isinstance(target, RegressionTarget):
        if method == target.method and target.method_options:
            fn = functools.partial(fn, **dict(target.method_options))
        prompt_emb = np.stack([emb(row) for row in target.prompts()])  # [V, P, D]
        values = target.values()
        pred = _per_study(lambda v: fn(v, prompt_emb, values, logit_scale=logit_scale), video_emb, groups)
        return {target.name: pred}
    if isinstance(target, BinaryTarget):
        positive = emb(target.positive_texts())
        negative = emb(target.negative_texts()) if target.negative else None
        calibration = None
        if target.calibration is not None:
            calibration = Calibration.from_dict(target.calibration)
        return {
            target.name: _per_study(
                lambda v: fn(v, positive, negative, calibration=calibration), video_emb, groups
            )
        }
    assert isinstance(target, CategoricalTarget)
    classes = list(target.classes)
    class_emb = [emb(target.class_texts(c)) for c in classes]
    probs = _per_study(lambda v: fn(v, class_emb, logit_scale=logit_scale), video_emb, groups)
    out: dict[str, Any] = {target.name: np.asarray(classes, dtype=object)[np.argmax(probs, axis=1)]}
    for i, c in enumerate(classes):
        out[f"{target.name}_p_{c}"] = probs[:, i]
    return out


def _per_study(score: Any, video_emb: np.ndarray, groups: list[tuple[Any, np.ndarray]]) -> np.ndarray:
    """Apply a scorer to studies with equal clip counts together (``[n, K, D]``), a chunk at a time.

    Chunks bound the memory of the ``[n, K, candidates]`` similarities of large data sets.
    """
    by_count: dict[int, list[int]] = {}
    for i, (_, rows) in enumerate(groups):
        by_count.setdefault(len(rows), []).append(i)
    results: list[Any] = [None] * len(groups)
    for study_indices in by_count.values():
        for start in range(0, len(study_indices), _STUDIES_PER_CHUNK):
            chunk = study_indices[start : start + _STUDIES_PER_CHUNK]
            clips = np.stack([video_emb[groups[i][1]] for i in chunk])  # [n, K, D] or [n, K, T, D]
            clips = clips.reshape(len(chunk), -1, clips.shape[-1])  # a study's frames of every clip
            scores = np.asarray(score(clips))
            for j, i in enumerate(chunk):
                results[i] = scores[j]
    return np.stack(results)


def _group_rows(study_ids: Sequence[Any]) -> list[tuple[Any, np.ndarray]]:
    """``(study_id, row indices)`` in order of first appearance."""
    rows: dict[Any, list[int]] = {}
    for i, sid in enumerate(study_ids):
        rows.setdefault(sid, []).append(i)
    return [(sid, np.asarray(idx)) for sid, idx in rows.items()]


def _unique(texts: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(texts))


def _weights_fingerprint(model: Any) -> int:
    """Changes when any parameter is replaced or updated in place (optimiser steps, loading)."""
    return hash(tuple((p.data_ptr(), p._version) for p in model.parameters()))


def encode_prompts(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    batch_size: int = 256,
    device: Any = None,
    cache: bool = True,
) -> dict[str, np.ndarray]:
    """Normalised text embeddings of ``texts``, ``{text: float32 [D]}``.

    Prompt sets are asked again and again, so their embeddings are kept per model
    and tokenizer until the model's weights change; pass ``cache=False`` for texts
    asked once (reports).
    """
    from echoclip.models.embed import embed_reports

    texts = _unique(texts)
    context_length = getattr(model, "context_length", None)
    key = (context_length, tuple(texts))
    store = None
    if cache:
        store = _cache_for(model, tokenizer)
    if store is not None and key in store:
        return store[key]
    emb = embed_reports(model, tokenizer, texts, batch_size, device=device, progress=False)
    result = {t: emb[i] for i, t in enumerate(texts)}
    if store is not None:
        store[key] = result
    return result


def _cache_for(model: Any, tokenizer: Any) -> dict[Any, Any] | None:
    """The text-embedding store of this model (current weights) and tokenizer; ``None`` if uncachable."""
    fingerprint = _weights_fingerprint(model)
    try:
        saved = _TEXT_CACHE.get(model)
        if saved is None or saved[0] != fingerprint:
            saved = (fingerprint, weakref.WeakKeyDictionary())
            _TEXT_CACHE[model] = saved
        return saved[1].setdefault(tokenizer, {})
    except TypeError:  # a model or tokenizer that cannot be weakly referenced is not cached
        return None


def video_embeddings(
    model: Any,
    data: Any,
    *,
    batch_size: int = 16,
    num_workers: int = 0,
    transform: Any = None,
    device: Any = None,
    read_options: Mapping[str, Any] | None = None,
    per_frame: bool = False,
) -> tuple[np.ndarray, list[Any], np.ndarray | None]:
    """Normalised video embeddings ``float32 [N, D]`` (``[N, T, D]`` per frame), a study id per
    row, and the rows' layer statistics for OOD scores (``None`` for a model without an OOD
    reference, and for embeddings given as input).

    Rows of ``[N, D]`` (or ``[N, T, D]``) input are taken as embeddings already (normalised again).
    Anything else goes through :func:`echoclip.models.embed.encode_videos`; videos that
    cannot be read are left out (the count is logged, and a dataset's ``skipped``
    record says which files and why).
    """
    import torch

    from echoclip.models.embed import encode_videos

    if isinstance(data, np.ndarray | torch.Tensor) and data.ndim in (2, 3):
        emb = np.asarray(data.detach().cpu() if isinstance(data, torch.Tensor) else data, dtype=np.float32)
        norms = np.linalg.norm(emb, axis=-1, keepdims=True)
        return emb / np.maximum(norms, 1e-12), list(range(len(emb))), None
    out = encode_videos(
        model,
        data,
        encode=model.encode_frames if per_frame else None,
        batch_size=batch_size,
        num_workers=num_workers,
        transform=transform,
        device=device,
        read_options=dict(read_options or {}),
        on_error="drop",
        progress=False,
    )
    if len(out.features) == 0:
        raise DataError("no video could be read; nothing to score")
    ids = [m.get("study_id", m.get("index", int(p))) for p, m in zip(out.positions, out.meta, strict=True)]
    return out.features, ids, out.ood_features
