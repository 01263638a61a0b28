"""Physical scale: how many centimetres a pixel spans, from the file to the model's input.

A sonographer sets the imaging depth to the heart, so a dilated heart is imaged deeper
and fills about the same pixels as a normal one: chamber size can only be read once the
scale is known. Files that record it (DICOM's ultrasound regions, a manifest column, the
simulator) give ``cm_per_px = (x, y)``; an unknown scale stays ``None``, never guessed.

A model whose preprocessing sets ``field_cm`` sees every clip resampled to that physical
field of view: a square ``field_cm`` wide and deep, hanging from the top centre of the
frame (where a sector's apex is), so one output pixel is always ``field_cm / size``
centimetres and a larger heart covers more pixels. A clip of unknown scale falls back to
the plain resize of the whole frame.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# DICOM PhysicalUnitsX/YDirection: 3 is centimetres (PS3.3 C.8.5.5.1.15)
DICOM_CM = 3

Scale = tuple[float, float]
Zoom = tuple[float, float]  # how much a crop resized up magnified x and y


def as_scale(value: Any) -> Scale | None:
    """``(x, y)`` centimetres per pixel from a number, a pair, or ``None``/NaN (unknown)."""
    if value is None:
        return None
    if isinstance(value, int | float | np.floating | np.integer):
        values = [float(value), float(value)]
    else:
        values = [float(v) for v in value]
    if len(values) != 2 or not all(math.isfinite(v) and v > 0 for v in values):
        return None
    return values[0], values[1]


def region_scale(region: dict[str, Any] | None) -> Scale | None:
    """The centimetres per pixel of a DICOM ultrasound region, when it gives them in centimetres.

    A region in other units (seconds, cm/s: a Doppler strip) has no spatial scale; a
    spatial region in other units is reported once and left unknown.
    """
    if not region or "delta_x" not in region or "delta_y" not in region:
        return None
    units = (region.get("units_x"), region.get("units_y"))
    if units != (DICOM_CM, DICOM_CM):
        # no file name here: names of exported files may hold patient data
        log.warning(
            "a DICOM ultrasound region gives its pixel size in units %s, not centimetres; scale unknown",
            units,
        )
        return None
    return as_scale((abs(float(region["delta_x"])), abs(float(region["delta_y"]))))


def cropped_scale(scale: Scale | None, height: int, width: int, size: int) -> Scale | None:
    """The scale after :func:`echoclip.data.transforms.resize_clip_uint8` (short side to ``size``)."""
    if scale is None:
        return None
    factor = min(height, width) / size
    return scale[0] * factor, scale[1] * factor


def zoomed_scale(scale: Scale | None, zoom: Zoom) -> Scale | None:
    """The scale after a magnification ``zoom`` (x, y): each pixel spans less."""
    if scale is None:
        return None
    return scale[0] / zoom[0], scale[1] / zoom[1]


def scale_tensor(scale: Scale | None) -> Any:
    """``float32 [2]`` (x, y) of a scale, NaN where unknown: what a batch carries."""
    import torch

    return torch.tensor(scale if scale is not None else (math.nan, math.nan), dtype=torch.float32)


def field_window(scale: Scale, field_cm: float) -> tuple[int, int]:
    """``(height, width)`` in source pixels of a ``field_cm`` square at ``scale``."""
    return max(1, round(field_cm / scale[1])), max(1, round(field_cm / scale[0]))


def resample_to_field(frames: np.ndarray, scale: Scale, field_cm: float, size: int) -> np.ndarray:
    """``uint8 [T,H,W,3]`` of known ``scale`` -> ``uint8 [T,size,size,3]`` covering ``field_cm``.

    The window is centred across the frame and starts at its top row; what falls
    outside the frame is black (as outside a sector). Antialiased bilinear resizing, in
    ``uint8`` as every other resize of a clip.
    """
    import torch
    import torch.nn.functional as F

    t, h, w, c = frames.shape
    wh, ww = field_window(scale, field_cm)
    window = np.zeros((t, wh, ww, c), dtype=np.uint8)
    left = (w - ww) // 2  # negative when the window is wider than the frame
    src_x0, dst_x0 = max(0, left), max(0, -left)
    cols = min(w - src_x0, ww - dst_x0)
    rows = min(h, wh)
    window[:, :rows, dst_x0 : dst_x0 + cols] = frames[:, :rows, src_x0 : src_x0 + cols]
    if (wh, ww) == (size, size):
        return window
    x = torch.from_numpy(window).permute(0, 3, 1, 2)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())


def table_scales(table: Any) -> list[Scale | None] | None:
    """Per-row scales of a manifest: ``cm_per_px``, or ``cm_per_px_x`` and ``cm_per_px_y``; None without."""
    columns: Sequence[str]
    if "cm_per_px_x" in table.columns and "cm_per_px_y" in table.columns:
        columns = ("cm_per_px_x", "cm_per_px_y")
    elif "cm_per_px" in table.columns:
        columns = ("cm_per_px", "cm_per_px")
    else:
        return None
    import pandas as pd

    values = np.column_stack([pd.to_numeric(table[c], errors="coerce").to_numpy(np.float64) for c in columns])
    return [as_scale(row) for row in values]
