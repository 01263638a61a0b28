"""What a scanner burns into the frame outside the fan: the ECG trace and a few labels.

The ECG's R waves fall on the clip's end-diastolic frames (end-diastole is defined by
the QRS), a cursor marks the current frame, and the labels give the frame rate, the
depth and the heart rate. Nothing here identifies a patient.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from echoclip.data.synthetic.anatomy import Timing
    from echoclip.data.synthetic.render import Sector

ECG_COLOR = (40, 210, 90)
CURSOR_COLOR = (255, 245, 140)
TEXT_COLOR = (205, 205, 205)

# 3×5 glyphs for the few characters the labels need
_GLYPHS = {
    "0": ("111", "101", "101", "101", "111"),
    "1": ("010", "110", "010", "010", "111"),
    "2": ("111", "001", "111", "100", "111"),
    "3": ("111", "001", "111", "001", "111"),
    "4": ("101", "101", "111", "001", "001"),
    "5": ("111", "100", "111", "001", "111"),
    "6": ("111", "100", "111", "101", "111"),
    "7": ("111", "001", "001", "001", "001"),
    "8": ("111", "101", "111", "101", "111"),
    "9": ("111", "101", "111", "001", "111"),
    "B": ("110", "101", "110", "101", "110"),
    "C": ("111", "100", "100", "100", "111"),
    "H": ("101", "101", "111", "101", "101"),
    "M": ("101", "111", "111", "101", "101"),
    "P": ("111", "101", "111", "100", "100"),
    "Z": ("111", "001", "010", "100", "111"),
    " ": ("000", "000", "000", "000", "000"),
}


def text_bitmap(text: str, scale: int = 1) -> np.ndarray:
    """``text`` as a bool bitmap, 3×5 pixels per character plus one pixel of spacing."""
    cols = []
    for ch in text.upper():
        glyph = np.array([[c == "1" for c in row] for row in _GLYPHS[ch]], dtype=bool)
        cols += [glyph, np.zeros((5, 1), dtype=bool)]
    bitmap = np.concatenate(cols[:-1], axis=1)
    return np.kron(bitmap, np.ones((scale, scale), dtype=bool))


def ecg_wave(t: np.ndarray, r_times_offset: float, period_s: float) -> np.ndarray:
    """An ECG (P, QRS, T) in millivolt-like units at times ``t`` (s), R waves at ``offset + k·period``."""
    dt = np.mod(t - r_times_offset + period_s / 2, period_s) - period_s / 2
    t_wave = 0.27 * math.sqrt(period_s)  # the QT interval shortens with the rate
    waves = (
        (0.15, -0.16, 0.025),
        (-0.12, -0.035, 0.01),
        (1.0, 0.0, 0.011),
        (-0.28, 0.035, 0.011),
        (0.3, t_wave, 0.045),
    )
    out = np.zeros_like(dt)
    for amp, centre, width in waves:
        out += amp * np.exp(-0.5 * ((dt - centre) / width) ** 2)
    return out


def ecg_band(sector: Sector) -> tuple[int, int]:
    """Rows ``[top, bottom)`` of the strip under the fan that holds the ECG."""
    top = int(math.ceil(sector.apex_row + sector.radius)) + 2
    return top, sector.size - 1


def burn_in(
    frames: np.ndarray,
    sector: Sector,
    timing: Timing,
    heart_rate: float,
    fps: float,
    depth_cm: float,
    style: str = "default",
) -> None:
    """Draw the ECG, its cursor and the labels into ``frames`` (uint8 [T,H,W,3]) in place.

    ``style`` is a scanner's look: ``vendor_b`` draws a yellow ECG and its labels on
    the right, ``vendor_c`` a white ECG and no heart-rate label.
    """
    ecg_color = {"vendor_b": (230, 210, 60), "vendor_c": (235, 235, 235)}.get(style, ECG_COLOR)
    n, size = frames.shape[0], frames.shape[2]
    outside = ~sector.mask()
    top, bottom = ecg_band(sector)
    if bottom - top >= 4:
        cols = np.arange(2, size - 2)
        t = (cols - 2) / max(len(cols) - 1, 1) * (n / fps)
        wave = ecg_wave(t, timing.ed_frame / fps, 60.0 / heart_rate)
        height = bottom - top
        y = np.rint(top + 0.72 * height - wave * 0.6 * height).clip(top, bottom - 1)
        lo = np.minimum(y[:-1], y[1:])
        hi = np.maximum(y[:-1], y[1:])
        rows = np.arange(size)[:, None]
        trace = np.zeros((size, size), dtype=bool)
        trace[:, cols[:-1]] = (rows >= lo) & (rows <= hi)
        trace &= outside
        frames[:, trace] = ecg_color
        cursor = np.rint(2 + np.arange(n) / n * (len(cols) - 1)).astype(int)
        for f in range(n):
            column = outside[top:bottom, cursor[f]]
            frames[f, top:bottom, cursor[f]][column] = CURSOR_COLOR

    scale = max(1, size // 112)
    labels = [
        (f"{round(fps)}HZ", 2, 2, "left"),
        (f"{round(depth_cm)}CM", 2 + 7 * scale, 2, "left"),
        (f"{round(heart_rate)}BPM", 2, 2, "right"),
    ]
    if style == "vendor_b":
        labels = [(text, 2 + 7 * scale * k, 2, "right") for k, (text, *_) in enumerate(labels)]
    elif style == "vendor_c":
        labels = labels[:2]
    for text, row, margin, side in labels:
        bitmap = text_bitmap(text, scale)
        h, w = bitmap.shape
        col = margin if side == "left" else size - margin - w
        if col < 0 or row + h > size:
            continue
        box = (slice(row, row + h), slice(col, col + w))
        if not outside[box][bitmap].all():
            continue  # the label would touch the fan at this frame size: leave it out
        frames[:, box[0], box[1]][:, bitmap] = TEXT_COLOR
