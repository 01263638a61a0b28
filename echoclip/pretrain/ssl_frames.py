"""Self-supervised pretraining of towers without masked modelling (the per-frame CNN).

Two contrastive terms:

- augmentation invariance (SimCLR): two random views of each clip - a different crop,
  contrast, brightness, noise, playback speed and direction - must be closer to each
  other than to the views of the other clips of the batch. What survives these
  changes is the heart itself (its size, shape and motion), not the image settings.
- periodic (EchoFM): on frame features, frames one cardiac period apart are
  positives, other phases of the beat are negatives, so the frame features follow
  the phase of the beat - and the tower's spread over time (its ``stats``
  aggregation) measures how much the heart moves.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from echoclip.pretrain.features import time_features
from echoclip.pretrain.objectives import PretrainConfig, PretrainObjective, sample_generator, stack_videos
from echoclip.pretrain.periodic import estimate_periods, periodic_infonce


def _uniform(g: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=g))


def augment_view(clip: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A random view of a normalised clip ``[3, T, H, W]`` (same shape): crop, speed, direction, intensity."""
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
    # random resized crop, 50-100 % of the area
    area = _uniform(g, 0.5, 1.0) * h * w
    ratio = math.exp(_uniform(g, math.log(0.8), math.log(1.25)))
    ch, cw = min(h, round(math.sqrt(area / ratio))), min(w, round(math.sqrt(area * ratio)))
    top = int(torch.randint(0, h - ch + 1, (), generator=g))
    left = int(torch.randint(0, w - cw + 1, (), generator=g))
    crop = x[:, :, top : top + ch, left : left + cw].transpose(0, 1)  # [T, C, ch, cw]
    x = F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False).transpose(0, 1)
    # contrast and brightness (in normalised units), then speckle-like noise
    x = x * _uniform(g, 0.7, 1.3) + _uniform(g, -0.3, 0.3)
    x = x + 0.1 * torch.randn(x.shape, generator=g)
    return x.contiguous()


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's loss: ``a[i]`` and ``b[i]`` are a pair; every other row of both is a negative."""
    z = F.normalize(torch.cat([a, b]).float(), dim=-1)
    n = a.shape[0]
    logits = z @ z.T / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, target)


def _mlp(width_in: int, width_out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(width_in, width_in), nn.GELU(), nn.Linear(width_in, width_out))


class FrameSSLModel(nn.Module):
    """A video tower plus the projection heads of the two contrastive terms.

    ``forward(x [B, 3, T, H, W])`` returns ``{"clip": [B, d], "frames": [B, T, d]}``.
    """

    def __init__(self, tower: nn.Module, config: PretrainConfig) -> None:
        super().__init__()
        self.tower = tower
        cfg = tower.config  # type: ignore[attr-defined]
        with torch.no_grad():
            was_training = tower.training
            tower.eval()
            probe = torch.zeros(1, 3, cfg.num_frames, cfg.image_size, cfg.image_size)
            frame_width = time_features(tower, probe).shape[-1]
            tower.train(was_training)
        self.clip_head = _mlp(int(tower.output_dim), config.projection_dim)  # type: ignore[arg-type]
        self.frame_head = _mlp(frame_width, config.projection_dim)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the tower's activations in the backward pass (the Trainer's ``grad_checkpointing``)."""
        setter = getattr(self.tower, "set_grad_checkpointing", None)
        if setter is not None:
            setter(enable)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        tower: Any = self.tower
        frames = time_features(tower, x)
        # the tower's own forward, reusing the frame features instead of computing them twice
        if hasattr(tower, "aggregation"):
            clip = tower.proj(tower.aggregation(frames))
        elif frames.shape[1] == 1 and hasattr(tower, "proj"):
            clip = tower.proj(frames[:, 0])
        else:
            clip = tower(x)
        return {"clip": self.clip_head(clip), "frames": self.frame_head(frames)}


class FrameSSLObjective(PretrainObjective):
    """``invariance_weight`` x SimCLR between two views + ``periodic_weight`` x the periodic term."""

    name = "frames-ssl"
    trained_prefixes = None  # the whole tower: backbone, aggregation and projection

    def collate(self, samples: list[Any], epoch: int) -> dict[str, torch.Tensor] | None:
        stacked = stack_videos(samples)
        if stacked is None:
            return None
        video, indices = stacked
        views = []
        for clip, i in zip(video, indices, strict=True):
            g = sample_generator(self.seed, epoch, i)
            views.append(torch.stack([augment_view(clip, g), augment_view(clip, g)]))
        batch = {"video": torch.stack(views)}  # [B, 2, 3, T, H, W]
        if self.config.periodic_weight > 0:
            flat = batch["video"].flatten(0, 1)
            batch["period"] = estimate_periods(flat).view(len(indices), 2)
        return batch

    def compute(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        device = next(model.parameters()).device
        video = batch["video"].to(device, non_blocking=True)
        b = video.shape[0]
        views = video.transpose(0, 1).flatten(0, 1)  # all first views, then all second views
        out = model(views)
        cfg = self.config
        figures: dict[str, float] = {}
        loss = out["clip"].sum() * 0.0
        if cfg.invariance_weight > 0:
            inv = nt_xent(out["clip"][:b], out["clip"][b:], cfg.temperature)
            loss = loss + cfg.invariance_weight * inv
            figures["invariance"] = float(inv.detach())
        if cfg.periodic_weight > 0 and "period" in batch:
            periods = batch["period"].transpose(0, 1).flatten()
            periodic, anchors = periodic_infonce(out["frames"], periods, cfg.temperature)
            loss = loss + cfg.periodic_weight * periodic
            figures.update(periodic=float(periodic.detach()), periodic_anchors=float(anchors))
        figures["loss"] = float(loss.detach())
        return loss, figures
