"""The ``frames`` video tower: an image backbone on every frame, then aggregation over time.

Frames are folded into the batch (``[B*T, 3, H, W]``), so any image network serves:
a plain conv stack for CPU budgets, any timm model, or an open_clip image tower (the
published EchoCLIP, whose video embedding is the mean of its frame embeddings).

Aggregations:

- ``mean``: EchoCLIP's video embedding: every frame is embedded (projected) and scaled
  to unit length, then the frames are averaged, in the published order; blind to
  motion. Zero-shot scoring can rank prompts per frame instead, as the published code
  does (:meth:`FrameTower.frame_embeddings`).
- ``stats``: mean, standard deviation and range (max - min) over time, concatenated,
  then an MLP. The spread over time is how much each feature changes through the
  heart cycle, which a per-frame network cannot see otherwise.
- ``transformer``: a small transformer over the frame sequence (PanEcho-style).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from echoclip.errors import ModelError
from echoclip.models.config import VideoTowerConfig


class ConvNet(nn.Module):
    """A plain CNN: blocks of 3x3 conv, batch norm, ReLU and 2x2 max-pool, then global average pooling.

    ``stem_stride=2`` makes the first convolution strided, which quarters the cost of
    every block: on a CPU that is the difference between minutes and a quarter hour.
    """

    def __init__(
        self, widths: Sequence[int] = (16, 32, 64, 128), in_channels: int = 3, stem_stride: int = 1
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i, width in enumerate(widths):
            layers += [
                nn.Conv2d(in_channels, width, 3, stride=stem_stride if i == 0 else 1, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            in_channels = width
        self.blocks = nn.Sequential(*layers)
        self.num_features = int(widths[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # oneDNN's convolutions run faster on channels-last input on the CPU
        return self.blocks(x.contiguous(memory_format=torch.channels_last)).mean(dim=(2, 3))


def build_frame_backbone(cfg: VideoTowerConfig, embed_dim: int) -> tuple[nn.Module, int]:
    """The per-frame image network and the width of its output features."""
    kwargs = dict(cfg.backbone_kwargs)
    if cfg.backbone == "convnet":
        net = ConvNet(**kwargs)
        return net, net.num_features
    if cfg.backbone == "timm":
        import timm

        name = kwargs.pop("model_name", None)
        if name is None:
            raise ModelError("video: a timm backbone needs backbone_kwargs.model_name")
        net = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
        return net, int(net.num_features)
    # open_clip: its image tower projects to the joint embedding itself
    from open_clip.model import CLIPVisionCfg, _build_vision_tower

    # the tower's image_size is the one source of truth (open_clip's vision_cfg repeats it)
    vision_cfg = {**kwargs.pop("vision_cfg", {}), "image_size": cfg.image_size}
    quick_gelu = bool(kwargs.pop("quick_gelu", False))
    if kwargs:
        raise ModelError(f"video: unknown open_clip backbone_kwargs {sorted(kwargs)}")
    vision_cfg.setdefault("timm_model_pretrained", False)
    if vision_cfg["timm_model_pretrained"]:
        raise ModelError("video: timm_model_pretrained would download weights; load a checkpoint instead")
    try:
        visual = _build_vision_tower(embed_dim, CLIPVisionCfg(**vision_cfg), quick_gelu=quick_gelu)
    except TypeError as e:
        raise ModelError(f"video: bad open_clip vision_cfg ({e})") from None
    return visual, embed_dim


class StatsAggregation(nn.Module):
    """``[B, T, C] -> [B, hidden]``: MLP of (mean, std, max - min) over time."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.LayerNorm(3 * channels),
            nn.Linear(3 * channels, hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
        )
        self.output_dim = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spread = x.amax(dim=1) - x.amin(dim=1)
        stats = torch.cat([x.mean(dim=1), x.std(dim=1, unbiased=False), spread], dim=-1)
        return self.mlp(stats)


class MeanAggregation(nn.Module):
    """``[B, T, C] -> [B, C]``: the average over frames (EchoCLIP)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.output_dim = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1)


class TemporalTransformer(nn.Module):
    """``[B, T, C] -> [B, C]``: learned frame positions, a pre-norm transformer, mean, norm."""

    def __init__(self, channels: int, num_frames: int, layers: int, heads: int) -> None:
        super().__init__()
        if channels % heads:
            raise ModelError(f"video: frame features of width {channels} cannot be split into {heads} heads")
        self.positions = nn.Parameter(torch.zeros(num_frames, channels))
        nn.init.normal_(self.positions, std=0.02)
        layer = nn.TransformerEncoderLayer(
            channels, heads, 4 * channels, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(channels)
        self.output_dim = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.encoder(x + self.positions[: x.shape[1]])
        return self.norm(x.mean(dim=1))


def build_aggregation(cfg: VideoTowerConfig, channels: int) -> nn.Module:
    if cfg.aggregation == "mean":
        return MeanAggregation(channels)
    if cfg.aggregation == "stats":
        return StatsAggregation(channels, cfg.hidden or channels)
    return TemporalTransformer(channels, cfg.num_frames, cfg.temporal_layers, cfg.temporal_heads)


class FrameTower(nn.Module):
    """Per-frame backbone + temporal aggregation + projection: ``[B, 3, T, H, W] -> [B, D]``."""

    def __init__(self, cfg: VideoTowerConfig, embed_dim: int) -> None:
        super().__init__()
        self.config = cfg
        self.backbone, channels = build_frame_backbone(cfg, embed_dim)
        self.aggregation = build_aggregation(cfg, channels)
        width = self.aggregation.output_dim
        if cfg.projection:
            self.proj: nn.Module = nn.Linear(width, embed_dim, bias=cfg.proj_bias)
        elif width != embed_dim:
            raise ModelError(
                f"video: projection is off but features have width {width}, not embed_dim {embed_dim}"
            )
        else:
            self.proj = nn.Identity()
        self.output_dim = embed_dim
        if cfg.grad_checkpointing:
            self.set_grad_checkpointing(True)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        setter: Any = getattr(self.backbone, "set_grad_checkpointing", None)
        if setter is not None:
            setter(enable)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Per-frame features ``[B, T, C]`` (for the open_clip backbone: frame embeddings)."""
        b, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)
        return self.backbone(frames).reshape(b, t, -1)

    @property
    def embeds_frames(self) -> bool:
        """Whether each frame has an embedding of its own (``mean`` aggregation, as EchoCLIP)."""
        return isinstance(self.aggregation, MeanAggregation)

    def frame_embeddings(self, x: torch.Tensor) -> torch.Tensor:
        """Unit-length embeddings of every frame, ``[B, T, D]`` (``mean`` aggregation only)."""
        if not self.embeds_frames:
            raise ModelError(
                f"video: a {self.config.aggregation!r} aggregation has no per-frame embeddings (only 'mean')"
            )
        return F.normalize(self.proj(self.forward_features(x)), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.embeds_frames:
            return self.aggregation(self.frame_embeddings(x))
        return self.proj(self.aggregation(self.forward_features(x)))
