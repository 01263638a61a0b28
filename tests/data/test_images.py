"""Still images (PNG, JPEG) read as one-frame videos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from echoclip.data.video import list_readers, load_video
from echoclip.errors import VideoReadError


def test_stills_are_one_frame_rgb_videos(tmp_path: Path) -> None:
    grey = np.random.default_rng(0).integers(0, 256, (10, 14), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    (tmp_path / "grey.dat").write_bytes((tmp_path / "grey.png").read_bytes())  # chosen by content
    assert "image" in list_readers()
    video = load_video(tmp_path / "grey.dat")
    assert video.frames.shape == (1, 10, 14, 3) and video.fps == 1.0 and video.meta["cm_per_px"] is None
    np.testing.assert_array_equal(video.frames[0, :, :, 1], grey)
    assert load_video(tmp_path / "grey.png", fps=30).fps == 30
    deep = (np.arange(140, dtype=np.uint16).reshape(10, 14) * 400).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    frames = load_video(tmp_path / "deep.png").frames
    assert frames.max() == 255 and frames.min() == 0  # 16-bit grey stretched, not clipped
    colour = np.zeros((8, 8, 3), dtype=np.uint8)
    colour[..., 0] = 200
    Image.fromarray(colour).save(tmp_path / "red.jpg", quality=95)
    assert abs(int(load_video(tmp_path / "red.jpg").frames[0, 4, 4, 0]) - 200) <= 3


def test_a_cut_image_is_a_read_error(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "ok.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "ok.png").read_bytes()[:40])
    with pytest.raises(VideoReadError, match="cut.png"):
        load_video(tmp_path / "cut.png")
