"""The cardiac period of a video, in frames, from the video itself.

Frames one cardiac cycle apart show the heart in the same phase. The similarity of
every pair of frames (after removing each pixel's mean over time, so only what moves
counts), averaged along each diagonal of that matrix, is the autocorrelation of the
frame-similarity curve; its first clear peak after lag 0 is the period. It needs about
one and a half beats: a clip shorter than that has no period of its own, which is why
datasets estimate it once on the whole video, or take it from a heart rate
(:func:`period_from_heart_rate`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from echoclip.errors import DataError

# frames are compared on a grid at most this fine: the beat is a large-scale motion
_SIMILARITY_SIZE = 32


def frame_similarity(clips: torch.Tensor) -> torch.Tensor:
    """Cosine similarity between the frames of each clip, ``[B, T, T]``.

    ``clips`` is ``[B, C, T, H, W]`` (model input) or ``[B, T, H, W]`` (grey). Each
    pixel's mean over time is removed first, so the static sector, text and
    background do not make every pair of frames look alike.
    """
    x = clips.float()
    if x.ndim == 5:
        x = x.mean(dim=1)
    if x.ndim != 4:
        raise DataError(f"expected clips [B, C, T, H, W] or [B, T, H, W], got shape {list(clips.shape)}")
    b, t, h, w = x.shape
    if max(h, w) > _SIMILARITY_SIZE:
        size = (min(h, _SIMILARITY_SIZE), min(w, _SIMILARITY_SIZE))
        x = F.adaptive_avg_pool2d(x, size)
    x = x.reshape(b, t, -1)
    x = x - x.mean(dim=1, keepdim=True)
    x = F.normalize(x, dim=-1, eps=1e-8)
    return x @ x.transpose(1, 2)


def lag_profile(similarity: torch.Tensor) -> torch.Tensor:
    """Mean similarity of frames ``lag`` apart, for every lag: ``[..., T, T] -> [..., T]``."""
    t = similarity.shape[-1]
    return torch.stack([similarity.diagonal(lag, dim1=-2, dim2=-1).mean(dim=-1) for lag in range(t)], dim=-1)


def period_from_profile(
    profile: np.ndarray, min_period: float = 2.0, max_period: float | None = None
) -> float:
    """The lag of the first clear peak of a lag profile (sub-frame by a parabola), else ``nan``.

    The profile first decays from lag 0 (neighbouring frames share speckle and
    position). Beyond that first trough, a peak is a candidate when it rises above
    the trough before it by a third of the profile's range there. Each candidate is
    refined to a fraction of a frame (a parabola through the peak) and scored by the
    mean profile at its multiples (one period, two, three...): a bump within systole
    scores low because its multiples fall in troughs, and a beat's multiple scores no
    better than the beat. The shortest candidate scoring within a quarter of the best
    is the period. A period that falls between frames lowers the sampled peak itself,
    which is why the multiples are read too.
    """
    p = np.asarray(profile, dtype=np.float64)
    t = len(p)
    # at least a third of the clip must overlap for a lag to be trusted
    last = min(t - 2, int(math.floor(2 * (t - 1) / 3)))
    if max_period is not None:
        last = min(last, int(math.ceil(max_period)) + 1)
    trough = 1
    while trough < last and p[trough + 1] < p[trough]:
        trough += 1
    first = max(trough + 1, int(math.floor(min_period)))
    if last < first:
        return float("nan")
    lo, hi = p[trough : last + 1].min(), p[trough : last + 1].max()
    if not hi - lo > 1e-6:
        return float("nan")
    peaks = [
        lag
        for lag in range(first, last + 1)
        if p[lag] > p[lag - 1] and p[lag] >= p[lag + 1] and p[lag] - p[trough:lag].min() >= (hi - lo) / 3
    ]
    if not peaks:
        return float("nan")
    lags = np.arange(t)
    periods = [_refine(p, lag) for lag in peaks]
    scores = [np.interp(np.arange(1, max(1, int(last // q)) + 1) * q, lags, p).mean() for q in periods]
    best = max(scores)
    period = next(q for q, sc in zip(periods, scores, strict=True) if sc - lo >= 0.75 * (best - lo))
    if period < min_period or (max_period is not None and period > max_period):
        return float("nan")
    return float(period)


def _refine(p: np.ndarray, lag: int) -> float:
    """The top of the parabola through ``p[lag - 1 : lag + 2]``."""
    a, b, c = p[lag - 1], p[lag], p[lag + 1]
    denom = a - 2 * b + c
    return lag + (0.5 * (a - c) / denom if denom < 0 else 0.0)


def _time_first_grey(frames: Any) -> torch.Tensor:
    """``[T, H, W]`` float from ``[T, H, W]``, ``[T, H, W, C]`` (a ``Video``'s frames) or a ``Video``."""
    frames = getattr(frames, "frames", frames)
    if not isinstance(frames, torch.Tensor):
        frames = np.asarray(frames)
        if frames.ndim == 4 and frames.shape[-1] in (1, 3, 4):
            frames = frames[..., :3].mean(axis=-1, dtype=np.float32)
        frames = torch.from_numpy(np.ascontiguousarray(frames))
    x = frames.float()
    if x.ndim == 4 and x.shape[-1] in (1, 3, 4):
        x = x[..., :3].mean(dim=-1)
    if x.ndim != 3:
        raise DataError(
            f"estimate_period expects frames [T, H, W] or [T, H, W, C] (time first), got shape {list(x.shape)}"
        )
    return x


def estimate_period(frames: Any, min_period: float = 2.0, max_period: float | None = None) -> float:
    """The cardiac period of a clip, in frames (``nan`` when no beat is visible).

    ``frames`` is time-first: ``uint8 [T, H, W, 3]`` as ``Video.frames``, ``[T, H, W]``,
    or a :class:`~echoclip.data.video.Video`. A period is found when the clip holds
    about one and a half beats or more. Divide by the frame rate for seconds.

    Example::

        video = echoclip.load_video("a4c.avi")
        bpm = 60 * video.fps / estimate_period(video)
    """
    x = _time_first_grey(frames)
    if x.shape[0] < 4:
        return float("nan")
    profile = lag_profile(frame_similarity(x[None]))[0]
    return period_from_profile(profile.numpy(), min_period, max_period)


def period_from_heart_rate(heart_rate: float, fps: float) -> float:
    """Frames in one cardiac cycle at ``heart_rate`` beats per minute and ``fps`` frames per second."""
    if not (math.isfinite(heart_rate) and heart_rate > 0):
        raise ValueError(f"heart rate must be a positive number, got {heart_rate!r}")
    return fps * 60.0 / heart_rate
