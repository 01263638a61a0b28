"""Turning a :class:`Video` into the float tensor a model takes, ``[3, T, H, W]``.

:class:`PreprocessConfig` is saved as ``preprocess.json`` in a model directory, so
the exact inference transform travels with the weights (as open_clip's
``preprocess_cfg`` does).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

import numpy as np

from echoclip.data.scale import (
    Scale,
    Zoom,
    as_scale,
    cropped_scale,
    resample_to_field,
    scale_tensor,
    zoomed_scale,
)
from echoclip.data.video import Video

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
        field_cm: the physical field of view of a clip (see :mod:`echoclip.data.scale`):
            a clip of known scale is resampled to a ``field_cm`` square, so a pixel is
            always ``field_cm / image_size`` cm; ``None`` resizes the whole frame.
    """

    image_size: int = 112
    num_frames: int = 16
    fps: float | None = None
    mean: tuple[float, float, float] = ECHO_MEAN
    std: tuple[float, float, float] = ECHO_STD
    field_cm: float | None = None

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


@dataclass(frozen=True)
class ClipSampler:
    """Which source frames make a clip.

    Attributes:
        num_frames: frames per clip.
        fps: frame rate the clip is resampled to (``None``: the source rate).
        stride: take every ``stride``-th frame at that rate (a longer time span).
        start: ``"center"`` (inference), ``"random"`` (training) or ``"first"``.
        cycle: spread ``num_frames`` over exactly one cardiac cycle instead (needs
            the heart rate, or frames to estimate the period from).

    A clip longer than the video wraps around: an echo cine is a loop.
    """

    num_frames: int = 16
    fps: float | None = None
    stride: int = 1
    start: Literal["center", "random", "first"] = "center"
    cycle: bool = False

    def __post_init__(self) -> None:
        if self.num_frames < 1 or self.stride < 1:
            raise ValueError(f"num_frames and stride must be >= 1, got {self.num_frames}, {self.stride}")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"fps must be positive or None, got {self.fps}")
        if self.start not in ("center", "random", "first"):
            raise ValueError(f"start must be 'center', 'random' or 'first', got {self.start!r}")

    def step(self, source_fps: float, cycle_frames: float | None = None) -> float:
        """Source frames between two clip frames."""
        if self.cycle:
            if cycle_frames is None or not cycle_frames > 0:
                raise ValueError("cycle sampling needs the length of a cardiac cycle")
            return cycle_frames / self.num_frames
        return (1.0 if self.fps is None else source_fps / self.fps) * self.stride

    def output_fps(self, source_fps: float, cycle_frames: float | None = None) -> float:
        """Frame rate of the clip (for a cycle clip: what makes one beat last its real time)."""
        return source_fps / self.step(source_fps, cycle_frames)

    def indices(
        self,
        num_frames: int,
        source_fps: float,
        rng: np.random.Generator | None = None,
        cycle_frames: float | None = None,
    ) -> np.ndarray:
        """Indices into a video of ``num_frames`` frames at ``source_fps``.

        ``rng`` draws the random start (required for ``start="random"``);
        ``cycle_frames`` is the length of one cardiac cycle in source frames.
        """
        if num_frames <= 0:
            raise ValueError("a video with no frames has no clips")
        step = self.step(source_fps, cycle_frames)
        span = step * (self.num_frames - 1) + 1
        room = int(math.floor(num_frames - span))
        if room <= 0 or self.start == "first":
            first = 0
        elif self.start == "random":
            if rng is None:
                raise ValueError("a random clip start needs rng")
            first = int(rng.integers(0, room + 1))
        else:
            first = room // 2
        idx = first + np.floor(np.arange(self.num_frames) * step + 1e-6).astype(np.int64)
        return idx % num_frames

    def spread(self, num_frames: int, source_fps: float, n: int) -> list[np.ndarray]:
        """Indices of ``n`` clips spread evenly along the video (test-time clip averaging).

        One clip is the centred clip of :meth:`indices`; a video shorter than a clip
        gives clips that all start at 0 (they loop, as the cine does).
        """
        if n < 1:
            raise ValueError(f"clips per video must be at least 1, got {n}")
        if n == 1:
            return [replace(self, start="center").indices(num_frames, source_fps)]
        step = self.step(source_fps)
        offsets = np.floor(np.arange(self.num_frames) * step + 1e-6).astype(np.int64)
        room = max(0, int(math.floor(num_frames - (step * (self.num_frames - 1) + 1))))
        starts = np.linspace(0, room, n).round().astype(np.int64)
        return [(s + offsets) % num_frames for s in starts]


def resize_clip_uint8(frames: np.ndarray, size: int) -> np.ndarray:
    """``uint8 [T,H,W,3]`` resized (short side, antialiased bilinear) and centre-cropped to ``size``.

    Resizing stays in ``uint8`` (torch's channels-last fast path, much faster than in
    floats); every path uses this one function - the transforms, preloaded datasets and
    preprocessed shards - so a clip is the same whichever way it was read.
    """
    import torch
    import torch.nn.functional as F

    t, h, w, _ = frames.shape
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    if (nh, nw) == (h, w) == (size, size):
        return frames
    if (nh, nw) != (h, w):
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # channels-last view
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
        frames = x.permute(0, 2, 3, 1).numpy()
    top, left = (nh - size) // 2, (nw - size) // 2
    return np.ascontiguousarray(frames[:, top : top + size, left : left + size])


class VideoTransform:
    """Deterministic inference transform: sample, resize, crop, normalise.

    ``VideoTransform(cfg)(video)`` returns ``float32 [3, num_frames, size, size]``. The
    frames of a :class:`Video` are chosen by :attr:`sampler` (a centred clip at the
    config's frame rate), the one rule for training, indexing and queries alike.
    Datasets read only those frames and pass the clip as an array, taken as is when it
    has ``num_frames`` frames; an array of another length is a video at the config's
    frame rate and is sampled the same way.
    """

    def __init__(self, config: PreprocessConfig) -> None:
        self.config = config

    @property
    def sampler(self) -> ClipSampler:
        """Which frames a dataset should read for this transform: a centred clip."""
        return ClipSampler(num_frames=self.config.num_frames, fps=self.config.fps, start="center")

    def __call__(
        self, video: Video | np.ndarray, rng: np.random.Generator | None = None, cm_per_px: Any = None
    ) -> Any:
        """The model input of ``video``; ``rng`` drives random clip starts and augmentation
        in subclasses that augment. ``cm_per_px`` is the scale of frames given as an array
        (a :class:`Video` carries its own in ``meta``)."""
        return self.scaled(video, rng, cm_per_px)[0]

    def scaled(
        self, video: Video | np.ndarray, rng: np.random.Generator | None = None, cm_per_px: Any = None
    ) -> tuple[Any, Any]:
        """The model input and its scale: ``(float32 [3, T, S, S], float32 [2])``, the
        centimetres per input pixel (x, y) after every resize and crop, NaN where unknown
        (what :meth:`EchoCLIP.encode_video`'s ``cm_per_px`` takes)."""
        cfg = self.config
        if isinstance(video, Video):
            frames = video.frames[self.sampler.indices(video.num_frames, video.fps, rng)]
            cm_per_px = video.meta.get("cm_per_px") if cm_per_px is None else cm_per_px
        else:
            frames = np.asarray(video)
            if frames.shape[0] != cfg.num_frames:
                frames = frames[self.sampler.indices(frames.shape[0], cfg.fps or 1.0, rng)]
        return self._to_input(frames, rng, cm_per_px)

    def clips(self, video: Video, n: int) -> Any:
        """``n`` clips spread along ``video`` (:meth:`ClipSampler.spread`), ``float32 [n, 3, T, H, W]``."""
        return self.scaled_clips(video, n)[0]

    def scaled_clips(self, video: Video, n: int) -> tuple[Any, Any]:
        """:meth:`clips` and their scale (one for all: ``float32 [2]``, as :meth:`scaled`)."""
        import torch

        spread = self.sampler.spread(video.num_frames, video.fps, n)
        scale = video.meta.get("cm_per_px")
        inputs = [self._to_input(video.frames[idx], None, scale) for idx in spread]
        return torch.stack([x for x, _ in inputs]), inputs[0][1]

    def resized(self, frames: np.ndarray, cm_per_px: Any = None) -> tuple[np.ndarray, Scale | None]:
        """Frames at the model's size and field of view, and their scale after it (``None``: unknown).

        The one geometric step of every path (transforms, preloaded datasets, shards).
        """
        cfg = self.config
        scale = as_scale(cm_per_px)
        if cfg.field_cm and scale is not None:
            out = resample_to_field(np.asarray(frames), scale, cfg.field_cm, cfg.image_size)
            return out, (cfg.field_cm / cfg.image_size,) * 2
        _, h, w, _ = np.shape(frames)
        return resize_clip_uint8(np.asarray(frames), cfg.image_size), cropped_scale(
            scale, h, w, cfg.image_size
        )

    def _to_input(
        self, frames: np.ndarray, rng: np.random.Generator | None = None, cm_per_px: Any = None
    ) -> tuple[Any, Any]:
        import torch

        cfg = self.config
        frames, scale = self.resized(frames, cm_per_px)
        x, zoom = self.augment(frames, rng)
        mean = torch.tensor(cfg.mean).view(3, 1, 1, 1)
        std = torch.tensor(cfg.std).view(3, 1, 1, 1)
        return ((x - mean) / std).contiguous(), scale_tensor(zoomed_scale(scale, zoom))

    def augment(self, frames: np.ndarray, rng: np.random.Generator | None) -> tuple[Any, Zoom]:
        """Hook between resizing and normalisation: ``uint8 [T,H,W,C]`` to ``float [C,T,H,W]`` in [0, 1],
        and the magnification ``(x, y)`` it applied (a crop resized up), which divides the scale.

        Here only the conversion; training transforms augment on the way.
        """
        import torch

        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float().div_(255.0)
        return x, (1.0, 1.0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"
