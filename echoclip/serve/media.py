"""Small images of a decoded video for the page: an animated preview and a still thumbnail."""

from __future__ import annotations

import base64
import io

import numpy as np

from echoclip.data.video import Video, frame_indices

PREVIEW_SIZE = 192  # longest side of the animated preview, pixels
PREVIEW_FRAMES = 48  # at most this many frames, spread over the whole video
THUMBNAIL_SIZE = 160


def _resized(frame: np.ndarray, size: int) -> object:
    from PIL import Image

    image = Image.fromarray(frame)
    image.thumbnail((size, size))
    return image


def animated_preview(video: Video) -> bytes:
    """An animated WebP of the video, playing at its own speed (frames skipped evenly past
    ``PREVIEW_FRAMES``), small enough to send inline with a search result."""
    step = max(1.0, video.num_frames / PREVIEW_FRAMES)
    idx = frame_indices(
        video.num_frames, video.fps, n=min(video.num_frames, PREVIEW_FRAMES), target_fps=video.fps / step
    )
    images = [_resized(video.frames[i], PREVIEW_SIZE) for i in idx]
    out = io.BytesIO()
    images[0].save(
        out,
        format="WEBP",
        save_all=True,
        append_images=images[1:],
        duration=max(20, round(1000 * step / video.fps)),
        loop=0,
        quality=70,
    )
    return out.getvalue()


def thumbnail(frame: np.ndarray) -> bytes:
    """One frame as a JPEG no larger than ``THUMBNAIL_SIZE``."""
    out = io.BytesIO()
    _resized(frame, THUMBNAIL_SIZE).save(out, format="JPEG", quality=80)
    return out.getvalue()


def data_url(data: bytes, mime: str) -> str:
    """``data:`` URL of ``data``, for an ``<img src>`` that needs no second request."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
