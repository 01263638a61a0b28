"""NIfTI cines: chosen by content, upright, scaled to uint8 as a whole, with the header's pixel size."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from echoclip.data.nifti import read_nifti
from echoclip.data.video import intensity_to_uint8, list_readers, load_video
from echoclip.errors import VideoReadError


def _write(
    path: Path, data: np.ndarray, zooms: tuple[float, ...], units: tuple[str, str] | None = None
) -> Path:
    image = nib.Nifti1Image(data, np.eye(4))
    image.header.set_zooms(zooms)
    if units is not None:
        image.header.set_xyzt_units(*units)
    nib.save(image, path)
    return path


def test_a_nifti_is_found_by_content_and_read_upright(tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(0, 256, (12, 8, 5), dtype=np.uint8)  # x, y, t
    path = _write(tmp_path / "cine.nii.gz", data, (0.3, 0.2, 1.0), ("mm", "unknown"))
    renamed = tmp_path / "cine.bin"
    renamed.write_bytes(path.read_bytes())
    assert "nifti" in list_readers()
    video = load_video(renamed, fps=20.0)
    assert video.frames.shape == (5, 8, 12, 3) and video.fps == 20.0
    np.testing.assert_array_equal(video.frames[..., 0], data.transpose(2, 1, 0))
    assert (video.frames[..., 0] == video.frames[..., 2]).all()
    assert video.meta["cm_per_px"] == pytest.approx((0.03, 0.02))
    clip = load_video(path, indices=lambda total, fps: [total - 1, 0], fps=20.0)
    np.testing.assert_array_equal(clip.frames[:, :, :, 0], data[:, :, [4, 0]].transpose(2, 1, 0))


def test_header_units_and_time_step(tmp_path: Path) -> None:
    data = np.zeros((6, 4, 1, 3), dtype=np.uint8)  # x, y, z = 1, t
    timed = read_nifti(_write(tmp_path / "t.nii", data, (0.5, 0.5, 1.0, 40.0), ("meter", "msec")))
    assert timed.fps == pytest.approx(25.0) and timed.num_frames == 3
    assert timed.meta["cm_per_px"] == pytest.approx((50.0, 50.0))
    plain = _write(tmp_path / "u.nii", data[:, :, 0], (0.4, 0.4, 1.0))  # units unknown
    assert read_nifti(plain, fps=30).meta["cm_per_px"] is None  # never guessed
    assert read_nifti(plain, fps=30, units="mm").meta["cm_per_px"] == pytest.approx((0.04, 0.04))
    with pytest.raises(VideoReadError, match="records no frame rate"):
        read_nifti(plain)
    one = read_nifti(_write(tmp_path / "one.nii", data[:, :, 0, 0], (0.4, 0.4)))
    assert one.num_frames == 1 and one.fps == 1.0


def test_grey_values_become_uint8_over_the_whole_sequence() -> None:
    ramp = np.stack([np.full((2, 2), 100.0), np.full((2, 2), 1100.0)])
    out = intensity_to_uint8(ramp)
    assert out.dtype == np.uint8 and out[0, 0, 0] == 0 and out[1, 0, 0] == 255  # one stretch, not per frame
    assert intensity_to_uint8(np.array([[3.4, 250.6]])).tolist() == [[3, 251]]  # grey levels kept
    assert intensity_to_uint8(np.array([np.nan, 7.0])).tolist() == [0, 7]


def test_broken_and_unsupported_files_are_read_errors(tmp_path: Path) -> None:
    data = np.random.default_rng(1).integers(0, 256, (30, 20, 4), dtype=np.uint8)
    raw = gzip.compress(nib.Nifti1Image(data, np.eye(4)).to_bytes())
    (tmp_path / "cut.nii.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(VideoReadError, match="truncated or corrupt"):
        load_video(tmp_path / "cut.nii.gz", fps=10)
    volume = _write(tmp_path / "vol.nii", np.zeros((4, 4, 3, 2), np.uint8), (1.0, 1.0, 1.0, 1.0))
    with pytest.raises(VideoReadError, match="not a 2-D frame or cine"):
        load_video(volume, fps=10)
