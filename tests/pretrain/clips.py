"""A small in-memory data set of beating clips for pretraining tests (no files, no decoding).

Each clip shows a dark disc (the ventricle) that shrinks and refills once per beat,
in noise; its ``ef`` is the fraction of area lost at the smallest, so the label is
visible only in the motion.
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import Dataset


class BeatingClips(Dataset):
    def __init__(self, n: int, frames: int = 8, size: int = 32, seed: int = 0, noise: float = 0.3) -> None:
        self.n, self.frames, self.size, self.seed, self.noise = n, frames, size, seed, noise

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        g = torch.Generator().manual_seed(self.seed * 100_000 + index)
        shrink = 0.1 + 0.5 * float(torch.rand((), generator=g))  # radius lost at end-systole
        period = 4.0 + 4.0 * float(torch.rand((), generator=g))
        phase = float(torch.rand((), generator=g))
        cx, cy = (0.4 + 0.2 * torch.rand(2, generator=g)).tolist()
        yy, xx = torch.meshgrid(
            torch.linspace(0, 1, self.size), torch.linspace(0, 1, self.size), indexing="ij"
        )
        t = torch.arange(self.frames, dtype=torch.float32)
        radius = 0.3 * (1 - shrink * torch.sin(math.pi * (t / period + phase)) ** 2)  # [T]
        inside = ((yy - cy) ** 2 + (xx - cx) ** 2)[None] < radius[:, None, None] ** 2
        frames = torch.where(inside, -0.5, 1.0) + self.noise * torch.randn(
            self.frames, self.size, self.size, generator=g
        )
        ef = 100 * (1 - (1 - shrink) ** 2)
        return {
            "video": frames[None].repeat(3, 1, 1, 1),
            "ef": ef,
            "labels": {"ef": ef},
            "patient_id": f"p{index // 2}",
            "report": "",
            "index": index,
        }
