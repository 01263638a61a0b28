"""NIfTI cines (CAMUS and other research exports) read into a :class:`~echoclip.data.video.Video`.

A NIfTI image stores its voxels with the first axis along x (across the frame) and the
second along y (down it): ``data[x, y, t]``. Our frames are ``[T, H, W]`` with rows going
down, so a frame is the transpose of ``data[:, :, t]``; read without it, every echo
would lie on its side. The header's voxel size (``pixdim``, in the unit ``xyzt_units``
names) gives each frame's centimetres per pixel, ``(x, y)`` - the physical scale the
field-of-view preprocessing needs and that AVI exports lose.

The reader is chosen by content (the ``n+1``/``n+2`` magic of a single-file NIfTI-1 or
NIfTI-2 header, gzip-compressed or not), so a file named without ``.nii`` is read too.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from echoclip.data.scale import as_scale
from echoclip.data.video import IndexSelector, Video, intensity_to_uint8, register_reader, select_frames
from echoclip.errors import VideoReadError

__all__ = ["read_nifti"]

_GZIP = b"\x1f\x8b"
# centimetres per unit of NIfTI's spatial units (xyzt_units), and seconds per time unit
_CM_PER_UNIT = {"meter": 100.0, "cm": 1.0, "mm": 0.1, "micron": 1e-4}
_SECONDS_PER_UNIT = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6}


def _header_bytes(head: bytes) -> bytes:
    """The first bytes of the NIfTI header, inflated when the file is gzip-compressed."""
    if head[:2] != _GZIP:
        return head
    try:
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, 600)
    except zlib.error:
        return b""


def _is_nifti(head: bytes) -> bool:
    header = _header_bytes(head)
    return header[344:348] == b"n+1\x00" or header[4:8] == b"n+2\x00"


@register_reader("nifti", sniff=_is_nifti, priority=5)
def read_nifti(
    path: str | os.PathLike[str],
    indices: Sequence[int] | IndexSelector | None = None,
    n: int | None = None,
    target_fps: float | None = None,
    start: int = 0,
    *,
    fps: float | None = None,
    units: str | None = None,
) -> Video:
    """Read a 2-D NIfTI image or cine (``.nii`` or ``.nii.gz``) as an RGB :class:`Video`.

    Shapes ``(x, y)`` (one frame), ``(x, y, t)`` and ``(x, y, 1, t)`` are read; a 3-D image
    is taken as frames along its third axis, as CAMUS stores its sequences. Grey values
    become ``uint8`` by :func:`~echoclip.data.video.intensity_to_uint8` (one rule for the
    whole sequence) and are repeated over the three colour channels.

    Args:
        indices, n, target_fps, start: which frames to keep, as in
            :func:`echoclip.data.video.read_container` (default: all).
        fps: the frame rate when the header records none (a 3-D image has no time axis);
            a single frame without one gets 1 fps.
        units: the spatial unit (``"mm"``, ``"cm"``, ``"meter"``, ``"micron"``) to assume when the
            header's ``xyzt_units`` says "unknown" (CAMUS documents millimetres). Without
            either the scale stays unknown: ``meta["cm_per_px"]`` is ``None``.

    Example::

        video = read_nifti("patient0001_4CH_half_sequence.nii.gz", fps=25.0, units="mm")
        video.meta["cm_per_px"]  # (x, y) centimetres per pixel of video.frames

    Raises:
        VideoReadError: not a NIfTI image, truncated, more than one slice per frame, or
            several frames and no frame rate.
    """
    path = Path(path)
    header, data = _load(path)
    if data.dtype.fields is not None or not (np.issubdtype(data.dtype, np.number) or data.dtype == bool):
        raise VideoReadError(f"{path}: NIfTI voxels of type {data.dtype} are not grey values")
    shape = data.shape
    if data.ndim == 2:
        data = data[:, :, None]
    elif data.ndim == 4 and shape[2] == 1:
        data = data[:, :, 0, :]
    elif data.ndim != 3:
        raise VideoReadError(
            f"{path}: NIfTI image of shape {tuple(shape)} is not a 2-D frame or cine (x, y, t)"
        )
    total = int(data.shape[2])
    if total == 0 or data.shape[0] == 0 or data.shape[1] == 0:
        raise VideoReadError(f"{path}: NIfTI image has no voxels (shape {tuple(shape)})")
    source_fps = _header_fps(header, len(shape)) or (float(fps) if fps else None)
    if source_fps is None:
        if total > 1:
            raise VideoReadError(
                f"{path}: the NIfTI image records no frame rate; give it to read the file "
                "(--fps, or fps= in Python)"
            )
        source_fps = 1.0
    wanted = select_frames(total, source_fps, indices, n, target_fps, start, path)
    chosen = data if wanted is None else data[:, :, wanted]
    grey = intensity_to_uint8(np.transpose(chosen, (2, 1, 0)))  # [T, y, x]: rows go down
    frames = np.repeat(grey[..., None], 3, axis=-1)
    meta: dict[str, Any] = {
        "source": "nifti",
        "source_fps": source_fps,
        "source_frames": total,
        "height": int(frames.shape[1]),
        "width": int(frames.shape[2]),
        "cm_per_px": _header_scale(header, units),
    }
    out_fps = source_fps if target_fps is None else float(target_fps)
    return Video(frames, out_fps, meta)


def _load(path: Path) -> tuple[Any, np.ndarray]:
    """The header and voxels of the NIfTI image in ``path`` (read whole: a compressed file
    has to be inflated anyway)."""
    import nibabel as nib

    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise VideoReadError(f"{path}: file not found") from None
    except OSError as e:
        raise VideoReadError(f"{path}: cannot open ({e.strerror or e})") from None
    try:
        if raw[:2] == _GZIP:
            raw = gzip.decompress(raw)
        kind = nib.Nifti2Image if raw[4:8] == b"n+2\x00" else nib.Nifti1Image
        image = kind.from_bytes(raw)
        return image.header, np.asanyarray(image.dataobj)
    except (EOFError, OSError, zlib.error) as e:
        raise VideoReadError(f"{path}: NIfTI file is truncated or corrupt ({type(e).__name__})") from None
    except (nib.filebasedimages.ImageFileError, nib.spatialimages.HeaderDataError, ValueError) as e:
        raise VideoReadError(f"{path}: not a readable NIfTI image ({str(e).splitlines()[0][:120]})") from None


def _header_fps(header: Any, ndim: int) -> float | None:
    """The frame rate of a 4-D image whose header gives the time step in time units; else None."""
    if ndim != 4:
        return None
    time_unit = header.get_xyzt_units()[1]
    step = float(header.get_zooms()[3])
    seconds = _SECONDS_PER_UNIT.get(time_unit)
    if seconds is None or not (math.isfinite(step) and step > 0):
        return None
    return 1.0 / (step * seconds)


def _header_scale(header: Any, units: str | None) -> tuple[float, float] | None:
    """Centimetres per pixel ``(x, y)`` from ``pixdim``; None when the unit is unknown."""
    unit = header.get_xyzt_units()[0]
    if unit == "unknown":
        unit = units or "unknown"
    factor = _CM_PER_UNIT.get(unit)
    if factor is None:
        return None
    zooms = header.get_zooms()
    if len(zooms) < 2:
        return None
    return as_scale((float(zooms[0]) * factor, float(zooms[1]) * factor))
