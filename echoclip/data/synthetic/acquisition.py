"""How one clip was acquired: the draws of :class:`AcquisitionRealism` and the artefacts they make.

:func:`draw_acquisition` turns a preset's knobs into one clip's settings (always the
same number of random draws, so the same seed gives the same heart and pose under any
preset); the other functions apply a setting to the fan's pixels (``r``, ``theta``:
each fan pixel's radius in pixels and angle from the midline) or to the finished
RGB frames. What each artefact looks like follows the scanners' physics in a few
lines: a rib blocks a wedge of beams, a lung blocks the lateral beams, a strong
reflector near the transducer echoes again at multiples of its depth, colour Doppler
paints blood by its velocity inside a box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from echoclip.data.synthetic.realism import AcquisitionRealism

__all__ = ["Acquired", "draw_acquisition", "VENDORS"]

# Grey-map tint (R, G, B gains) and overlay style of each scanner look.
VENDORS: dict[str, tuple[float, float, float]] = {
    "default": (1.0, 1.0, 1.0),
    "vendor_b": (0.9, 0.96, 1.0),  # a cool grey map
    "vendor_c": (1.0, 0.9, 0.74),  # a sepia grey map
}


@dataclass(frozen=True)
class Acquired:
    """One clip's acquisition settings (the clean preset's: every artefact off)."""

    gain: float = 1.0  # linear amplitude gain
    dgc: tuple[tuple[float, float, float], ...] = ()  # (depth 0..1, width 0..1, gain change) bands
    dynamic_range: float = 1.0
    half_angle_deg: float = 40.0
    zoom: bool = False
    fps: float | None = None
    foreshortened: bool = False
    tilt: float = 0.0  # extra tilt of an off-axis cut (degrees)
    dropout: tuple[tuple[float, float], ...] = ()  # (angle 0..1 across the fan, width) of dark beams
    reverberation: bool = False
    rib: tuple[float, float] | None = None  # (angle 0..1, width)
    lung: int = 0  # -1: left edge, +1: right edge, 0: none
    doppler_box: bool = False
    dual_screen: bool = False
    vendor: str = "default"


def draw_acquisition(knobs: AcquisitionRealism, view: str, rng: np.random.Generator) -> Acquired:
    """One clip's settings under ``knobs``; draws the same numbers whatever the knobs are."""
    u = rng.random(16)
    g = rng.uniform(-1.0, 1.0, size=4)
    bands = tuple(
        (float(rng.uniform(0.15, 0.9)), float(rng.uniform(0.08, 0.2)), float(rng.uniform(-0.35, 0.35)))
        for _ in range(2)
    )
    holes = tuple((float(rng.uniform(0.1, 0.9)), float(rng.uniform(0.06, 0.14))) for _ in range(2))
    rib = (float(rng.uniform(0.2, 0.8)), float(rng.uniform(0.08, 0.16)))
    vendor = knobs.vendors[int(rng.integers(0, len(knobs.vendors)))]
    apical = view in ("A4C", "A2C")
    lo, hi = knobs.dynamic_range
    return Acquired(
        gain=float(10.0 ** (knobs.gain_db * g[0] / 20.0)),
        dgc=bands if u[0] < knobs.dgc else (),
        dynamic_range=float(lo + (hi - lo) * u[1]),
        half_angle_deg=float(knobs.sector_deg[0] + (knobs.sector_deg[1] - knobs.sector_deg[0]) * u[2]),
        zoom=bool(u[3] < knobs.zoom),
        fps=None if knobs.fps is None else float(round(knobs.fps[0] + (knobs.fps[1] - knobs.fps[0]) * u[4])),
        foreshortened=bool(apical and u[5] < knobs.foreshortened),
        tilt=float(knobs.off_axis_deg * g[1]),
        dropout=holes[: 1 + int(u[6] < 0.5)] if u[7] < knobs.poor_window else (),
        reverberation=bool(u[8] < knobs.reverberation),
        rib=rib if u[9] < knobs.rib_shadow else None,
        lung=(1 if g[2] > 0 else -1) if u[10] < knobs.lung_shadow else 0,
        doppler_box=bool(u[11] < knobs.doppler_box),
        dual_screen=bool(u[12] < knobs.dual_screen),
        vendor=vendor,
    )


def fan_gain(acq: Acquired, r: np.ndarray, theta: np.ndarray, radius: float, half_angle: float) -> np.ndarray:
    """Gain ``[P]`` of the fan's pixels from the overall gain, depth gain bands and shadows."""
    depth = r / radius
    across = (theta / half_angle + 1.0) / 2.0  # 0 at the left edge, 1 at the right
    gain = np.full(r.shape, acq.gain, dtype=np.float32)
    for centre, width, change in acq.dgc:
        gain *= (1.0 + change * np.exp(-0.5 * ((depth - centre) / width) ** 2)).astype(np.float32)
    for centre, width in acq.dropout:  # a poor window: beams that barely get through
        gain *= (1.0 - 0.75 * _bump(across, centre, width) * _ramp(depth, 0.15, 0.1)).astype(np.float32)
    if acq.rib is not None:  # a rib: a dark wedge from just below the skin
        centre, width = acq.rib
        gain *= (1.0 - 0.85 * _bump(across, centre, width) * _ramp(depth, 0.08, 0.04)).astype(np.float32)
    if acq.lung:  # a lung: the lateral beams, with a ragged edge
        side = across if acq.lung > 0 else 1.0 - across
        edge = 0.78 + 0.06 * np.sin(depth * 17.0)
        gain *= (1.0 - 0.8 / (1.0 + np.exp(-(side - edge) / 0.03))).astype(np.float32)
    return gain


def near_field(acq: Acquired, r: np.ndarray, chest_px: float) -> np.ndarray:
    """Echo ``[P]`` added near the transducer: haze of a poor window, reverberation bands."""
    out = np.zeros(r.shape, dtype=np.float32)
    if acq.dropout:
        out += (0.12 * np.exp(-r / (2.5 * chest_px))).astype(np.float32)
    if acq.reverberation:
        for k in (1, 2, 3):
            out += (0.25 * 0.6**k * np.exp(-0.5 * ((r - (k + 1) * chest_px) / 1.2) ** 2)).astype(np.float32)
    return out


def colour_doppler(
    rgb: np.ndarray,
    r: np.ndarray,
    theta: np.ndarray,
    pixels: np.ndarray,
    flow: np.ndarray,
    centre: tuple[float, float],
) -> None:
    """Paint blood inside a box around ``centre`` (radius px, angle rad) by its velocity, in place.

    ``flow`` ``[T]`` is the signed inflow (towards the transducer is red, away blue); the
    box's outline is drawn in grey as scanners do.
    """
    t, h, w, _ = rgb.shape
    rc, tc = centre
    inside = (np.abs(r - rc) < 0.18 * h) & (np.abs(theta - tc) < 0.22)
    outline = inside & (
        (np.abs(np.abs(r - rc) - 0.18 * h) < 1.0) | (np.abs(np.abs(theta - tc) - 0.22) < 0.012)
    )
    idx = pixels[inside]
    flat = rgb.reshape(t, h * w, 3)
    grey = flat[:, idx, 0].astype(np.float32)
    blood = grey < 40.0
    ripple = 0.6 + 0.4 * np.cos(r[inside] * 0.7)[None, :]
    v = (flow[:, None] * ripple).astype(np.float32)
    red = np.where(blood & (v > 0), 60.0 + 195.0 * np.clip(v, 0, 1), grey)
    blue = np.where(blood & (v < 0), 60.0 + 195.0 * np.clip(-v, 0, 1), grey)
    green = np.where(blood & (np.abs(v) > 0.05), grey * 0.5, grey)
    flat[:, idx, 0] = red.astype(np.uint8)
    flat[:, idx, 1] = green.astype(np.uint8)
    flat[:, idx, 2] = blue.astype(np.uint8)
    flat[:, pixels[inside & outline]] = 150


def tint(grey: np.ndarray, vendor: str) -> np.ndarray:
    """``[T,H,W]`` grey levels to RGB through a vendor's grey map."""
    gains = VENDORS.get(vendor, VENDORS["default"])
    if gains == (1.0, 1.0, 1.0):
        return np.stack([grey, grey, grey], axis=-1)
    return np.stack([(grey * g).astype(np.uint8) for g in gains], axis=-1)


def dual_screen(frames: np.ndarray, still: int) -> np.ndarray:
    """Two half-width images side by side: the live clip left, one frame frozen right."""
    out = left_half(frames, axis=2)
    w = (frames.shape[2] + 1) // 2
    out[:, :, frames.shape[2] - w :] = out[still, :, :w][None]
    return out


def left_half(image: np.ndarray, axis: int) -> np.ndarray:
    """``image`` squeezed to half its width along ``axis`` (every other column), at the left."""
    half = np.take(image, np.arange(0, image.shape[axis], 2), axis=axis)
    out = np.zeros_like(image)
    index = [slice(None)] * image.ndim
    index[axis] = slice(0, half.shape[axis])
    out[tuple(index)] = half
    return out


def _bump(x: np.ndarray, centre: float, width: float) -> np.ndarray:
    return np.clip(1.5 - np.abs(x - centre) / width, 0.0, 1.0)


def _ramp(x: np.ndarray, start: float, width: float) -> np.ndarray:
    return np.clip((x - start) / width, 0.0, 1.0)


def zoom_window(depth_cm: float) -> tuple[float, float]:
    """A write-zoom's magnification and the depth (cm) its window starts at."""
    return 0.65, 0.25 * depth_cm


def half_angle(acq: Acquired) -> float:
    return math.radians(acq.half_angle_deg)
