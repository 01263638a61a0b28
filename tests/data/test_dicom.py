"""DICOM reading: colour for every photometric interpretation, timing, sector, errors, real files."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from echoclip.data.dicom import find_sector, probe_dicom, read_dicom, write_dicom
from echoclip.data.video import list_readers, load_video
from echoclip.errors import VideoReadError


def _has_pydicom_data() -> bool:
    try:
        importlib.metadata.version("pydicom-data")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


# pydicom-data (a dev dependency) holds more real files; asking pydicom for an absent one
# goes to the network, so those tests check that it is installed first.
HAS_PYDICOM_DATA = _has_pydicom_data()


# A known RGB image: eight colour bars (black, white, red, green, blue, yellow, cyan, grey).
BARS = np.array(
    [
        [0, 0, 0],
        [255, 255, 255],
        [255, 0, 0],
        [0, 255, 0],
        [0, 0, 255],
        [255, 255, 0],
        [0, 255, 255],
        [128, 128, 128],
    ],
    dtype=np.uint8,
)


def _bars(t: int = 3, h: int = 16, bar: int = 8) -> np.ndarray:
    """``[t, h, 8*bar, 3]`` colour bars, identical in every frame."""
    row = np.repeat(BARS, bar, axis=0)  # [8*bar, 3]
    return np.broadcast_to(row, (t, h, row.shape[0], 3)).copy()


def _ybr_full(rgb: np.ndarray) -> np.ndarray:
    """RGB -> YBR_FULL by the formula of DICOM PS3.3 C.7.6.3.1.2 (independent of pydicom)."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b + 128
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b + 128
    return np.stack([y, cb, cr], axis=-1).round().clip(0, 255).astype(np.uint8)


def _write(path: Path, pixels: np.ndarray, photometric: str, rle: bool, **tags: object) -> Path:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "US"
    ds.FrameTime = "20.0"
    ds.set_pixel_data(pixels, photometric, 8)
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    if rle:
        ds.compress(RLELossless)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("rle", [False, True], ids=["native", "rle"])
@pytest.mark.parametrize("photometric", ["RGB", "YBR_FULL", "MONOCHROME2", "MONOCHROME1", "PALETTE COLOR"])
def test_photometric_interpretations_load_as_the_known_rgb_image(
    tmp_path: Path, photometric: str, rle: bool
) -> None:
    rgb = _bars()
    tags: dict[str, object] = {}
    if photometric == "RGB":
        stored, expected, tol = rgb, rgb, 0
    elif photometric == "YBR_FULL":
        stored, expected, tol = _ybr_full(rgb), rgb, 2
    elif photometric in ("MONOCHROME2", "MONOCHROME1"):
        grey = np.tile(np.arange(0, 256, 2, dtype=np.uint8), (3, 8, 1))  # a ramp, [3, 8, 128]
        stored = grey if photometric == "MONOCHROME2" else 255 - grey  # MONOCHROME1: 0 is white
        expected, tol = np.repeat(grey[..., None], 3, axis=-1), 0
    else:
        lut = np.zeros((256, 3), dtype=np.uint16)
        lut[: len(BARS)] = BARS.astype(np.uint16) * 257  # 16-bit palette entries, as scanners write
        stored = np.broadcast_to(np.repeat(np.arange(8, dtype=np.uint8), 8), (3, 16, 64)).copy()
        expected, tol = BARS[stored], 0
        for colour, channel in zip(("Red", "Green", "Blue"), range(3), strict=True):
            tags[f"{colour}PaletteColorLookupTableDescriptor"] = [256, 0, 16]
            tags[f"{colour}PaletteColorLookupTableData"] = lut[:, channel].tobytes()
    path = _write(tmp_path / "bars.dcm", stored, photometric, rle, **tags)
    video = load_video(path, crop=False, mask=False)
    assert video.frames.dtype == np.uint8 and video.frames.shape == expected.shape
    assert np.abs(video.frames.astype(int) - expected).max() <= tol
    assert video.fps == pytest.approx(50.0)


def test_jpeg_ybr_422_is_converted_exactly_once(tmp_path: Path) -> None:
    rgb = _bars(t=4, h=32, bar=16)
    path = write_dicom(rgb, tmp_path / "jpeg.dcm", fps=30, compression="jpeg")
    assert pydicom.dcmread(path).PhotometricInterpretation == "YBR_FULL_422"
    video = load_video(path, crop=False, mask=False)
    inner = slice(4, -4)  # bar interiors: 4:2:2 chroma blurs the edges
    for i, colour in enumerate(BARS):
        patch = video.frames[:, 8:24, i * 16 : (i + 1) * 16][:, :, inner].reshape(-1, 3).mean(axis=0)
        assert np.abs(patch - colour).max() < 6, (i, patch)
    grey = video.frames[:, 8:24, 7 * 16 + 4 : 8 * 16 - 4].reshape(-1, 3).mean(axis=0)
    assert np.ptp(grey) < 3  # no green tint


def test_real_echo_cine_matches_one_colour_conversion() -> None:
    from pydicom.data import get_testdata_file
    from pydicom.pixels import convert_color_space, pixel_array

    path = get_testdata_file("examples_ybr_color.dcm")
    video = load_video(path, crop=False, mask=False)
    ds = pydicom.dcmread(path)
    reference = convert_color_space(pixel_array(ds, raw=True), "YBR_FULL", "RGB")
    assert video.frames.shape == (30, 240, 320, 3)
    assert np.abs(video.frames.astype(int) - reference).mean() < 2
    # pixel_array() already converted; converting its output again is the green-tint bug.
    twice = convert_color_space(pixel_array(ds), "YBR_FULL", "RGB")
    assert np.abs(video.frames.astype(int) - twice).mean() > 20
    assert video.fps == pytest.approx(1000 / 33.333, rel=1e-4)
    assert video.meta["fps_source"] == "FrameTime"


def test_real_echo_cine_is_cropped_and_masked_to_its_sector() -> None:
    from pydicom.data import get_testdata_file

    path = get_testdata_file("examples_ybr_color.dcm")
    full = load_video(path, crop=False, mask=False, indices=[0, 10])
    video = load_video(path, indices=[0, 10])
    y0, x0, y1, x1 = video.meta["crop_box"]
    assert video.frames.shape[1:3] == (y1 - y0, x1 - x0)
    assert 0.25 < (y1 - y0) * (x1 - x0) / (240 * 320) < 0.8
    # The burnt-in text at the top left and the depth ruler to the right are gone...
    masked = load_video(path, crop=False, indices=[0, 10]).frames
    assert full.frames[:, :20, :40].max() > 150 and masked[:, :20, :40].max() == 0
    # ...while the image inside the sector is untouched.
    centre = (slice(None), slice(100, 140), slice(130, 190))
    np.testing.assert_array_equal(masked[centre], full.frames[centre])


@pytest.mark.skipif(not HAS_PYDICOM_DATA, reason="pydicom-data is not installed")
@pytest.mark.parametrize(
    ("name", "tolerance"),
    [
        ("SC_rgb_jpeg_dcmtk.dcm", 2.0),  # JPEG baseline, YBR_FULL
        ("SC_rgb_jpeg_gdcm.dcm", 0.0),  # JPEG lossless (process 14), RGB
        ("SC_rgb_rle.dcm", 0.0),
        ("SC_ybr_full_uncompressed.dcm", 2.0),
    ],
)
def test_bundled_encodings_match_the_uncompressed_reference(name: str, tolerance: float) -> None:
    from pydicom.data import get_testdata_file
    from pydicom.pixels import pixel_array

    reference = pixel_array(get_testdata_file("SC_rgb.dcm"))
    video = load_video(get_testdata_file(name), crop=False, mask=False)
    assert np.abs(video.frames[0].astype(int) - reference).mean() <= tolerance


def test_rgb_jpeg_without_colour_transform_is_not_converted() -> None:
    from pydicom.data import get_testdata_file
    from pydicom.pixels import convert_color_space, pixel_array

    path = get_testdata_file("SC_jpeg_no_color_transform.dcm")  # RGB components stored as is
    frame = load_video(path, crop=False, mask=False).frames[0]
    assert np.abs(frame.astype(int) - pixel_array(path)).mean() < 1
    assert np.abs(frame.astype(int) - convert_color_space(frame, "YBR_FULL", "RGB")).mean() > 20


def _echo_cine(t: int = 10, h: int = 96, w: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fan of changing speckle, static text top left, and a moving ECG trace below the fan."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    radius, angle = np.hypot(yy - 4, xx - w / 2), np.arctan2(xx - w / 2, yy - 4)
    fan = (radius < 70) & (np.abs(angle) < 0.6)
    frames = np.zeros((t, h, w, 3), dtype=np.uint8)
    for i in range(t):
        speckle = rng.integers(30, 230, (h, w), dtype=np.uint8)
        frames[i][fan] = speckle[fan, None]
        frames[i, 2:8, 2:24] = 255  # burnt-in label
        x = np.arange(w)
        y = (88 + 4 * np.sin(2 * np.pi * (x / 32 + i / t))).round().astype(int)
        frames[i, y, x] = (0, 255, 0)  # ECG trace
    return frames, fan


@pytest.mark.parametrize("with_region", [True, False], ids=["region", "sector-from-motion"])
def test_ecg_trace_and_text_outside_the_image_are_black(tmp_path: Path, with_region: bool) -> None:
    from scipy import ndimage

    frames, fan = _echo_cine()
    ys, xs = np.nonzero(fan)
    region = {"x0": int(xs.min()), "y0": int(ys.min()), "x1": int(xs.max()), "y1": int(ys.max())}
    path = write_dicom(frames, tmp_path / "cine.dcm", fps=30, regions=[region] if with_region else None)

    uncropped = load_video(path, crop=False).frames
    assert frames[:, 80:, :, 1].max() == 255  # the trace is there in the file...
    assert uncropped[:, 80:].max() == 0  # ...and black once loaded
    assert uncropped[:, 2:8, 2:24].max() == 0
    inside = ndimage.binary_erosion(fan, iterations=2)
    np.testing.assert_array_equal(uncropped[:, inside], frames[:, inside])
    outside = ~ndimage.binary_dilation(fan, iterations=2)
    assert uncropped[:, outside].max() == 0

    cropped = load_video(path)
    box = (region["y1"] - region["y0"] + 1, region["x1"] - region["x0"] + 1)
    if with_region:
        assert cropped.frames.shape[1:3] == box
    else:  # the sector found from motion may lose a pixel or two at the thin apex
        assert np.abs(np.subtract(cropped.frames.shape[1:3], box)).max() <= 3
    green = (cropped.frames[..., 1] > 200) & (cropped.frames[..., 0] < 50)
    assert not green.any()


def test_find_sector_needs_motion() -> None:
    frames, fan = _echo_cine(t=6)
    mask = find_sector(frames)
    assert mask is not None and (mask == fan).mean() > 0.98
    assert find_sector(np.repeat(frames[:1], 4, axis=0)) is None  # a frozen loop
    assert find_sector(frames[:1]) is None


@pytest.mark.parametrize(
    ("tags", "expected", "source"),
    [
        ({"FrameTime": "25"}, 40.0, "FrameTime"),
        ({"FrameTimeVector": ["0", "20", "20", "20"]}, 50.0, "FrameTimeVector"),
        ({"CineRate": 30}, 30.0, "CineRate"),
        ({"RecommendedDisplayFrameRate": 24}, 24.0, "RecommendedDisplayFrameRate"),
    ],
)
def test_fps_comes_from_the_header(tmp_path: Path, tags: dict, expected: float, source: str) -> None:
    path = write_dicom(_bars(t=4), tmp_path / "t.dcm", fps=None, tags=tags)
    video = load_video(path, mask=False)
    assert video.fps == pytest.approx(expected)
    assert video.meta["fps_source"] == source


def test_fps_missing_is_a_clear_error_unless_given(tmp_path: Path) -> None:
    path = write_dicom(_bars(t=4), tmp_path / "untimed.dcm", fps=None)
    with pytest.raises(VideoReadError, match="no frame timing.*fps="):
        load_video(path)
    assert load_video(path, fps=12.5).fps == 12.5
    timed = write_dicom(_bars(t=4), tmp_path / "timed.dcm", fps=40)
    assert load_video(timed, fps=12.5).fps == pytest.approx(40)  # the header wins
    still = write_dicom(_bars(t=1), tmp_path / "still.dcm", fps=None)
    assert load_video(still).fps == 1.0


def test_clip_decodes_the_same_frames_as_a_full_read(tmp_path: Path) -> None:
    frames, _ = _echo_cine(t=24)
    for compression in (None, "rle", "jpeg"):
        path = write_dicom(frames, tmp_path / f"{compression}.dcm", fps=48, compression=compression)
        full = load_video(path).frames
        clip = load_video(path, n=6, target_fps=24, start=3)
        np.testing.assert_array_equal(clip.frames, full[[3, 5, 7, 9, 11, 13]])
        assert clip.fps == 24


def test_reader_is_chosen_by_dicm_magic_not_extension(tmp_path: Path) -> None:
    assert "dicom" in list_readers()
    path = write_dicom(_bars(t=2), tmp_path / "named_like_a.avi", fps=10)
    assert load_video(path).meta["source"] == "dicom"
    text = tmp_path / "report.dcm"
    text.write_text("not a dicom file\n" * 20)
    with pytest.raises(VideoReadError, match="report.dcm"):
        load_video(text)


def test_broken_dicoms_raise_video_read_error_naming_the_file(tmp_path: Path) -> None:
    frames, _ = _echo_cine(t=8)
    good = write_dicom(frames, tmp_path / "good.dcm", fps=30, compression="jpeg")

    no_pixels = tmp_path / "no_pixels.dcm"
    ds = pydicom.dcmread(good)
    del ds.PixelData
    ds.save_as(no_pixels)
    with pytest.raises(VideoReadError, match="no_pixels.dcm: no pixel data"):
        load_video(no_pixels)

    data = good.read_bytes()
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(VideoReadError, match="truncated.dcm"):
        load_video(truncated)

    garbage = tmp_path / "garbage.dcm"
    rng = np.random.default_rng(0)
    garbage.write_bytes(b"\0" * 128 + b"DICM" + rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(VideoReadError, match="garbage.dcm"):
        load_video(garbage)

    start = data.index(b"\xff\xd8\xff")  # the first JPEG frame
    corrupt = tmp_path / "corrupt_jpeg.dcm"
    corrupt.write_bytes(data[: start + 2] + bytes(100) + data[start + 102 :])  # its tables zeroed
    with pytest.raises(VideoReadError, match="corrupt_jpeg.dcm: cannot decode pixel data"):
        load_video(corrupt)
    zeroed = tmp_path / "zeroed.dcm"
    zeroed.write_bytes(data[: start + 200] + bytes(len(data) - start - 200))  # item structure lost
    with pytest.raises(VideoReadError, match="zeroed.dcm: .*truncated or corrupt"):
        load_video(zeroed)

    with pytest.raises(ValueError):
        read_dicom(good, indices=[8])  # out of range: a caller error, not a bad file


@pytest.mark.parametrize("compression", [None, "rle", "jpeg"])
@pytest.mark.parametrize("with_region", [True, False], ids=["region", "no-region"])
def test_probe_gives_what_a_read_gives_without_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compression: str | None, with_region: bool
) -> None:
    import echoclip.data.dicom as module

    frames, _ = _echo_cine(t=10)
    region = {"x0": 10, "y0": 4, "x1": 117, "y1": 75, "delta_x": 0.05, "delta_y": 0.04}
    path = write_dicom(
        frames,
        tmp_path / "cine.dcm",
        fps=25,
        compression=compression,
        regions=[region] if with_region else None,
        tags={"Manufacturer": "ACME"},
    )
    video = read_dicom(path)

    def no_decoding(*args: object) -> None:
        raise AssertionError("a probe decoded pixels")

    monkeypatch.setattr(module, "_decode_rgb", no_decoding)
    probe = probe_dicom(path)
    assert (probe["fps"], probe["frames"]) == (pytest.approx(video.fps), 10)
    assert probe["manufacturer"] == "ACME" and probe["cm_per_px"] == video.meta["cm_per_px"]
    if with_region:  # the crop of the header's region
        assert (probe["height"], probe["width"]) == video.frames.shape[1:3]
        assert probe["crop_box"] == video.meta["crop_box"]
    else:  # a read crops to the sector in the pixels; the probe gives the frame
        assert (probe["height"], probe["width"]) == (96, 128) and probe["cm_per_px"] is None


@pytest.mark.parametrize("compression", [None, "rle", "jpeg"])
def test_probe_finds_what_a_read_would_refuse(tmp_path: Path, compression: str | None) -> None:
    frames, _ = _echo_cine(t=8)
    good = write_dicom(frames, tmp_path / "good.dcm", fps=30, compression=compression)
    data = good.read_bytes()
    for cut in (len(data) * 2 // 3, len(data) - 12):  # anywhere in the pixel data, even its end
        short = tmp_path / f"cut{cut}.dcm"
        short.write_bytes(data[:cut])
        with pytest.raises(VideoReadError, match=f"cut{cut}.dcm: DICOM file is truncated"):
            probe_dicom(short)
        with pytest.raises(VideoReadError, match=f"cut{cut}.dcm"):
            read_dicom(short)
    if compression is not None:  # the end marker's tag but not its length: read, so probed
        (tmp_path / "unended.dcm").write_bytes(data[:-4])
        assert read_dicom(tmp_path / "unended.dcm").frames.shape[0] == 8
        assert probe_dicom(tmp_path / "unended.dcm")["frames"] == 8
        (tmp_path / "no_end.dcm").write_bytes(data[:-8])  # no end marker: neither
        for reader in (read_dicom, probe_dicom):
            with pytest.raises(VideoReadError, match="no_end.dcm"):
                reader(tmp_path / "no_end.dcm")

    untimed = write_dicom(frames, tmp_path / "untimed.dcm", fps=None, compression=compression)
    with pytest.raises(VideoReadError, match="untimed.dcm: no frame timing"):
        probe_dicom(untimed)
    assert probe_dicom(untimed, fps=12.5)["fps"] == 12.5

    no_pixels = tmp_path / "no_pixels.dcm"
    ds = pydicom.dcmread(good)
    del ds.PixelData
    ds.save_as(no_pixels)
    with pytest.raises(VideoReadError, match="no_pixels.dcm: no pixel data"):
        probe_dicom(no_pixels)
    with pytest.raises(VideoReadError, match="not_there.dcm: file not found"):
        probe_dicom(tmp_path / "not_there.dcm")
    (tmp_path / "text.dcm").write_text("not a dicom file\n" * 20)
    with pytest.raises(VideoReadError, match="text.dcm: not a valid DICOM file"):
        probe_dicom(tmp_path / "text.dcm")


def test_probe_messages_hold_no_patient_data(tmp_path: Path) -> None:
    folder = tmp_path / "ZQXDOE^ZQXJANE"
    folder.mkdir()
    path = write_dicom(
        _echo_cine(t=4)[0], folder / "IM1.dcm", fps=None, tags={"PatientName": "ZQXDOE^ZQXJANE"}
    )
    with pytest.raises(VideoReadError) as err:
        probe_dicom(path)
    assert "ZQX" not in str(err.value) and str(err.value.path).endswith("[patient]/IM1.dcm")


def test_meta_keeps_geometry_and_timing(tmp_path: Path) -> None:
    frames, fan = _echo_cine()
    region = {"x0": 10, "y0": 4, "x1": 117, "y1": 75, "delta_x": 0.05, "delta_y": 0.04}
    path = write_dicom(frames, tmp_path / "geo.dcm", fps=25, regions=[region], tags={"Manufacturer": "ACME"})
    meta = load_video(path).meta
    assert meta["modality"] == "US" and meta["manufacturer"] == "ACME"
    assert meta["ultrasound_regions"][0]["delta_x"] == pytest.approx(0.05)
    assert meta["crop_box"] == (4, 10, 76, 118)
    assert meta["source_frames"] == 10 and meta["source_fps"] == pytest.approx(25)
    assert (meta["height"], meta["width"]) == (72, 108)


@pytest.mark.skipif(not HAS_PYDICOM_DATA, reason="pydicom-data is not installed")
def test_pydicom_data_ultrasound_files_load() -> None:
    from pydicom.data import get_testdata_file
    from pydicom.pixels import apply_color_lut, pixel_array

    cine = load_video(get_testdata_file("color3d_jpeg_baseline.dcm"), n=16)
    assert cine.frames.shape == (16, 384, 512, 3)  # cropped to its ultrasound region
    assert cine.fps == pytest.approx(30, rel=1e-3)

    rgb = load_video(get_testdata_file("US1_UNCR.dcm"), crop=False, mask=False)
    np.testing.assert_array_equal(rgb.frames[0], pixel_array(get_testdata_file("US1_UNCR.dcm")))
    j2k = load_video(get_testdata_file("US1_J2KR.dcm"), crop=False, mask=False)  # YBR_RCT, lossless
    np.testing.assert_array_equal(j2k.frames, rgb.frames)

    planar = load_video(get_testdata_file("color-pl.dcm"), crop=False, mask=False)
    np.testing.assert_array_equal(planar.frames[0], pixel_array(get_testdata_file("color-pl.dcm")))

    palette_path = get_testdata_file("OBXXXX1A.dcm")
    palette = load_video(palette_path, crop=False, mask=False)
    ds = pydicom.dcmread(palette_path)
    expected = (apply_color_lut(pixel_array(ds), ds) >> 8).astype(np.uint8)
    np.testing.assert_array_equal(palette.frames[0], expected)
    rle = load_video(get_testdata_file("OBXXXX1A_rle.dcm"), crop=False, mask=False)
    np.testing.assert_array_equal(rle.frames, palette.frames)

    lossless = get_testdata_file("JPGLosslessP14SV1_1s_1f_8b.dcm")  # JPEG lossless, MONOCHROME2
    grey = load_video(lossless, crop=False, mask=False).frames[0]
    np.testing.assert_array_equal(grey, np.repeat(pixel_array(lossless)[..., None], 3, axis=-1))

    aloka = load_video(get_testdata_file("gdcm-US-ALOKA-16.dcm"))  # 16-bit palette indices
    assert aloka.frames.dtype == np.uint8 and aloka.frames.max() > 100
    assert aloka.frames.shape[1:3] == (392, 304)


@pytest.mark.parametrize("byte_order", ["little", "big"])
@pytest.mark.parametrize("entries", ["8-bit", "16-bit", "8-bit values in 16-bit words"])
def test_palette_colours_in_every_byte_order_and_entry_size(
    tmp_path: Path, byte_order: str, entries: str
) -> None:
    """Palette entries of 8 or 16 bits, little- or big-endian, with a first mapped value of 2.

    The 16-bit entries carry the colour in the high byte and a non-zero low byte, so a
    table read in the wrong byte order cannot come out right by symmetry.
    """
    from pydicom.uid import ExplicitVRBigEndian

    big = byte_order == "big"
    lut = np.zeros((16, 3), dtype=np.int64)
    lut[: len(BARS)] = BARS
    stored = np.broadcast_to(np.repeat(np.arange(8, dtype=np.uint8) + 2, 8), (2, 16, 64)).copy()
    expected = BARS[stored - 2]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian if big else ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = "1.2.840.10008.5.1.4.1.1.3.1", generate_uid(), "US"
    ds.FrameTime = "20.0"
    ds.NumberOfFrames, ds.Rows, ds.Columns = 2, 16, 64
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "PALETTE COLOR"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = stored.tobytes()
    ds["PixelData"].VR = "OB"
    order = ">" if big else "<"
    for colour, channel in zip(("Red", "Green", "Blue"), range(3), strict=True):
        ds[f"{colour}PaletteColorLookupTableDescriptor"] = pydicom.DataElement(
            0x00281101 + channel, "US", [16, 2, 8 if entries == "8-bit" else 16]
        )
        if entries == "8-bit":
            data = lut[:, channel].astype(np.uint8).tobytes()
        elif entries == "16-bit":
            data = (lut[:, channel] * 256 + 0x11).astype(f"{order}u2").tobytes()
        else:
            data = lut[:, channel].astype(f"{order}u2").tobytes()
        ds[f"{colour}PaletteColorLookupTableData"] = pydicom.DataElement(0x00281201 + channel, "OW", data)
    path = tmp_path / "palette.dcm"
    ds.save_as(path, enforce_file_format=True, little_endian=not big, implicit_vr=False)
    video = load_video(path, crop=False, mask=False)
    np.testing.assert_array_equal(video.frames, expected)


def test_palette_that_is_misread_raises_instead_of_returning_black(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import echoclip.data.dicom as dicom

    stored = np.broadcast_to(np.repeat(np.arange(8, dtype=np.uint8), 8), (3, 16, 64)).copy()
    tags: dict[str, object] = {}
    for colour in ("Red", "Green", "Blue"):
        tags[f"{colour}PaletteColorLookupTableDescriptor"] = [256, 0, 16]
        tags[f"{colour}PaletteColorLookupTableData"] = (np.arange(256, dtype="<u2") * 257).tobytes()
    path = _write(tmp_path / "palette.dcm", stored, "PALETTE COLOR", False, **tags)
    assert load_video(path, crop=False, mask=False).frames.max() > 0

    # A conversion that loses the stored values (the big-endian bug read 16-bit
    # entries with their bytes swapped, then kept the high byte: zero everywhere).
    def wrong_order(ds: object, path: object = "") -> tuple[np.ndarray, int]:
        return np.zeros((256, 3), dtype=np.uint8), 0

    monkeypatch.setattr(dicom, "palette_table", wrong_order)
    with pytest.raises(VideoReadError, match=r"palette\.dcm: every frame is one flat colour.*PALETTE COLOR"):
        load_video(path)


def test_grey_pixels_scaled_to_one_level_raise(tmp_path: Path) -> None:
    """16 bits stored but values below 128: scaled by the bit depth every pixel is 0."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = "1.2.840.10008.5.1.4.1.1.3.1", generate_uid(), "US"
    ds.FrameTime = "20.0"
    grey = np.random.default_rng(0).integers(0, 100, (3, 16, 16), dtype=np.uint16)
    ds.set_pixel_data(grey, "MONOCHROME2", 16)
    path = tmp_path / "dim.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(VideoReadError, match=r"dim\.dcm: every frame is one flat colour.*bits stored 16"):
        load_video(path, crop=False, mask=False)
    flat = ds.copy()
    flat.set_pixel_data(np.full((3, 16, 16), 40, dtype=np.uint16), "MONOCHROME2", 16)
    flat.save_as(tmp_path / "flat.dcm", enforce_file_format=True)
    assert load_video(tmp_path / "flat.dcm", crop=False, mask=False).frames.max() == 0  # truly flat: fine
