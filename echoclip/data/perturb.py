"""Seeded acquisition perturbations of echo videos, for measuring how robust a model is.

A real acquisition differs from the training data in ways a model should survive: a rib
shadow, a badly set gain or time-gain compensation, a coarser or slower scan. Each
perturbation here imitates one of them on the decoded frames (``uint8 [T, H, W, 3]``,
before the model's resize, where a different acquisition would differ), with a
strength in [0, 1]: 0 is the identity, 0.25 mild, 0.5 moderate (the default), 1.0
severe; each function's docstring says what that means physically. Randomness (the
shadow's angle, the noise) comes from ``(seed, video index, perturbation name)``: the
same seed gives the same perturbed clip, and a strength sweep keeps the same draws::

    spec = parse_perturbations("shadow:0.5,blur")      # [Perturbation('shadow', 0.5), ...]
    noisy = spec[0](video, seed=0, index=3)            # a Video
    data = PerturbedDataset(open_dataset("runs/sim", "test", transform), spec[0])

Perturbations are registered by name in :data:`PERTURBATIONS`; add one with
:func:`register_perturbation`::

    @register_perturbation("invert")
    def invert(frames, strength, rng):
        return (frames * (1 - strength) + (255 - frames) * strength).astype(np.uint8)

Frames are taken with the sector apex at the top centre of the frame, as scanners
display them (and as the simulator draws them).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from echoclip.data.video import Video, load_video
from echoclip.errors import ConfigError, VideoReadError
from echoclip.registry import Registry

__all__ = [
    "MODERATE",
    "PERTURBATIONS",
    "Perturbation",
    "PerturbedDataset",
    "parse_perturbations",
    "perturbation_rng",
    "register_perturbation",
]

MODERATE = 0.5  # the strength of a name given without one

VideoPerturbation = Callable[[Video, float, np.random.Generator], Video]
FramePerturbation = Callable[[np.ndarray, float, np.random.Generator], np.ndarray]

PERTURBATIONS: Registry[VideoPerturbation] = Registry("perturbation")


def register_perturbation(name: str, *, video: bool = False, overwrite: bool = False) -> Callable[[Any], Any]:
    """Decorator: register a perturbation under ``name``.

    By default the function maps frames to frames, ``(uint8 [T,H,W,3], strength, rng) ->
    uint8 [T,H,W,3]`` (any number of frames, any frame size); with ``video=True`` it maps a
    :class:`Video` to a :class:`Video`, for perturbations that change the timing.
    """

    def decorator(fn: Any) -> Any:
        if video:
            PERTURBATIONS.add(name, fn, overwrite=overwrite)
            return fn

        def on_video(v: Video, strength: float, rng: np.random.Generator) -> Video:
            frames = np.asarray(fn(v.frames, strength, rng))
            if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
                raise ValueError(
                    f"perturbation {name!r} returned {frames.dtype} {tuple(frames.shape)}, not uint8 [T,H,W,3]"
                )
            return Video(frames, v.fps, dict(v.meta))

        on_video.__doc__ = fn.__doc__
        on_video.__name__ = getattr(fn, "__name__", name)
        PERTURBATIONS.add(name, on_video, overwrite=overwrite)
        return fn

    return decorator


def perturbation_rng(seed: int, index: int, name: str) -> np.random.Generator:
    """The random generator of perturbation ``name`` on video ``index``: independent of the
    strength (a sweep moves the same shadow), of other perturbations and of read order."""
    return np.random.default_rng([int(seed), int(index), zlib.crc32(name.encode())])


@dataclass(frozen=True)
class Perturbation:
    """A registered perturbation at one strength; calling it perturbs a :class:`Video`."""

    name: str
    strength: float = MODERATE

    def __post_init__(self) -> None:
        PERTURBATIONS.get(self.name)  # an unknown name: ConfigError listing the known ones
        strength = float(self.strength)
        if not 0.0 <= strength <= 1.0:  # NaN fails too
            raise ConfigError(
                f"perturbation {self.name!r}: strength {self.strength!r} is outside [0, 1] "
                "(0.25 mild, 0.5 moderate, 1 severe)"
            )
        object.__setattr__(self, "strength", strength)

    @property
    def label(self) -> str:
        """``name:strength``, as :func:`parse_perturbations` reads it."""
        return f"{self.name}:{self.strength:g}"

    @property
    def folder(self) -> str:
        """A folder name for this perturbation's outputs (no ``:``, which some file systems refuse)."""
        return f"{self.name}-{self.strength:g}"

    def __call__(self, video: Video, *, seed: int = 0, index: int = 0) -> Video:
        """``video`` perturbed; strength 0 returns it unchanged."""
        if self.strength == 0.0:
            return video
        out = PERTURBATIONS.get(self.name)(video, self.strength, perturbation_rng(seed, index, self.name))
        if not isinstance(out, Video):
            raise ValueError(f"perturbation {self.name!r} returned a {type(out).__name__}, not a Video")
        return out


def parse_perturbations(spec: str | Sequence[str]) -> list[Perturbation]:
    """``"shadow:0.5,blur"`` (or ``["shadow:0.5", "blur"]``) as perturbations, in order.

    A name without a strength gets :data:`MODERATE`. An unknown name, a strength that is
    not a number in [0, 1], the same perturbation twice, or nothing at all is a
    :class:`ConfigError` that names the valid choices.
    """
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    items = [item.strip() for item in items if item and item.strip()]
    if not items:
        raise ConfigError(f"no perturbation given; known: {PERTURBATIONS.names()}")
    out: list[Perturbation] = []
    for item in items:
        name, _, text = item.partition(":")
        name = name.strip()
        if name not in PERTURBATIONS:
            raise ConfigError(f"unknown perturbation {name!r} in {item!r}; known: {PERTURBATIONS.names()}")
        try:
            strength = float(text) if text.strip() else MODERATE
        except ValueError:
            raise ConfigError(
                f"perturbation {item!r}: strength {text.strip()!r} is not a number in [0, 1]"
            ) from None
        perturbation = Perturbation(name, strength)
        if perturbation in out:
            raise ConfigError(f"perturbation {perturbation.label!r} is given twice")
        out.append(perturbation)
    return out


# ---------------------------------------------------------------------------------------
# the built-in perturbations


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _polar(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Depth from the apex (top centre) in frame heights, and the angle from straight down
    in degrees (positive to the right), per pixel ``[H, W]``."""
    dy = np.arange(height, dtype=np.float32)[:, None]
    dx = np.arange(width, dtype=np.float32)[None, :] - (width - 1) / 2.0
    depth = np.hypot(dy, dx) / max(height - 1, 1)
    return depth, np.degrees(np.arctan2(dx, dy))


@register_perturbation("depth_attenuation")
def depth_attenuation(frames: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Attenuation the time-gain compensation leaves uncorrected: brightness ``exp(-3·s·d)``
    at depth ``d`` from the apex (in frame heights).

    At the bottom of the frame the image keeps 47 % (-6.5 dB) at 0.25, mild (a slightly
    low far-field TGC); 22 % (-13 dB) at 0.5, moderate (an attenuating patient, or a
    higher-frequency probe); 5 % (-26 dB) at 1.0, severe (the far field nearly lost).
    """
    depth, _ = _polar(frames.shape[1], frames.shape[2])
    gain = np.exp(-3.0 * strength * depth)
    return _to_uint8(frames * gain[None, :, :, None])


SHADOW_CENTRE_DEG = 25.0  # the shadow's axis is drawn within this angle of straight down
SHADOW_EDGE_DEG = 2.0  # the Gaussian edge's standard deviation; the wedge ends at 3 of them


def shadow_half_width(strength: float) -> float:
    """Half the angle of a shadow's fully darkened core, in degrees: ``6 + 8·s``."""
    return 6.0 + 8.0 * strength


@register_perturbation("shadow")
def shadow(frames: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """A rib shadow: a wedge from the apex, at an angle drawn within ±25° of straight down,
    whose core is darkened by ``s`` (brightness ``1 - s``) with Gaussian edges (σ 2°)
    that reach zero 6° beyond it; nothing outside the wedge changes.

    0.25, mild: a 16°-wide core at 75 % brightness (a rib edge at the window's margin);
    0.5, moderate: 20° at half brightness; 1.0, severe: 28° fully black (a rib squarely
    in the beam's path).
    """
    _, angle = _polar(frames.shape[1], frames.shape[2])
    centre = rng.uniform(-SHADOW_CENTRE_DEG, SHADOW_CENTRE_DEG)
    beyond = np.maximum(np.abs(angle - centre) - shadow_half_width(strength), 0.0) / SHADOW_EDGE_DEG
    floor = math.exp(-4.5)  # the Gaussian at 3 sigma: subtracted so the edge meets zero exactly
    profile = np.where(beyond < 3.0, (np.exp(-0.5 * beyond**2) - floor) / (1.0 - floor), 0.0)
    darken = (1.0 - strength * profile).astype(np.float32)
    out = frames * darken[None, :, :, None]
    return np.where((profile > 0)[None, :, :, None], _to_uint8(out), frames)


RAYLEIGH_CV = math.sqrt(4.0 / math.pi - 1.0)  # std / mean of a Rayleigh amplitude: 0.523


@register_perturbation("speckle")
def speckle(frames: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Multiplicative speckle: every pixel of every frame times a gamma-distributed factor of
    mean 1 and coefficient of variation ``0.523·s`` (the same factor in the three channels).

    At 1.0, severe, as rough as fully developed (Rayleigh) speckle on top of the image's
    own; 0.5, moderate, and 0.25, mild, half and a quarter of that (a noisier probe or
    a lower transmit power). The mean brightness is kept, up to clipping at 255.
    """
    cv = RAYLEIGH_CV * strength
    if cv == 0.0:
        return frames.copy()
    shape = 1.0 / cv**2
    factor = rng.gamma(shape, 1.0 / shape, size=frames.shape[:3]).astype(np.float32)
    return _to_uint8(frames * factor[..., None])


GAIN_DB = 12.0  # the gain change at strength 1


@register_perturbation("gain")
def gain(frames: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Overall gain up or down (the direction drawn per video) by ``12·s`` dB, clipped to [0, 255].

    0.25, mild: ±3 dB (×1.41 or ×0.71); 0.5, moderate: ±6 dB (×2 or ×0.5, bright
    blood pool or a dim myocardium); 1.0, severe: ±12 dB (×4, saturated, or ×0.25).
    """
    sign = 1.0 if rng.random() < 0.5 else -1.0
    return _to_uint8(frames * np.float32(10.0 ** (sign * GAIN_DB * strength / 20.0)))


@register_perturbation("blur")
def blur(frames: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """A wider beam: Gaussian blur with σ ``3·s`` % of the width laterally and ``1·s`` % of
    the height axially (lateral resolution is the poorer one in ultrasound).

    On a 16 cm field, 0.25, mild, adds σ 1.2 mm laterally (a slightly defocused beam);
    0.5, moderate, 2.4 mm (a low-frequency probe at depth); 1.0, severe, 4.8 mm.
    """
    from scipy.ndimage import gaussian_filter

    _, h, w, _ = frames.shape
    sigma = (0.0, 0.01 * strength * h, 0.03 * strength * w, 0.0)
    return _to_uint8(gaussian_filter(frames.astype(np.float32), sigma=sigma, mode="nearest"))


@register_perturbation("resolution")
def resolution(frames: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Fewer scan lines and samples: each side downsampled by ``2^(-2s)`` (antialiased), then
    upsampled back to the frame's size, so the physical scale is unchanged.

    0.25, mild: 71 % of the pixels each way (a lower line density); 0.5, moderate: half
    (a low-resolution export); 1.0, severe: a quarter.
    """
    import torch
    import torch.nn.functional as F

    _, h, w, _ = frames.shape
    factor = 2.0 ** (-2.0 * strength)
    small = (max(2, round(h * factor)), max(2, round(w * factor)))
    if small == (h, w):
        return frames
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=small, mode="bilinear", align_corners=False, antialias=True)
    x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    return _to_uint8(x.permute(0, 2, 3, 1).numpy())


def frame_rate_step(strength: float) -> int:
    """Frames kept: one in ``1 + ceil(3·s)`` (2 at 0.25, 3 at 0.5, 4 at 1.0)."""
    return 1 + math.ceil(3.0 * strength - 1e-9)


@register_perturbation("frame_rate", video=True)
def frame_rate(video: Video, strength: float, rng: np.random.Generator) -> Video:
    """A slower acquisition: every k-th frame kept (from a random first one) and the frame
    rate divided by k, so the clip sampler resamples to the model's rate.

    0.25, mild: half the frame rate (50 to 25 fps: a wider sector or a colour
    acquisition); 0.5, moderate: a third; 1.0, severe: a quarter (12.5 fps: too slow for
    valve motion). A model that keeps the source rate (no ``fps`` in its preprocessing)
    sees a clip spanning k times as long instead.
    """
    k = frame_rate_step(strength)
    first = int(rng.integers(0, min(k, video.num_frames)))
    frames = video.frames[first::k]
    meta = dict(video.meta)
    for key, value in (("fps", video.fps / k), ("num_frames", len(frames))):
        if key in meta:
            meta[key] = value
    return Video(frames, video.fps / k, meta)


# ---------------------------------------------------------------------------------------
# datasets


class PerturbedDataset:
    """A clip dataset whose videos are perturbed between decoding and clip sampling.

    Each video is decoded whole, perturbed (with ``seed`` and its row index), and then cut
    and transformed exactly as the dataset's own items are
    (:meth:`~echoclip.data.datasets.ClipDataset.item_from_video`), so the model's resize
    comes after the perturbation and ``cm_per_px`` is the dataset's. Every other attribute
    (``table``, ``skipped``, ...) is the wrapped dataset's. Strength 0 gives the clean items.
    """

    def __init__(self, dataset: Any, perturbation: Perturbation | str, seed: int = 0) -> None:
        needed = ("video_path", "file_options", "item_from_video", "skipped")
        if not all(hasattr(dataset, name) for name in needed):
            raise ConfigError(
                f"perturbations need a data set that reads video files (a manifest, a data set folder "
                f"or a ClipDataset), not a {type(dataset).__name__}"
            )
        if isinstance(perturbation, str):
            (perturbation,) = parse_perturbations(perturbation)
        self.dataset, self.perturbation, self.seed = dataset, perturbation, int(seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not set yet (unpickling in a worker)
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        ds = self.dataset
        if not 0 <= index < len(ds):
            raise IndexError(f"index {index} out of range for {len(ds)} videos")
        path = ds.video_path(index)
        try:
            video = load_video(path, **ds.file_options(path))
        except VideoReadError as e:
            ds.skipped.add(path, e)
            return None
        return ds.item_from_video(index, self.perturbation(video, seed=self.seed, index=index))

    def __repr__(self) -> str:
        return f"PerturbedDataset({self.perturbation.label}, seed={self.seed}, {self.dataset!r})"
