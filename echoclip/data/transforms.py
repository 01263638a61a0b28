"""Turning a :class:`Video` into the float tensor a model takes, ``[3, T, H, W]``.

:class:`PreprocessConfig` is saved as ``preprocess.json`` in a model directory, so
the exact inference transform travels with the weights (as open_clip's
``preprocess_cfg`` does).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from echoclip.data.video import Video, frame_indices

# OpenAI CLIP normalisation; the published EchoCLIP uses it too.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# Echo frames are mostly black with grey speckle.
ECHO_MEAN = (0.12, 0.12, 0.12)
ECHO_STD = (0.19, 0.19, 0.19)


@dataclass(frozen=True)
class PreprocessConfig:
    """How a video becomes model input.

    Attributes:
        image_size: output height and width (square, after resize and centre crop).
        num_frames: frames per clip.
        fps: frames per second the clip is resampled to; ``None`` keeps the source rate.
        mean, std: per-channel normalisation of pixel values in [0, 1].
    """

    image_size: int = 112
    num_frames: int = 16
    fps: float | None = None
    mean: tuple[float, float, float] = ECHO_MEAN
    std: tuple[float, float, float] = ECHO_STD

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown preprocess keys {unknown}; known: {sorted(known)}")
        d = dict(d)
        for key in ("mean", "std"):
            if key in d:
                d[key] = tuple(float(v) for v in d[key])
        return cls(**d)


def sample_clip(video: Video, num_frames: int, fps: float | None = None, start: int | None = None) -> np.ndarray:
    """``num_frames`` frames of ``video`` at ``fps`` (looping a short cine), centred by default."""
    step = 1.0 if fps is None else video.fps / fps
    span = int(np.ceil(num_frames * step))
    if start is None:
        start = max(0, (video.num_frames - span) // 2)
    idx = frame_indices(video.num_frames, video.fps, n=num_frames, target_fps=fps, start=start)
    return video.frames[idx]


def resize_center_crop(frames: Any, size: int) -> Any:
    """Resize the short side to ``size`` and centre-crop: ``float [C,T,H,W]`` in and out."""
    import torch.nn.functional as F

    c, t, h, w = frames.shape
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    if (nh, nw) != (h, w):
        x = frames.permute(1, 0, 2, 3)  # [T,C,H,W]
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
        frames = x.permute(1, 0, 2, 3)
    top, left = (nh - size) // 2, (nw - size) // 2
    return frames[:, :, top : top + size, left : left + size]


class VideoTransform:
    """Deterministic inference transform: sample, resize, crop, normalise.

    ``VideoTransform(cfg)(video)`` returns ``float32 [3, num_frames, size, size]``.
    """

    def __init__(self, config: PreprocessConfig) -> None:
        self.config = config

    def __call__(self, video: Video | np.ndarray) -> Any:
        import torch

        cfg = self.config
        frames = video.frames if isinstance(video, Video) else np.asarray(video)
        if isinstance(video, Video):
            frames = sample_clip(video, cfg.num_frames, cfg.fps)
        elif frames.shape[0] != cfg.num_frames:
            idx = np.linspace(0, frames.shape[0] - 1, cfg.num_frames).round().astype(int)
            frames = frames[idx]
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float().div_(255.0)
        x = resize_center_crop(x, cfg.image_size)
        mean = torch.tensor(cfg.mean).view(3, 1, 1, 1)
        std = torch.tensor(cfg.std).view(3, 1, 1, 1)
        return ((x - mean) / std).contiguous()

    def __repr__(self) -> str:
        return f"VideoTransform({self.config})"
