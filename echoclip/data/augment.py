"""Light video augmentation for training, seeded per sample.

Every random choice of a sample - where its clip starts, its crop, its brightness -
comes from :func:`sample_rng` ``(seed, epoch, index)``, never from a global or
per-worker generator, so a run gives the same batches with 0, 2 or 16 DataLoader
workers and after a resume. Datasets call ``set_epoch`` and pass the generator to
the transform.

The augmentations are deliberately mild and global (one set of parameters per clip,
the same for every frame): echo motion and anatomy must survive them. No flips: a
mirrored apical view is a different view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from echoclip.data.scale import Zoom
from echoclip.data.transforms import ClipSampler, PreprocessConfig, VideoTransform

__all__ = ["AugmentConfig", "TrainTransform", "augment_clip", "augment_clip_zoom", "sample_rng"]


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random generator of sample ``index`` in ``epoch``: independent of workers and ranks."""
    return np.random.default_rng([int(seed), int(epoch), int(index)])


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random transforms (a range of ``(1, 1)`` or ``0`` turns one off).

    Attributes:
        scale: area fraction kept by the random resized crop.
        ratio: aspect ratio range of that crop.
        brightness: additive shift, uniform in ``[-brightness, brightness]`` (pixels in [0, 1]).
        contrast: multiplicative factor around the clip mean, uniform in ``1 ± contrast``.
        gamma: gamma exponent, log-uniform in this range.
        acquisition_p: the chance that each of ``acquisitions`` (perturbations of
            :mod:`echoclip.data.perturb`: a rib shadow, a wrong gain, ...) alters a clip,
            so the model learns to answer the same through them; 0 turns them off.
        acquisition_strength: their strength is uniform in ``[0, acquisition_strength]``
            (0.5: up to the documented moderate strength).
        acquisitions: the perturbations drawn; each must keep the frames' timing.
    """

    scale: tuple[float, float] = (0.8, 1.0)
    ratio: tuple[float, float] = (0.9, 1.1)
    brightness: float = 0.1
    contrast: float = 0.1
    gamma: tuple[float, float] = (0.8, 1.25)
    acquisition_p: float = 0.0
    acquisition_strength: float = 0.5
    acquisitions: tuple[str, ...] = ("depth_attenuation", "shadow", "speckle", "gain", "blur", "resolution")

    def __post_init__(self) -> None:
        from echoclip.data.perturb import PERTURBATIONS
        from echoclip.errors import ConfigError

        if not 0.0 <= self.acquisition_p <= 1.0 or not 0.0 <= self.acquisition_strength <= 1.0:
            raise ConfigError(
                f"acquisition_p and acquisition_strength must be in [0, 1], got "
                f"{self.acquisition_p} and {self.acquisition_strength}"
            )
        for name in self.acquisitions:
            PERTURBATIONS.get(name)  # an unknown name: ConfigError naming the known ones

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AugmentConfig:
        """From a recipe's ``[train.augment]`` table (lists become tuples)."""
        from echoclip.errors import ConfigError

        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown augment options {unknown}; known: {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def augment_clip(
    frames: np.ndarray, rng: np.random.Generator, config: AugmentConfig = AugmentConfig()
) -> Any:
    """Random resized crop, brightness, contrast and gamma on a clip ``uint8 [T,H,W,C]``.

    Returns ``float [C,T,H,W]`` in [0, 1]; :func:`augment_clip_zoom` also says how much
    the crop magnified the clip.
    """
    return augment_clip_zoom(frames, rng, config)[0]


def augment_clip_zoom(
    frames: np.ndarray, rng: np.random.Generator, config: AugmentConfig = AugmentConfig()
) -> tuple[Any, Zoom]:
    """:func:`augment_clip` and the magnification ``(x, y)`` of its crop (the clip's cm per
    pixel divides by it).

    The crop is resized in ``uint8`` (torch's
    channels-last fast path) and the intensity changes, which act on each grey level
    alike, are one lookup table of 256 levels: a clip costs a fraction of the same
    arithmetic on every float pixel. The histogram and the lookup run in NumPy, which
    reads the ``uint8`` pixels as they are (torch's ``bincount`` and ``index_select``
    want an ``int64`` copy of the clip first). A grey clip (every pixel's channels equal,
    as echo is) is augmented on one channel and repeated: the same result for a third of
    the work.
    """
    import torch
    import torch.nn.functional as F

    t, h, w, c = frames.shape
    area = h * w * rng.uniform(*config.scale)
    ratio = math.exp(rng.uniform(math.log(config.ratio[0]), math.log(config.ratio[1])))
    ch = int(round(min(h, math.sqrt(area / ratio))))
    cw = int(round(min(w, math.sqrt(area * ratio))))
    top = int(rng.integers(0, h - ch + 1))
    left = int(rng.integers(0, w - cw + 1))
    x = np.ascontiguousarray(frames)
    if (ch, cw) != (h, w):
        crop = torch.from_numpy(x)[:, top : top + ch, left : left + cw].permute(0, 3, 1, 2)  # channels-last
        x = F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False).permute(0, 2, 3, 1).numpy()
    if config.acquisition_p > 0:
        x = _acquisitions(x, rng, config)
    # after the resize, whose uint8 fast path wants 3 or 4 channels
    grey = c > 1 and all(np.array_equal(x[..., 0], x[..., k]) for k in range(1, c))
    if grey:
        x = np.ascontiguousarray(x[..., :1])
    gamma = math.exp(rng.uniform(math.log(config.gamma[0]), math.log(config.gamma[1])))
    contrast = 1.0 + rng.uniform(-config.contrast, config.contrast)
    brightness = rng.uniform(-config.brightness, config.brightness)
    levels = (np.arange(256, dtype=np.float64) / 255.0) ** gamma
    mean = float(np.bincount(x.reshape(-1), minlength=256) @ levels) / x.size
    levels = np.clip((levels - mean) * contrast + mean + brightness, 0.0, 1.0).astype(np.float32)
    out = np.take(levels, x.transpose(3, 0, 1, 2))  # a new, contiguous [C,T,H,W]
    return torch.from_numpy(np.repeat(out, c, axis=0) if grey else out), (w / cw, h / ch)


def _acquisitions(frames: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """Each of ``config.acquisitions`` applied with probability ``acquisition_p``, at a random strength."""
    from echoclip.data.perturb import PERTURBATIONS
    from echoclip.data.video import Video
    from echoclip.errors import ConfigError

    for name in config.acquisitions:
        if rng.random() >= config.acquisition_p:
            continue
        strength = rng.uniform(0.0, config.acquisition_strength)
        out = PERTURBATIONS.get(name)(Video(frames, 1.0, {}), strength, rng).frames
        if out.shape != frames.shape:
            raise ConfigError(f"perturbation {name!r} changes the clip's frames; it cannot augment a clip")
        frames = np.ascontiguousarray(out)
    return frames


class TrainTransform(VideoTransform):
    """The training transform: a random clip start and :func:`augment_clip`, seeded per sample.

    ``TrainTransform(preprocess, seed=0)`` plugs into :class:`~echoclip.data.datasets.Manifest`
    (and the other datasets) in place of :class:`VideoTransform`; the dataset derives
    each sample's generator from ``(seed, epoch, index)``.
    """

    def __init__(
        self,
        config: PreprocessConfig,
        seed: int = 0,
        augment: AugmentConfig | None = AugmentConfig(),
        start: str = "random",
        stride: int = 1,
        cycle: bool = False,
    ) -> None:
        super().__init__(config)
        self.seed = seed
        self.augment_config = augment
        self._sampler = ClipSampler(
            num_frames=config.num_frames,
            fps=config.fps,
            stride=stride,
            start=start,
            cycle=cycle,  # type: ignore[arg-type]
        )

    @property
    def sampler(self) -> ClipSampler:
        return self._sampler

    def augment(self, frames: np.ndarray, rng: np.random.Generator | None) -> tuple[Any, Zoom]:
        if self.augment_config is None or rng is None:
            return super().augment(frames, rng)
        return augment_clip_zoom(frames, rng, self.augment_config)

    def __repr__(self) -> str:
        return f"TrainTransform({self.config}, seed={self.seed}, augment={self.augment_config}, sampler={self._sampler})"
