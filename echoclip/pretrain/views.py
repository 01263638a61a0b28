"""Two random views of a clip, and the SimCLR loss that makes their embeddings agree.

The views differ in crop, contrast, brightness, noise, playback speed and
direction - all things that leave the heart (its size, shape and motion) as it is,
so what an encoder must keep to match them is the heart, not the image settings.
Every random choice comes from a generator seeded per sample and epoch.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn


def _uniform(g: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=g))


@functools.cache
def _noise_bank() -> torch.Tensor:
    """A fixed block of standard normal noise that views cut their noise from.

    Drawing fresh normal noise for every pixel of every view took half of
    :func:`augment_view`; a window at a random offset of a 4M-sample block costs
    nothing, and two views still get different noise.
    """
    return torch.randn(1 << 22, generator=torch.Generator().manual_seed(0))


def _noise(shape: torch.Size, g: torch.Generator) -> torch.Tensor:
    bank = _noise_bank()
    n = math.prod(shape)
    if n > bank.numel():
        return torch.randn(shape, generator=g)
    start = int(torch.randint(0, bank.numel() - n + 1, (), generator=g))
    return bank[start : start + n].view(shape)


def augment_view(clip: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A random view of a normalised clip ``[3, T, H, W]`` (same shape): crop, speed, direction, intensity."""
    return augment_view_and_stretch(clip, g)[0]


def augment_view_and_stretch(clip: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, float]:
    """:func:`augment_view` and how much it stretched time: a period of ``P`` clip frames
    lasts ``P * stretch`` frames of the view."""
    c, t, h, w = clip.shape
    # playback speed: a random stretch of 70-100 % of the clip resampled to T frames
    span = _uniform(g, 0.7, 1.0) * (t - 1)
    start = _uniform(g, 0.0, (t - 1) - span)
    where = start + torch.linspace(0, span, t)
    lo = where.floor().long().clamp(max=t - 1)
    hi = (lo + 1).clamp(max=t - 1)
    frac = (where - lo).view(1, t, 1, 1)
    x = clip[:, lo] * (1 - frac) + clip[:, hi] * frac
    if float(torch.rand((), generator=g)) < 0.5:  # systole and diastole swap; the heart is the same
        x = x.flip(1)
    # random resized crop, 80-100 % of the area: a crop of half the frame can cut the
    # pacemaker lead (at the edge of the right heart) out of one view, and matching the
    # views then teaches the encoder to ignore it (docs/experiments.md)
    area = _uniform(g, 0.8, 1.0) * h * w
    ratio = math.exp(_uniform(g, math.log(0.8), math.log(1.25)))
    ch, cw = min(h, round(math.sqrt(area / ratio))), min(w, round(math.sqrt(area * ratio)))
    top = int(torch.randint(0, h - ch + 1, (), generator=g))
    left = int(torch.randint(0, w - cw + 1, (), generator=g))
    crop = x[:, :, top : top + ch, left : left + cw].transpose(0, 1)  # [T, C, ch, cw]
    x = F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False).transpose(0, 1)
    # contrast and brightness (in normalised units), then speckle-like noise
    x = x * _uniform(g, 0.7, 1.3) + _uniform(g, -0.3, 0.3)
    x = x + 0.1 * _noise(x.shape, g)
    return x.contiguous(), float((t - 1) / span) if span > 0 else 1.0


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's loss: ``a[i]`` and ``b[i]`` are a pair; every other row of both is a negative."""
    z = F.normalize(torch.cat([a, b]).float(), dim=-1)
    n = a.shape[0]
    logits = z @ z.T / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, target)


def mlp(width_in: int, width_out: int) -> nn.Module:
    """The projection head the contrastive terms read (dropped after pretraining)."""
    return nn.Sequential(nn.Linear(width_in, width_in), nn.GELU(), nn.Linear(width_in, width_out))


def two_views(clip: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``[3, T, H, W] -> [2, 3, T, H, W]``: two independent random views, and how much each
    stretched time (``float [2]``, see :func:`augment_view_and_stretch`)."""
    first, second = augment_view_and_stretch(clip, g), augment_view_and_stretch(clip, g)
    return torch.stack([first[0], second[0]]), torch.tensor([first[1], second[1]])


def view_major(x: torch.Tensor) -> torch.Tensor:
    """``[B, 2, ...] -> [2B, ...]``: all first views, then all second views."""
    return x.transpose(0, 1).flatten(0, 1)
