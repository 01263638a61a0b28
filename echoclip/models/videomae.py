"""The ``videomae`` video tower: transformers' ``VideoMAEModel`` (a ViT over space-time
tubelets), pooled to one vector and projected.

The encoder is built with ``use_mean_pooling=True`` (no final norm on the tokens), the
layout ``VideoMAEForPreTraining`` uses, so masked pretraining can put ``self.model``
into a VideoMAE pretraining model and the weights come back unchanged.
``forward_features(x, bool_masked_pos)`` is the path masked pretraining calls.
"""

from __future__ import annotations

import torch
from torch import nn

from echoclip.errors import ModelError
from echoclip.models.checkpointing import set_hf_checkpointing
from echoclip.models.config import VideoTowerConfig


class VideoMAETower(nn.Module):
    """``[B, 3, T, H, W] -> [B, D]``: VideoMAE encoder, mean or attentive pooling, projection."""

    def __init__(self, cfg: VideoTowerConfig, embed_dim: int) -> None:
        super().__init__()
        from open_clip.transformer import AttentionalPooler
        from transformers import AutoModel, VideoMAEConfig

        self.config = cfg
        hf_config = VideoMAEConfig(
            image_size=cfg.image_size,
            patch_size=cfg.patch_size,
            num_channels=3,
            num_frames=cfg.num_frames,
            tubelet_size=cfg.tubelet_size,
            hidden_size=cfg.width,
            num_hidden_layers=cfg.layers,
            num_attention_heads=cfg.heads,
            intermediate_size=int(cfg.width * cfg.mlp_ratio),
            use_mean_pooling=True,
        )
        self.model = AutoModel.from_config(hf_config, attn_implementation="sdpa")
        if cfg.pool == "attentive":
            self.pool: nn.Module = AttentionalPooler(cfg.width, cfg.width, n_head=cfg.heads, n_queries=1)
        else:
            self.pool = nn.LayerNorm(cfg.width)
        if not cfg.projection and cfg.width != embed_dim:
            raise ModelError(
                f"video: projection is off but the width {cfg.width} is not embed_dim {embed_dim}"
            )
        self.proj = nn.Linear(cfg.width, embed_dim, bias=cfg.proj_bias) if cfg.projection else nn.Identity()
        self.output_dim = embed_dim
        if cfg.grad_checkpointing:
            self.set_grad_checkpointing(True)

    @property
    def num_patches(self) -> int:
        """Tokens per clip: ``(T / tubelet) * (S / patch)**2``, the length of ``bool_masked_pos``."""
        cfg = self.config
        return (cfg.num_frames // cfg.tubelet_size) * (cfg.image_size // cfg.patch_size) ** 2

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        set_hf_checkpointing(self.model, enable)

    def forward_features(self, x: torch.Tensor, bool_masked_pos: torch.Tensor | None = None) -> torch.Tensor:
        """Encoder tokens ``[B, N, width]``; with ``bool_masked_pos [B, num_patches]`` only the visible ones."""
        pixel_values = x.transpose(1, 2)  # VideoMAE takes [B, T, C, H, W]
        return self.model(pixel_values, bool_masked_pos=bool_masked_pos).last_hidden_state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.forward_features(x)
        if isinstance(self.pool, nn.LayerNorm):
            pooled = self.pool(tokens.mean(dim=1))
        else:
            pooled = self.pool(tokens)[:, 0]
        return self.proj(pooled)
