"""Physical scale: read from DICOM regions, manifests and the simulator; carried through every
resize; a fixed field of view makes a larger heart cover more pixels."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch

from echoclip.data.datasets import Manifest
from echoclip.data.dicom import write_dicom
from echoclip.data.scale import as_scale, cropped_scale, field_window, resample_to_field, table_scales
from echoclip.data.transforms import PreprocessConfig, VideoTransform
from echoclip.data.video import Video, load_video, save_video


def _disc(radius_px: float, size: int = 120, frames: int = 4) -> np.ndarray:
    """``uint8 [T, size, size, 3]``: a bright disc whose top touches the top of the frame."""
    yy, xx = np.mgrid[:size, :size]
    inside = np.hypot(yy - radius_px, xx - size / 2) < radius_px
    out = np.zeros((frames, size, size, 3), dtype=np.uint8)
    out[:, inside] = 200
    return out


def _width_px(frames: np.ndarray) -> int:
    return int((frames[0, :, :, 0] > 100).any(axis=0).sum())


def test_scale_values():
    assert as_scale(0.05) == (0.05, 0.05) and as_scale([0.05, 0.04]) == (0.05, 0.04)
    assert as_scale(None) is None and as_scale(float("nan")) is None and as_scale([0.05, -1]) is None
    assert cropped_scale((0.1, 0.1), 200, 300, 100) == pytest.approx((0.2, 0.2))
    assert cropped_scale(None, 200, 300, 100) is None
    assert field_window((0.1, 0.2), 24.0) == (120, 240)


@pytest.mark.parametrize("cm_per_px", [0.1, 0.2])
def test_a_fixed_field_shows_a_disc_at_its_physical_size(cm_per_px):
    """A 6 cm disc at two imaging depths covers the same pixels of the frame, and 6/24 of a
    24 cm field once resampled."""
    frames = _disc(3.0 / cm_per_px, size=int(round(12 / cm_per_px)))
    out = resample_to_field(frames, (cm_per_px, cm_per_px), field_cm=24.0, size=96)
    assert out.shape == (4, 96, 96, 3) and out.dtype == np.uint8
    assert _width_px(out) == pytest.approx(96 * 6 / 24, abs=2)
    assert out[:, 60:].max() == 0  # below the 12 cm frame: black


def test_the_transform_resamples_known_scales_and_resizes_unknown_ones():
    config = PreprocessConfig(image_size=48, num_frames=4, field_cm=24.0)
    transform = VideoTransform(config)
    small, large = _disc(15, size=120), _disc(30, size=120)  # the same pixels, two scales
    sized = [transform.resized(f, 0.1)[0] for f in (small, large)]
    assert _width_px(sized[1]) == pytest.approx(2 * _width_px(sized[0]), abs=2)
    frames, scale = transform.resized(small, None)  # unknown: the whole frame, resized
    assert _width_px(frames) == pytest.approx(48 * 30 / 120, abs=2) and scale is None
    assert transform.resized(small, 0.1)[1] == (0.5, 0.5)
    video = Video(small, 25.0, {"cm_per_px": (0.1, 0.1)})
    assert transform(video).shape == (3, 4, 48, 48)
    plain = VideoTransform(PreprocessConfig(image_size=48, num_frames=4))
    assert plain.resized(small, 0.1)[1] == pytest.approx((0.25, 0.25))


def test_dicom_regions_give_the_scale_in_centimetres_only(tmp_path, caplog):
    frames = np.random.default_rng(0).integers(0, 255, (3, 40, 50, 3), dtype=np.uint8)
    region = {"x0": 5, "y0": 2, "x1": 44, "y1": 37, "delta_x": 0.04, "delta_y": 0.05}
    path = write_dicom(frames, tmp_path / "cm.dcm", fps=25.0, regions=[region])
    assert load_video(path).meta["cm_per_px"] == pytest.approx((0.04, 0.05))
    assert load_video(write_dicom(frames, tmp_path / "none.dcm", fps=25.0)).meta["cm_per_px"] is None
    other = {**region, "units_x": 4, "units_y": 4}  # seconds, as a Doppler strip's
    with caplog.at_level(logging.WARNING):
        meta = load_video(write_dicom(frames, tmp_path / "s.dcm", fps=25.0, regions=[other])).meta
    assert meta["cm_per_px"] is None
    assert [r.message for r in caplog.records if "not centimetres" in r.message]


def test_the_real_apical_cine_gives_its_regions_scale():
    from pydicom.data import get_testdata_file

    path = get_testdata_file("color3d_jpeg_baseline.dcm")
    if path is None:
        pytest.skip("pydicom-data is not installed")
    assert load_video(path, indices=[0]).meta["cm_per_px"] == pytest.approx((0.05105, 0.05105), abs=1e-5)


def test_manifests_give_a_scale_per_row_and_datasets_apply_it(tmp_path):
    table = pd.DataFrame({"cm_per_px": [0.1, None]})
    assert table_scales(table) == [(0.1, 0.1), None]
    assert table_scales(pd.DataFrame({"cm_per_px_x": [0.1], "cm_per_px_y": [0.2]})) == [(0.1, 0.2)]
    assert table_scales(pd.DataFrame({"other": [1]})) is None

    small, large = _disc(15, size=120, frames=8), _disc(30, size=120, frames=8)
    for name, frames in (("small", small), ("large", large)):
        save_video(frames, tmp_path / f"{name}.avi", fps=25.0, codec="ffv1")
    rows = [
        {"video_path": f"{n}.avi", "report": "", "patient_id": n, "study_id": n} for n in ("small", "large")
    ]
    pd.DataFrame([{**r, "cm_per_px": 0.1} for r in rows]).to_parquet(tmp_path / "manifest.parquet")
    config = PreprocessConfig(image_size=48, num_frames=4, field_cm=24.0, mean=(0, 0, 0), std=(1, 1, 1))
    dataset = Manifest(tmp_path / "manifest.parquet", transform=VideoTransform(config))
    widths = [int((dataset[i]["video"][0, 0] > 0.4).any(dim=0).sum()) for i in range(2)]
    assert widths[1] == pytest.approx(2 * widths[0], abs=2)
    from echoclip.data.datasets import VideoClips

    for i in range(2):  # test-time clips take the same field of view
        assert torch.equal(VideoClips(dataset, 1)[i]["video"][0], dataset[i]["video"])
    dataset.preload(progress=False)  # frames kept at the field of view: the same clips
    assert [int((dataset[i]["video"][0, 0] > 0.4).any(dim=0).sum()) for i in range(2)] == widths


def test_the_simulator_records_its_scale(tmp_path):
    from echoclip.data.synthetic import simulate_dataset, simulate_study

    study = simulate_study(0, size=32, frames=32)
    assert study.video.meta["cm_per_px"] == (study.truth.cm_per_px,) * 2 and study.truth.cm_per_px > 0
    sim = simulate_dataset(tmp_path / "sim", n=4, seed=0, size=32, frames=32, fps=25.0, progress=False)
    table = pd.read_parquet(sim / "manifest.parquet")
    depth_cm = table["cm_per_px"] * 32
    assert (depth_cm > 10).all() and (depth_cm < 60).all()
    # the sizes its reports state, for the measurements prompt set
    assert table["lvidd_cm"].between(3, 9).all() and table["la_volume_index"].between(10, 100).all()
