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

from typing import Any

import torch
from torch import nn

from echoclip.models.features import time_features
from echoclip.pretrain.objectives import (
    PretrainConfig,
    PretrainObjective,
    clip_periods,
    sample_generator,
    stack_videos,
)
from echoclip.pretrain.periodic import periodic_infonce
from echoclip.pretrain.views import mlp, nt_xent, two_views, view_major


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
        self.clip_head = mlp(int(tower.output_dim), config.projection_dim)  # type: ignore[arg-type]
        self.frame_head = mlp(frame_width, config.projection_dim)

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
        views, stretch = zip(
            *(
                two_views(clip, sample_generator(self.seed, epoch, i))
                for clip, i in zip(video, indices, strict=True)
            ),
            strict=True,
        )
        batch = {"video": torch.stack(views)}  # [B, 2, 3, T, H, W]
        if self.config.periodic_weight > 0:
            batch["period"] = clip_periods(samples, batch["video"], torch.stack(stretch))
        return batch

    def compute(
        self, model: nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        device = next(model.parameters()).device
        video = batch["video"].to(device, non_blocking=True)
        b = video.shape[0]
        out = model(view_major(video))
        cfg = self.config
        figures: dict[str, float] = {}
        loss = out["clip"].sum() * 0.0
        if cfg.invariance_weight > 0:
            inv = nt_xent(out["clip"][:b], out["clip"][b:], cfg.temperature)
            loss = loss + cfg.invariance_weight * inv
            figures["invariance"] = float(inv.detach())
        if cfg.periodic_weight > 0 and "period" in batch:
            periods = view_major(batch["period"])
            periodic, anchors = periodic_infonce(out["frames"], periods, cfg.temperature)
            loss = loss + cfg.periodic_weight * periodic
            figures.update(
                periodic=float(periodic.detach()),
                periodic_anchors=float(anchors),
                period_found=float(torch.isfinite(periods).float().mean()),
            )
        figures["loss"] = float(loss.detach())
        return loss, figures
