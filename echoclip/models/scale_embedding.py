"""The physical scale of a clip as an input of the video embedding.

A sonographer sets the imaging depth to the heart, so a dilated heart fills about the
same pixels as a normal one: the pixels alone cannot say a chamber's size. A model with
a scale embedding adds ``MLP(Fourier features of log cm per pixel)`` to its video
embedding, so an apparent size in pixels and the pixel's size in centimetres add up to
the size in centimetres (in logarithms, sizes multiply by adding).

A clip of unknown scale (``NaN``; EchoNet-Dynamic's AVIs lost it) gets a learned
"unknown" vector instead; ``dropout`` hides known scales at that rate in training, so
that vector is learned and a model trained with scale still answers without one.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from echoclip.errors import ModelError
from echoclip.models.value_embedding import fourier_features

# cm per model pixel at which the features are centred: a 16 cm deep sector on 64 pixels
REFERENCE_CM_PER_PX = 0.25


class ScaleEmbedding(nn.Module):
    """``forward(cm_per_px [B, 2] (x, y; NaN: unknown)) -> [B, dim]``, zero at initialisation."""

    def __init__(self, dim: int, dropout: float = 0.0, num_frequencies: int = 4, hidden: int = 64) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ModelError(f"scale dropout must be in [0, 1), got {dropout}")
        self.dropout = float(dropout)
        # periods of 2, 1, 1/2, ... doublings of the pixel size
        self.register_buffer(
            "frequencies", math.pi * 2.0 ** torch.arange(num_frequencies).float(), persistent=False
        )
        self.mlp = nn.Sequential(
            nn.Linear(2 * (2 * num_frequencies + 1), hidden), nn.GELU(), nn.Linear(hidden, dim)
        )
        self.unknown = nn.Parameter(torch.zeros(dim))
        # start as no input at all: the pretrained video embedding is unchanged at step 0
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def features(self, cm_per_px: torch.Tensor) -> torch.Tensor:
        """``[B, 2] -> [B, 2 (2K + 1)]``: log2 of the pixel size relative to the reference, and its Fourier terms."""
        return fourier_features(
            torch.log2(cm_per_px.float() / REFERENCE_CM_PER_PX), self.frequencies
        ).flatten(1)

    def forward(self, cm_per_px: torch.Tensor) -> torch.Tensor:
        if cm_per_px.ndim != 2 or cm_per_px.shape[1] != 2:
            raise ModelError(f"cm_per_px must be [B, 2] (x, y per clip), got {list(cm_per_px.shape)}")
        known = torch.isfinite(cm_per_px).all(dim=1) & (cm_per_px > 0).all(dim=1)
        if self.training and self.dropout > 0:
            known = known & (torch.rand(known.shape, device=known.device) >= self.dropout)
        safe = torch.where(
            known.unsqueeze(1), cm_per_px.float(), torch.full_like(cm_per_px.float(), REFERENCE_CM_PER_PX)
        )
        weight = self.mlp[0].weight
        out = self.mlp(self.features(safe).to(weight.dtype))
        return torch.where(known.unsqueeze(1), out, self.unknown.to(out.dtype).expand_as(out))


def unknown_scales(batch: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``[batch, 2]`` of NaN: clips whose scale is not known."""
    return torch.full((batch, 2), math.nan, device=device)
