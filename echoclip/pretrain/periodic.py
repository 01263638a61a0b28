"""The heartbeat as a training signal: EchoFM's periodic loss.

Frames one cardiac cycle apart show the heart in the same phase: they are positives
for a contrastive loss on frame features, frames next to the anchor (±1) are left
out, and the other frames of the clip - other phases of the beat - are negatives. The
period comes with each sample when its dataset knows it (a heart rate, or an estimate
on the whole video: :mod:`echoclip.data.cardiac`), else from the clip itself
(:func:`estimate_periods`), which needs about one and a half beats.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from echoclip.data.cardiac import frame_similarity, lag_profile, period_from_profile


def estimate_periods(clips: torch.Tensor, min_period: float = 2.0) -> torch.Tensor:
    """Periods of a batch of model inputs ``[B, C, T, H, W]`` in frames, ``float [B]`` (``nan``: none)."""
    with torch.autocast(clips.device.type, enabled=False):  # pixels, not activations: fp32 always
        profiles = lag_profile(frame_similarity(clips.float())).numpy()
    return torch.tensor([period_from_profile(p, min_period) for p in profiles], dtype=torch.float32)


def periodic_pairs(num_steps: int, period: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Positives and negatives of every anchor frame, two ``bool [T, T]`` (row = anchor).

    Positive: the frame nearest to each whole number of periods away. Left out: the
    anchor and its neighbours (±1), and the neighbours of positives (same phase,
    give or take a frame). Negative: every other frame of the clip.
    """
    idx = torch.arange(num_steps, dtype=torch.float32)
    diff = idx[None, :] - idx[:, None]
    if not (math.isfinite(period) and period >= 2.0):
        none = torch.zeros(num_steps, num_steps, dtype=torch.bool)
        return none, none.clone()
    k = torch.round(diff / period)
    off = (diff - k * period).abs()
    positive = (k != 0) & (off <= 0.5)
    near_positive = (k != 0) & (off <= 1.0) & ~positive
    near_anchor = diff.abs() <= 1
    negative = ~(positive | near_positive | near_anchor)
    return positive, negative


def periodic_infonce(
    features: torch.Tensor, periods: torch.Tensor, temperature: float = 0.1
) -> tuple[torch.Tensor, int]:
    """EchoFM's periodic contrastive term as multi-positive InfoNCE on frame features.

    Args:
        features: ``[B, T, C]`` features of the ``T`` time steps of each clip.
        periods: ``[B]`` cardiac period of each clip in time steps (``nan``: leave the clip out).
        temperature: softmax temperature of the cosine similarities.

    Returns ``(loss, anchors)``: the mean loss over anchors that have a positive and a
    negative (a zero that keeps the graph when there are none) and their number.
    """
    b, t, _ = features.shape
    z = F.normalize(features.float(), dim=-1)
    logits = z @ z.transpose(1, 2) / temperature  # [B, T, T]
    losses = []
    for i in range(b):
        positive, negative = periodic_pairs(t, float(periods[i]))
        positive, negative = positive.to(z.device), negative.to(z.device)
        valid = positive.any(dim=1) & negative.any(dim=1)
        if not valid.any():
            continue
        row = logits[i][valid]
        pos, allowed = positive[valid], (positive | negative)[valid]
        num = torch.logsumexp(row.masked_fill(~pos, float("-inf")), dim=1)
        den = torch.logsumexp(row.masked_fill(~allowed, float("-inf")), dim=1)
        losses.append(den - num)
    if not losses:
        return features.sum() * 0.0, 0
    all_losses = torch.cat(losses)
    return all_losses.mean(), int(all_losses.numel())
