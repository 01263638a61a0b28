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
from echoclip.registry import Registry

VIDEO_TOWERS: Registry[Callable[[VideoTowerConfig, int], nn.Module]] = Registry("video tower", ModelError)
VIDEO_TOWERS["videomae"] = VideoMAETower
VIDEO_TOWERS["frames"] = FrameTower
VIDEO_TOWERS["torchvision"] = TorchvisionTower


def build_video_tower(cfg: VideoTowerConfig, embed_dim: int) -> nn.Module:
    return VIDEO_TOWERS.get(cfg.kind)(cfg, embed_dim)
