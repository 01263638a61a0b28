"""The ``torchvision`` video tower: a video network of ``torchvision.models.video``,
built with ``weights=None`` (nothing is downloaded), its classifier replaced by a
projection to the joint embedding.

``r2plus1d_18`` is the EchoNet-Dynamic ejection-fraction model; ``mvit_v2_s`` is
EchoPrime's video encoder (it takes exactly 16 frames of 224 x 224).
"""

from __future__ import annotations

import torch
from torch import nn

from echoclip.errors import ModelError
from echoclip.models.config import VideoTowerConfig

# model name -> attribute holding its classifier
TORCHVISION_HEADS: dict[str, str] = {
    "r2plus1d_18": "fc",
    "r3d_18": "fc",
    "mc3_18": "fc",
    "mvit_v1_b": "head",
    "mvit_v2_s": "head",
    "swin3d_t": "head",
    "swin3d_s": "head",
    "swin3d_b": "head",
}


def _last_linear(module: nn.Module) -> nn.Linear:
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ModelError(f"no linear classifier found in {type(module).__name__}")
    return linears[-1]


class TorchvisionTower(nn.Module):
    """``[B, 3, T, H, W] -> [B, D]``: a torchvision video backbone without its classifier, then a projection."""

    def __init__(self, cfg: VideoTowerConfig, embed_dim: int) -> None:
        super().__init__()
        import torchvision

        name = cfg.backbone
        if name not in TORCHVISION_HEADS:
            raise ModelError(
                f"video: unknown torchvision video model {name!r}; known: {sorted(TORCHVISION_HEADS)}"
            )
        self.config = cfg
        self.backbone = torchvision.models.get_model(name, weights=None, **cfg.backbone_kwargs)
        head = TORCHVISION_HEADS[name]
        width = _last_linear(getattr(self.backbone, head)).in_features
        setattr(self.backbone, head, nn.Identity())
        self.proj = nn.Linear(width, embed_dim, bias=cfg.proj_bias) if cfg.projection else nn.Identity()
        if not cfg.projection and width != embed_dim:
            raise ModelError(
                f"video: projection is off but {name} features have width {width}, not {embed_dim}"
            )
        self.output_dim = embed_dim

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features ``[B, C]``."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.forward_features(x))
