"""Scoring methods: from video and prompt embeddings to predictions.

Every method works on L2-normalised embeddings directly, so that it can be checked
against answers worked out by hand:

- ``video_emb``: ``[N, D]`` (one clip per study) or ``[N, K, D]`` (``K`` clips or
  frames per study, as EchoCLIP scores every frame).
- regression prompts: ``[C, D]`` with ``values [C]`` (one value per prompt, the
  layout of the published EchoCLIP code) or ``[V, P, D]`` with ``values [V]``
  (``P`` templates written with each of ``V`` candidate values).
- binary prompts: positive ``[P, D]`` and optional negative ``[Q, D]``.
- categorical prompts: a sequence of ``[P_c, D]``, one per class.

Methods are registered by kind and name (``SCORERS``); each kind has one signature:

- regression: ``fn(video_emb, prompt_emb, values, *, logit_scale=None) -> [N]``
- binary: ``fn(video_emb, positive_emb, negative_emb=None, *, calibration=None) -> [N]``
- categorical: ``fn(video_emb, class_emb, *, logit_scale=None) -> [N, C]`` probabilities

Users add their own with ``@register_scorer("regression", "my_method")``.

``knn`` (regression and binary) ignores the prompts: it averages the labels of the
nearest reference reports, given as ``neighbours=(embeddings, labels)`` (see
:mod:`echoclip.zeroshot.neighbours`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from echoclip.errors import ConfigError
from echoclip.registry import Registry

if TYPE_CHECKING:
    from echoclip.zeroshot.calibration import Calibration

__all__ = [
    "DEFAULT_LOGIT_SCALE",
    "SCORERS",
    "DEFAULT_METHODS",
    "default_method",
    "register_scorer",
    "get_scorer",
    "kinds_of_method",
    "require_method",
    "echoclip_rank",
    "expectation",
    "argmax",
    "similarity",
    "contrast",
    "calibrated",
    "class_probabilities",
    "knn_labels",
    "knn_regression",
    "knn_binary",
]

# CLIP clamps its learned temperature at 100; used when a model gives none.
DEFAULT_LOGIT_SCALE = 100.0

# target kind -> its scoring methods by name
SCORERS: dict[str, Registry[Callable[..., np.ndarray]]] = {
    kind: Registry(f"{kind} scoring method") for kind in ("regression", "binary", "categorical")
}

# What zero_shot uses when no method is named: EchoCLIP's published choices, except
# that a binary target with negative prompts is scored by ``contrast`` (see
# :func:`default_method`).
DEFAULT_METHODS = {"regression": "echoclip_rank", "binary": "similarity", "categorical": "argmax"}


def default_method(kind: str, has_negatives: bool = False) -> str:
    """The method a target gets when none is named.

    Binary targets with negative prompts: ``contrast``. The similarity of a video to a
    lone positive prompt also carries what the video says about *any* short sentence
    of the topic, an offset that can rank studies with a device below those without;
    subtracting the negative prompts removes it (docs/experiments.md has the figures).
    """
    if kind == "binary" and has_negatives:
        return "contrast"
    return DEFAULT_METHODS[kind]


def register_scorer(kind: str, name: str) -> Callable[[Callable[..., np.ndarray]], Callable[..., np.ndarray]]:
    """Register a scoring function for targets of ``kind`` under ``name``."""
    if kind not in SCORERS:
        raise ConfigError(f"unknown target kind {kind!r}; known: {sorted(SCORERS)}")

    return SCORERS[kind].register(name, overwrite=True)


def get_scorer(kind: str, name: str) -> Callable[..., np.ndarray]:
    """The scoring function ``name`` for targets of ``kind``; a :class:`ConfigError` if there is none."""
    if kind in SCORERS and name in SCORERS[kind]:
        return SCORERS[kind].get(name)
    known = {k: v.names() for k, v in SCORERS.items()}
    raise ConfigError(f"unknown method {name!r} for {kind} targets; known methods: {known}")


def kinds_of_method(name: str) -> list[str]:
    """The target kinds that have a method called ``name`` (``argmax`` serves two)."""
    return [kind for kind, methods in SCORERS.items() if name in methods]


def require_method(name: str) -> list[str]:
    """:func:`kinds_of_method`, or a :class:`ConfigError` listing every method when there is none."""
    kinds = kinds_of_method(name)
    if not kinds:
        known = "; ".join(f"{kind}: {', '.join(methods.names())}" for kind, methods in SCORERS.items())
        raise ConfigError(f"unknown method {name!r}; known methods: {known}")
    return kinds


def _clips(video_emb: Any) -> np.ndarray:
    """``[N, K, D]`` float array from ``[N, D]`` or ``[N, K, D]``."""
    v = np.asarray(video_emb)
    v = v.astype(np.result_type(v.dtype, np.float32), copy=False)
    if v.ndim == 2:
        v = v[:, None, :]
    if v.ndim != 3:
        raise ValueError(f"video embeddings must be [N, D] or [N, K, D], got shape {v.shape}")
    return v


def _candidates(prompt_emb: Any, values: Any) -> tuple[np.ndarray, np.ndarray]:
    """Flat candidates ``[C, D]`` and the value of each ``[C]``."""
    p = np.asarray(prompt_emb)
    p = p.astype(np.result_type(p.dtype, np.float32), copy=False)
    vals = np.asarray(values, dtype=np.float64).reshape(-1)
    if p.ndim == 3:
        if p.shape[0] != len(vals):
            raise ValueError(
                f"prompt embeddings [V, P, D] = {p.shape} need {p.shape[0]} values, got {len(vals)}"
            )
        return p.reshape(-1, p.shape[-1]), np.repeat(vals, p.shape[1])
    if p.ndim != 2 or p.shape[0] != len(vals):
        raise ValueError(f"prompt embeddings {p.shape} need one value per row (got {len(vals)} values)")
    return p, vals


def _value_similarity(video_emb: Any, prompt_emb: Any, values: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean similarity per distinct candidate value over clips and templates: ``[N, V]``, values ``[V]``."""
    v = _clips(video_emb)
    p, vals = _candidates(prompt_emb, values)
    sims = np.einsum("nkd,cd->nc", v, p) / v.shape[1]  # mean over clips
    unique, inverse = np.unique(vals, return_inverse=True)
    counts = np.bincount(inverse, minlength=len(unique))
    per_value = np.zeros((sims.shape[0], len(unique)), dtype=np.float64)
    np.add.at(per_value.T, inverse, sims.T)
    return per_value / counts, unique


@register_scorer("regression", "echoclip_rank")
def echoclip_rank(
    video_emb: Any,
    prompt_emb: Any,
    values: Any,
    *,
    logit_scale: float | None = None,
    top_fraction: float = 0.2,
) -> np.ndarray:
    """EchoCLIP's regression (Christensen et al. 2024): robust to a poorly ordered value axis.

    Per clip, every candidate prompt (template x value) is sorted by similarity,
    best first, and replaced by its value. The values at each rank position are
    averaged over the clips of a study, and the prediction is the median of the
    first ``top_fraction`` of rank positions. As in the published code the median
    of an even count is the lower middle value (``torch.median``), and ties keep the
    order the candidates were given in. ``logit_scale`` is accepted for a uniform
    signature and unused: ranks do not depend on the temperature.

    Returns ``float64 [N]``.
    """
    v = _clips(video_emb)
    p, vals = _candidates(prompt_emb, values)
    sims = np.einsum("nkd,cd->nkc", v, p)
    order = np.argsort(-sims, axis=-1, kind="stable")
    ranked_values = vals[order].mean(axis=1)  # [N, C]: mean value at each rank position
    top = max(1, int(ranked_values.shape[1] * top_fraction))
    head = np.sort(ranked_values[:, :top], axis=1)
    return head[:, (top - 1) // 2]


@register_scorer("regression", "expectation")
def expectation(
    video_emb: Any, prompt_emb: Any, values: Any, *, logit_scale: float | None = None
) -> np.ndarray:
    """Expected value under the softmax over candidate values of ``logit_scale`` x similarity.

    Similarities are averaged over templates and clips per value first, so the
    distribution is over values, as the model's contrastive logits are over texts.
    """
    sims, unique = _value_similarity(video_emb, prompt_emb, values)
    scale = DEFAULT_LOGIT_SCALE if logit_scale is None else float(logit_scale)
    logits = scale * sims
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    weights /= weights.sum(axis=1, keepdims=True)
    return weights @ unique


@register_scorer("regression", "argmax")
def argmax(video_emb: Any, prompt_emb: Any, values: Any, *, logit_scale: float | None = None) -> np.ndarray:
    """The candidate value whose prompts are most similar on average (``logit_scale`` unused)."""
    sims, unique = _value_similarity(video_emb, prompt_emb, values)
    return unique[np.argmax(sims, axis=1)]


def _mean_similarity(video_emb: Any, prompts_emb: Any) -> np.ndarray:
    v = _clips(video_emb)
    p = np.asarray(prompts_emb)
    if p.ndim != 2 or len(p) == 0:
        raise ValueError(f"prompt embeddings must be a non-empty [P, D] array, got shape {p.shape}")
    return np.einsum("nkd,pd->nkp", v, p.astype(v.dtype, copy=False)).mean(axis=(1, 2)).astype(np.float64)


@register_scorer("binary", "similarity")
def similarity(
    video_emb: Any, positive_emb: Any, negative_emb: Any = None, *, calibration: Calibration | None = None
) -> np.ndarray:
    """EchoCLIP's binary score: mean cosine similarity to the positive prompts (over clips too).

    Negative prompts and ``calibration`` are unused. Returns ``float64 [N]``.
    """
    return _mean_similarity(video_emb, positive_emb)


@register_scorer("binary", "contrast")
def contrast(
    video_emb: Any, positive_emb: Any, negative_emb: Any = None, *, calibration: Calibration | None = None
) -> np.ndarray:
    """Mean similarity to the positive prompts minus mean similarity to the negative ones.

    Subtracting what the model says about the absence removes the offset every
    video has towards any text of the same topic. ``calibration`` is unused.
    """
    if negative_emb is None or len(negative_emb) == 0:
        raise ConfigError("method 'contrast' needs negative prompts; this target has none (use 'similarity')")
    return _mean_similarity(video_emb, positive_emb) - _mean_similarity(video_emb, negative_emb)


@register_scorer("binary", "calibrated")
def calibrated(
    video_emb: Any, positive_emb: Any, negative_emb: Any = None, *, calibration: Calibration | None = None
) -> np.ndarray:
    """A probability: the raw score the calibration was fitted on, mapped through it."""
    if calibration is None:
        raise ConfigError(
            "method 'calibrated' needs a calibration for this target; fit one with "
            "echoclip.zeroshot.calibration.calibrate_prompt_set on a few labelled studies"
        )
    raw = get_scorer("binary", calibration.score)(video_emb, positive_emb, negative_emb)
    return calibration(raw)


@register_scorer("categorical", "argmax")
def class_probabilities(
    video_emb: Any, class_emb: Sequence[Any], *, logit_scale: float | None = None
) -> np.ndarray:
    """Softmax over classes of ``logit_scale`` x mean similarity to each class's prompts: ``[N, C]``.

    The predicted class is the argmax of these probabilities.
    """
    if len(class_emb) < 2:
        raise ValueError("categorical scoring needs at least two classes")
    sims = np.stack([_mean_similarity(video_emb, emb) for emb in class_emb], axis=1)
    scale = DEFAULT_LOGIT_SCALE if logit_scale is None else float(logit_scale)
    logits = scale * sims
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    return probs / probs.sum(axis=1, keepdims=True)


def _study_vectors(video_emb: Any) -> np.ndarray:
    """One unit vector per study: the mean of its clips (or frames), normalised again."""
    v = _clips(video_emb).mean(axis=1)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def knn_labels(
    video_emb: Any, neighbour_emb: Any, neighbour_values: Any, k: int = 50, *, weighted: bool = False
) -> np.ndarray:
    """The mean label of each study's ``k`` most similar reference reports: ``float64 [N]``.

    Neighbours whose label is missing (NaN) are left out before ranking. ``weighted``
    weights each neighbour by its similarity (clipped at 0; equal weights when all are 0).
    """
    emb = np.asarray(neighbour_emb, dtype=np.float32)
    values = np.asarray(neighbour_values, dtype=np.float64).reshape(-1)
    if emb.ndim != 2 or len(emb) != len(values):
        raise ValueError(f"neighbours: {emb.shape} embeddings for {len(values)} labels")
    known = np.isfinite(values)
    emb, values = emb[known], values[known]
    if len(values) == 0:
        raise ConfigError("method 'knn': no reference report has a label for this target")
    if int(k) < 1:
        raise ConfigError(f"method 'knn': k must be at least 1, not {k}")
    k = min(int(k), len(values))
    sims = _study_vectors(video_emb).astype(np.float32) @ emb.T  # [N, M]
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    picked = values[top]
    if not weighted:
        return picked.mean(axis=1)
    w = np.clip(np.take_along_axis(sims, top, axis=1).astype(np.float64), 0.0, None)
    total = w.sum(axis=1)
    plain = picked.mean(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (w * picked).sum(axis=1) / np.where(total > 0, total, 1.0), plain)


def _need_neighbours(neighbours: Any) -> tuple[Any, Any]:
    if neighbours is None:
        raise ConfigError(
            "method 'knn' needs reference reports with labels: pass neighbours= (an embedding store "
            "folder, or (embeddings, labels)) to zero_shot or evaluate"
        )
    return neighbours


@register_scorer("regression", "knn")
def knn_regression(
    video_emb: Any,
    prompt_emb: Any = None,
    values: Any = None,
    *,
    logit_scale: float | None = None,
    neighbours: tuple[Any, Any] | None = None,
    k: int = 50,
) -> np.ndarray:
    """The similarity-weighted mean value of the ``k`` nearest reference reports (prompts unused).

    ``neighbours`` is ``(embeddings [M, D], values [M])`` for this target.
    """
    emb, labels = _need_neighbours(neighbours)
    return knn_labels(video_emb, emb, labels, k, weighted=True)


@register_scorer("binary", "knn")
def knn_binary(
    video_emb: Any,
    positive_emb: Any = None,
    negative_emb: Any = None,
    *,
    calibration: Calibration | None = None,
    neighbours: tuple[Any, Any] | None = None,
    k: int = 50,
) -> np.ndarray:
    """The share of the ``k`` nearest reference reports that have the label, as EchoPrime
    predicts phenotypes (prompts unused). ``neighbours`` is ``(embeddings [M, D], 0/1 [M])``."""
    emb, labels = _need_neighbours(neighbours)
    return knn_labels(video_emb, emb, labels, k, weighted=False)
