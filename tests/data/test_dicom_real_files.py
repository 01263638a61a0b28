"""Every ultrasound file of pydicom's test data loads with the colours of an independent reference.

The files are found by their headers (Modality US or an ultrasound SOP class), not by a
list of names, so a file added to the data is checked too. The reference for each
photometric interpretation is computed here without echoclip: palettes applied by hand
from the descriptor and table bytes (in the file's byte order, from the first mapped
value), YCbCr converted by the formula of the standard, grey replicated.
"""

from __future__ import annotations

import importlib.metadata
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import pixel_array

from echoclip.data.video import load_video
from echoclip.errors import VideoReadError

US_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.3",  # Ultrasound Multi-frame Image (retired)
    "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame Image
    "1.2.840.10008.5.1.4.1.1.6",  # Ultrasound Image (retired)
    "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound Image
    "1.2.840.10008.5.1.4.1.1.6.2",  # Enhanced US Volume
}
TIMING = ("FrameTime", "FrameTimeVector", "CineRate", "RecommendedDisplayFrameRate")
UNTIMED_FPS = 25.0
MAX_FRAMES = 3  # frames compared per file: first, middle, last


def _data_folders() -> dict[str, Path]:
    """pydicom-data's folder, and the test files bundled with pydicom itself."""
    from pydicom.data.data_manager import DATA_ROOT, external_data_sources

    folders = {"pydicom": Path(DATA_ROOT) / "test_files"}
    try:
        importlib.metadata.version("pydicom-data")
    except importlib.metadata.PackageNotFoundError:
        return folders
    source = external_data_sources().get("pydicom-data")
    if source is not None:
        folders["pydicom-data"] = Path(source.data_path)
    return folders


def _ultrasound_files() -> list[tuple[str, Path]]:
    """``(source, path)`` of every ultrasound file with pixel data in the data folders, read by header."""
    found = []
    for source, folder in _data_folders().items():
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ds = pydicom.dcmread(path, stop_before_pixels=True)
            except Exception:  # not DICOM (the folders hold other files too)
                continue
            if ds.get("Modality", None) == "US" or str(ds.get("SOPClassUID", "")) in US_SOP_CLASSES:
                found.append((source, path))
    return found


FILES = _ultrasound_files()


# ---------------------------------------------------------------------------------------
# the independent reference


def _little_endian(ds: pydicom.Dataset) -> bool:
    # Every transfer syntax is little endian except Explicit VR Big Endian.
    return ds.file_meta.TransferSyntaxUID != "1.2.840.10008.1.2.2"


def _expand_segments(words: np.ndarray) -> np.ndarray:
    """A segmented palette (PS3.3 C.7.9.2) expanded: discrete and linear segments."""
    out: list[float] = []
    i = 0
    while i + 1 < len(words):  # a trailing pad word may follow the last segment
        opcode, length = int(words[i]), int(words[i + 1])
        if opcode == 0:
            out.extend(words[i + 2 : i + 2 + length].tolist())
            i += 2 + length
        elif opcode == 1:
            y0, y1 = out[-1], float(words[i + 2])
            out.extend(np.round(y0 + (y1 - y0) * np.arange(1, length + 1) / length).tolist())
            i += 3
        else:
            raise NotImplementedError(f"segment opcode {opcode}: extend the test's reference")
    return np.asarray(out, dtype=np.int64)


def _palette_reference(ds: pydicom.Dataset, stored: np.ndarray) -> np.ndarray:
    entries, first, _bits = (int(v) for v in ds.RedPaletteColorLookupTableDescriptor)
    entries = entries or 2**16
    order = "<" if _little_endian(ds) else ">"
    channels = []
    for colour in ("Red", "Green", "Blue"):
        if f"{colour}PaletteColorLookupTableData" in ds:
            raw = ds[f"{colour}PaletteColorLookupTableData"].value
            dtype = np.dtype(f"{order}u2") if len(raw) >= 2 * entries else np.dtype(np.uint8)
            table = np.frombuffer(raw, dtype=dtype)[:entries].astype(np.int64)
        else:
            raw = ds[f"Segmented{colour}PaletteColorLookupTableData"].value
            table = _expand_segments(np.frombuffer(raw, dtype=f"{order}u2"))[:entries]
        channels.append(table)
    table = np.stack(channels, axis=1)
    if table.max() > 255:  # 16-bit entries: their high byte is the 8-bit colour
        table >>= 8
    index = np.clip(stored.astype(np.int64) - first, 0, len(table) - 1)
    return table[index].astype(np.uint8)


def _ybr_full_to_rgb(ybr: np.ndarray) -> np.ndarray:
    """Full-range YCbCr -> RGB by the formula of PS3.3 C.7.6.3.1.2."""
    y, cb, cr = (ybr[..., i].astype(np.float64) for i in range(3))
    r = y + 1.402 * (cr - 128)
    g = y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128)
    b = y + 1.772 * (cb - 128)
    return np.stack([r, g, b], axis=-1).round().clip(0, 255).astype(np.uint8)


EXACT = (0, 0.0)
# JPEG baseline: two IDCT implementations (ours and pydicom's plugin) differ by a few
# levels at a few pixels (measured: at most 5, 0.03 on average).
LOSSY = (8, 0.25)


def _reference(path: Path, index: int) -> tuple[np.ndarray, tuple[int, float]]:
    """Frame ``index`` of ``path`` as RGB computed without echoclip, and the largest and
    mean absolute differences to allow."""
    ds = pydicom.dcmread(path)
    photometric = ds.PhotometricInterpretation
    frame = pixel_array(ds, index=index, raw=True)  # raw: as stored, no colour conversion
    if photometric == "PALETTE COLOR":
        return _palette_reference(ds, frame), EXACT
    if photometric in ("YBR_FULL", "YBR_FULL_422"):
        return _ybr_full_to_rgb(frame), LOSSY
    if photometric in ("RGB", "YBR_RCT", "YBR_ICT"):
        # JPEG 2000 codestreams carry their colour transform; every decoder undoes it.
        assert frame.ndim == 3 and frame.dtype == np.uint8
        return frame, EXACT
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        bits = int(ds.BitsStored)
        grey = frame.astype(np.float64) / (2**bits - 1) * 255
        if photometric == "MONOCHROME1":
            grey = 255 - grey
        return np.repeat(np.round(grey).astype(np.uint8)[..., None], 3, axis=-1), EXACT
    raise AssertionError(f"{path.name}: no reference for {photometric}")


def _header_fps(ds: pydicom.Dataset) -> float | None:
    if ds.get("FrameTime", None):
        return 1000.0 / float(ds.FrameTime)
    for keyword in ("CineRate", "RecommendedDisplayFrameRate"):
        if ds.get(keyword, None):
            return float(ds[keyword].value)
    assert "FrameTimeVector" not in ds, "extend the test: a file timed by FrameTimeVector"
    return None


# ---------------------------------------------------------------------------------------
# tests


def test_the_walk_finds_the_known_ultrasound_files() -> None:
    names = {path.name for _, path in FILES}
    assert {"OBXXXX1A.dcm", "examples_palette.dcm", "examples_ybr_color.dcm"} <= names
    if "pydicom-data" in _data_folders():
        assert {
            "OBXXXX1A_expb_2frame.dcm",
            "gdcm-US-ALOKA-16_big.dcm",
            "color3d_jpeg_baseline.dcm",
            "US1_J2KI.dcm",
            "JPGLosslessP14SV1_1s_1f_8b.dcm",
        } <= names
        assert sum(source == "pydicom-data" for source, _ in FILES) >= 16


@pytest.mark.parametrize(("source", "path"), FILES, ids=[p.name for _, p in FILES])
def test_ultrasound_file_matches_the_independent_reference(source: str, path: Path) -> None:
    header = pydicom.dcmread(path, stop_before_pixels=True)
    total = int(header.get("NumberOfFrames", 1) or 1)
    timed = any(header.get(k, None) for k in TIMING)
    options = {} if timed or total == 1 else {"fps": UNTIMED_FPS}
    if options:  # an untimed cine is refused until the caller says its rate
        with pytest.raises(VideoReadError, match="no frame timing"):
            load_video(path, indices=[0])
    wanted = sorted({0, total // 2, total - 1})[:MAX_FRAMES]

    full = load_video(path, indices=wanted, crop=False, mask=False, **options)
    assert full.frames.shape == (len(wanted), int(header.Rows), int(header.Columns), 3)
    assert full.fps == pytest.approx(_header_fps(header) or (UNTIMED_FPS if options else 1.0), rel=1e-6)
    for got, i in zip(full.frames, wanted, strict=True):
        reference, (max_diff, mean_diff) = _reference(path, i)
        assert np.ptp(got.reshape(-1, 3), axis=0).max() > 0, f"frame {i} is one flat colour"
        diff = np.abs(got.astype(int) - reference)
        assert diff.max() <= max_diff and diff.mean() <= mean_diff, (i, diff.max(), diff.mean())

    # As the pipeline reads it: cropped to the ultrasound region and masked outside the
    # sector. What is kept is the reference's pixels; what is masked is black.
    kept = load_video(path, indices=wanted, **options)
    y0, x0, y1, x1 = kept.meta["crop_box"]
    assert kept.frames.shape[1:3] == (y1 - y0, x1 - x0)
    window = full.frames[:, y0:y1, x0:x1]
    black = ~kept.frames.any(axis=-1)
    same = (kept.frames == window).all(axis=-1)
    assert (same | black).all()
    assert same.mean() > 0.3
    for frame in kept.frames:
        assert np.ptp(frame.reshape(-1, 3), axis=0).max() > 0


def test_big_endian_twins_load_as_their_little_endian_files() -> None:
    by_name = {path.name: path for _, path in FILES}
    pairs = [
        ("OBXXXX1A.dcm", "OBXXXX1A_expb.dcm"),
        ("OBXXXX1A_2frame.dcm", "OBXXXX1A_expb_2frame.dcm"),
        ("gdcm-US-ALOKA-16.dcm", "gdcm-US-ALOKA-16_big.dcm"),
    ]
    pairs = [(by_name[a], by_name[b]) for a, b in pairs if a in by_name and b in by_name]
    if not pairs:
        pytest.skip("pydicom-data is not installed")
    for little, big in pairs:
        a = load_video(little, fps=UNTIMED_FPS, crop=False, mask=False).frames
        b = load_video(big, fps=UNTIMED_FPS, crop=False, mask=False).frames
        assert a.mean() > 10, little.name
        np.testing.assert_array_equal(a, b)
