"""Still images (PNG, JPEG) read as videos of one frame.

Some public echo data sets (TMED-2) ship single frames, not cines. Read as a
:class:`~echoclip.data.video.Video` of one frame, a still goes through the same datasets,
transforms and models as a cine: a clip of it repeats the frame (clips loop, see
:class:`~echoclip.data.transforms.ClipSampler`). An animated PNG keeps all its frames.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from echoclip.data.video import IndexSelector, Video, intensity_to_uint8, register_reader, select_frames
from echoclip.errors import VideoReadError

__all__ = ["read_image"]

_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"


def _is_still_image(head: bytes) -> bool:
    return head.startswith(_PNG) or head.startswith(_JPEG)


@register_reader("image", sniff=_is_still_image, priority=5)
def read_image(
    path: str | os.PathLike[str],
    indices: Sequence[int] | IndexSelector | None = None,
    n: int | None = None,
    target_fps: float | None = None,
    start: int = 0,
    *,
    fps: float | None = None,
) -> Video:
    """Read a PNG or JPEG as an RGB :class:`Video` (one frame; an animated PNG, all of them).

    Grey images are repeated over the three channels; 16-bit and floating-point grey
    values become ``uint8`` by :func:`~echoclip.data.video.intensity_to_uint8`. A still
    has no frame rate: ``fps`` if given, else 1. Its scale is unknown (an image's dots
    per inch say nothing of centimetres in the body).

    Raises:
        VideoReadError: missing, empty, truncated or not an image.
    """
    from PIL import Image, ImageSequence, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            frames = [_rgb(frame) for frame in ImageSequence.Iterator(image)]
    except FileNotFoundError:
        raise VideoReadError(f"{path}: file not found") from None
    except UnidentifiedImageError:
        raise VideoReadError(f"{path}: not a readable image") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise VideoReadError(
            f"{path}: image is truncated or corrupt ({str(e).splitlines()[0][:120]})"
        ) from None
    source_fps = float(fps) if fps else 1.0
    wanted = select_frames(len(frames), source_fps, indices, n, target_fps, start, path)
    stack = np.stack(frames) if wanted is None else np.stack([frames[int(i)] for i in wanted])
    meta = {
        "source": "image",
        "source_fps": source_fps,
        "source_frames": len(frames),
        "height": int(stack.shape[1]),
        "width": int(stack.shape[2]),
        "cm_per_px": None,
    }
    return Video(stack, source_fps if target_fps is None else float(target_fps), meta)


def _rgb(frame: Any) -> np.ndarray:
    """``uint8 [H, W, 3]`` of one PIL frame, whatever its mode."""
    if frame.mode.startswith(("I", "F")):  # 16/32-bit integer or float grey: PIL would clip to 8 bits
        grey = intensity_to_uint8(np.asarray(frame))
        return np.repeat(grey[..., None], 3, axis=-1)
    return np.asarray(frame.convert("RGB"))
