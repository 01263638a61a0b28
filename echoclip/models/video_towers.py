"""Registry of video towers: ``build_video_tower(cfg, embed_dim)`` dispatches on ``cfg.kind``.

Every tower takes ``[B, 3, T, H, W]`` and has ``forward -> [B, D]``,
``forward_features`` (tokens or per-frame features) and ``output_dim``. Users add a
kind with ``VIDEO_TOWERS["mine"] = MyTower`` (a class taking ``(cfg, embed_dim)``).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from echoclip.errors import ModelError
from echoclip.models.config import VideoTowerConfig
from echoclip.models.frames import FrameTower
from echoclip.models.torchvision_towers import TorchvisionTower
from echoclip.models.videomae import VideoMAETower

VIDEO_TOWERS: dict[str, Callable[[VideoTowerConfig, int], nn.Module]] = {
    "videomae": VideoMAETower,
    "frames": FrameTower,
    "torchvision": TorchvisionTower,
}


def build_video_tower(cfg: VideoTowerConfig, embed_dim: int) -> nn.Module:
    try:
        tower = VIDEO_TOWERS[cfg.kind]
    except KeyError:
        raise ModelError(f"unknown video tower {cfg.kind!r}; known: {sorted(VIDEO_TOWERS)}") from None
    return tower(cfg, embed_dim)
