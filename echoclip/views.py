"""Which view each video shows: ``predict_views``, the library behind ``echoclip views``.

Two ways to tell, chosen by the model given:

- supervised: a view classifier fine-tuned with ``echoclip finetune --task view`` (its
  classes are the views it was trained on), or a :class:`~echoclip.models.view_classifier.ViewClassifier`;
- zero-shot: a CLIP model and a prompt set with a categorical target (the shipped
  ``views`` set), scored per video by :func:`echoclip.zeroshot.predict.score_embeddings`.

Each video is its own row (a study holds several views, so videos are never pooled by
study). The ground-truth ``view`` column, where a manifest has one, is left as it is
and only used for scoring (:func:`view_accuracy`); a true view that the model has no
class for counts as wrong.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from echoclip.errors import ConfigError, DataError, ModelError

PRED_COLUMN = "view_pred"
PROB_COLUMN = "view_prob"
TRUTH_COLUMN = "view"


def load_view_model(path: str | os.PathLike[str], device: Any = None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of a model directory: a fine-tuned view classifier (tokenizer
    ``None``) or a CLIP model directory (for zero-shot prompts)."""
    from echoclip import formats
    from echoclip.models.encoders import read_format

    fmt, folder, _ = read_format(path)
    if fmt == formats.FINETUNED:
        from echoclip.finetune.model import load_finetuned

        model = load_finetuned(folder)
        _check_categorical(model, folder)
        return (model.to(device) if device is not None else model), None
    if fmt == formats.MODEL:
        from echoclip.models.factory import get_tokenizer, load_model

        return load_model(folder, device=device), get_tokenizer(folder)
    raise ModelError(
        f"{path}: a {fmt} folder predicts no views; give a fine-tuned view classifier "
        "(echoclip finetune --task view) or a CLIP model directory"
    )


def _check_categorical(model: Any, where: Any) -> None:
    if getattr(model, "kind", None) != "categorical":
        raise ModelError(
            f"{where}: a fine-tuned {getattr(model, 'kind', '?')} model of {list(model.targets)}, "
            "not a view classifier (fine-tune one with --task view)"
        )


def predict_views(
    model: Any,
    data: Any,
    *,
    tokenizer: Any = None,
    prompts: Any = "views",
    method: str | None = None,
    split: str | Sequence[str] | None = None,
    batch_size: int = 16,
    num_workers: int = 0,
    device: Any = None,
    transform: Any = None,
    read_options: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """The table of ``data`` with each video's predicted view and its probability.

    Args:
        model: a fine-tuned view classifier (``FineTuneModel`` of kind ``categorical``),
            a ``ViewClassifier`` (give ``transform``), a CLIP model (give ``tokenizer``:
            zero-shot), or a model directory holding any of the first or the last.
        data: a manifest (parquet/CSV), a folder :func:`~echoclip.data.datasets.open_dataset`
            reads, a dataset with a ``table``, or a list of video files.
        prompts: for zero-shot, a prompt set with a categorical target (its first one is used).
        method: for zero-shot, the scoring method of that target (default ``argmax``).
        split: the split of a manifest or folder to read (default: every row).

    Returns:
        The data's table (a ``video_path`` column for a list of files), one row per video
        in input order, with ``view_pred`` (the most probable view; ``None`` for a video
        that could not be read) and ``view_prob`` (its probability, in [0, 1]). ``attrs``
        holds ``method``, ``classes``, and ``unreadable`` (how many videos were not read).

    Example::

        df = echoclip.predict_views("runs/views/final", "runs/sim/manifest.parquet")
        df = echoclip.predict_views(clip_model, ["a.dcm", "b.avi"], tokenizer=tokenizer)
    """
    from echoclip.data.transforms import VideoTransform

    if isinstance(model, str | os.PathLike):
        model, loaded = load_view_model(model, device)
        tokenizer = tokenizer if tokenizer is not None else loaded
    if transform is None and getattr(model, "preprocess_config", None) is not None:
        transform = VideoTransform(model.preprocess_config)
    table, videos = _open(data, split, transform, read_options)
    if len(table) == 0:
        raise DataError("no videos to classify")
    probs, classes, how = _view_probabilities(
        model,
        videos,
        tokenizer=tokenizer,
        prompts=prompts,
        method=method,
        batch_size=batch_size,
        num_workers=num_workers,
        device=device,
        transform=transform,
        read_options=read_options,
        progress=progress,
    )
    read = np.isfinite(probs).all(axis=1)
    names = np.asarray(classes, dtype=object)
    out = table.reset_index(drop=True).copy()
    best = np.where(read, np.nan_to_num(probs, nan=-1.0).argmax(axis=1), 0)
    out[PRED_COLUMN] = np.where(read, names[best], None)
    out[PROB_COLUMN] = np.where(read, np.clip(np.nan_to_num(probs, nan=0.0).max(axis=1), 0.0, 1.0), np.nan)
    out.attrs = {"method": how, "classes": list(classes), "unreadable": int((~read).sum())}
    return out


def _open(data: Any, split: Any, transform: Any, read_options: Mapping[str, Any] | None) -> tuple[Any, Any]:
    """``(table, videos)``: the rows to write and what :func:`encode_videos` reads, in the same order."""
    from echoclip.data.datasets import open_dataset

    options = dict(read_options or {})
    if isinstance(data, str | os.PathLike):
        path = Path(data)
        if path.is_dir() or path.suffix.lower() in (".parquet", ".pq", ".csv", ".tsv"):
            data = open_dataset(path, split, transform, read_options=options)
        else:
            data = [data]
    if hasattr(data, "table"):
        return data.table, data
    videos = list(data)
    if not all(isinstance(v, str | os.PathLike) for v in videos):
        return pd.DataFrame({"video": range(len(videos))}), videos
    return pd.DataFrame({"video_path": [str(v) for v in videos]}), videos


def _view_probabilities(
    model: Any, videos: Any, *, tokenizer: Any, prompts: Any, method: str | None, **encode: Any
) -> tuple[np.ndarray, list[str], str]:
    """``(probabilities [N, classes] (NaN rows: unreadable), classes, method name)``."""
    from echoclip.finetune.model import FineTuneModel
    from echoclip.models.view_classifier import ViewClassifier

    options = {k: v for k, v in encode.items() if k != "read_options"}
    options["read_options"] = dict(encode.get("read_options") or {})
    if isinstance(model, FineTuneModel):
        _check_categorical(model, "the model")
        return _encode(model, videos, model.predict, options), list(model.targets), "finetuned"
    if isinstance(model, ViewClassifier):
        if options.get("transform") is None:
            raise ConfigError("a ViewClassifier has no preprocessing of its own: pass transform=")
        return _encode(model, videos, model.classify_views, options), list(model.views), "classifier"
    if not hasattr(model, "encode_text"):
        raise ModelError(f"{type(model).__name__} is neither a view classifier nor a CLIP model")
    if tokenizer is None:
        raise ConfigError("zero-shot views need the model's tokenizer (tokenizer=)")
    return _zero_shot(model, videos, tokenizer, prompts, method, options)


def _encode(
    model: Any, videos: Any, encode: Any, options: dict[str, Any], normalize: bool = False
) -> np.ndarray:
    """The outputs of every video (NaN rows: unreadable); a :class:`DataError` when none could be read."""
    from echoclip.models.embed import encode_videos

    out = encode_videos(model, videos, encode=encode, normalize=normalize, on_error="nan", **options)
    if len(out.failed) == len(out.features):
        raise DataError(f"none of the {len(out.features)} videos could be read; no views to predict")
    return out.features.astype(np.float64)


def _zero_shot(
    model: Any, videos: Any, tokenizer: Any, prompts: Any, method: str | None, options: dict[str, Any]
) -> tuple[np.ndarray, list[str], str]:
    from dataclasses import replace

    from echoclip.zeroshot.predict import encode_prompts, model_logit_scale, score_embeddings
    from echoclip.zeroshot.prompts import load_prompt_set

    prompt_set = load_prompt_set(prompts)
    target = next((t for t in prompt_set.targets.values() if t.kind == "categorical"), None)
    if target is None:
        raise ConfigError(f"prompt set {prompt_set.name!r} has no categorical target to predict views with")
    one = replace(prompt_set, targets={target.name: target})
    per_frame = bool(getattr(model, "embeds_frames", False))
    emb = _encode(model, videos, model.encode_frames if per_frame else None, options, True).astype(np.float32)
    read = np.isfinite(emb.reshape(len(emb), -1)).all(axis=1)
    classes = list(target.classes)
    probs = np.full((len(emb), len(classes)), np.nan)
    if read.any():
        text_emb = encode_prompts(model, tokenizer, one.texts(), device=options.get("device"))
        df = score_embeddings(
            emb[read],
            list(range(int(read.sum()))),
            one,
            text_emb,
            methods={target.name: method or "argmax"},
            logit_scale=model_logit_scale(model),
        )
        probs[read] = df[[f"{target.name}_p_{c}" for c in classes]].to_numpy(np.float64)
    return probs, classes, f"zero-shot {method or 'argmax'} ({prompt_set.name})"


def view_accuracy(table: pd.DataFrame) -> dict[str, Any] | None:
    """Accuracy of ``view_pred`` against the ground-truth ``view`` (``None`` without one).

    Counted over videos with a known view (an unreadable video counts as wrong);
    ``outside_classes`` is how many of those have a view the model has no class for
    (counted as wrong too), when ``table.attrs`` names the classes.
    """
    if TRUTH_COLUMN not in table.columns or PRED_COLUMN not in table.columns:
        return None
    truth = table[TRUTH_COLUMN].astype("string").str.strip()
    known = (truth.notna() & (truth != "")).to_numpy(bool)
    if not known.any():
        return None
    pred = table[PRED_COLUMN].astype("string")
    right = (truth == pred).fillna(False).to_numpy(bool) & known
    out: dict[str, Any] = {"n": int(known.sum()), "accuracy": float(right.sum() / known.sum())}
    classes = table.attrs.get("classes")
    if classes:
        out["outside_classes"] = int((known & ~truth.isin(list(classes)).fillna(False).to_numpy(bool)).sum())
    return out


__all__ = ["load_view_model", "predict_views", "view_accuracy"]
