"""DICOM echo cines: decoding to RGB, timing, ultrasound-region crop and sector mask.

Colour is where published echo pipelines go wrong, so the conversion is explicit:
pixels are decoded *raw* (``pydicom.pixels`` decoders with ``raw=True``) and the
photometric interpretation the decoder reports for what it returned decides the one
conversion applied - YBR_FULL/YBR_FULL_422 through ``convert_color_space``, PALETTE
COLOR through the file's palette read in its own byte order (:func:`palette_table`),
MONOCHROME1 inverted, MONOCHROME2 as is. (pydicom's ``ds.pixel_array`` already converts
YBR to RGB while the header still says YBR; converting again gives the well-known green
tint.) A conversion that turns varying pixels into flat frames raises rather than
return a blank video.

Only the frames a clip needs are decoded, plus a few evenly spaced frames that locate
the sector: the pixels that change over time. Everything outside it - ECG trace,
burnt-in text, calipers - is set to black, and the frame is cropped to the
ultrasound region of the header (SequenceOfUltrasoundRegions) or, without one, to
the sector. The returned metadata is de-identified (see :mod:`echoclip.data.deid`), and
errors name the file with the components that hold its patient's data replaced.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from echoclip import atomic
from echoclip.data.deid import dicom_meta, identifying_labels, positive_number, redact, redact_path
from echoclip.data.scale import region_scale
from echoclip.data.video import IndexSelector, Video, frame_indices, register_reader
from echoclip.errors import VideoReadError

__all__ = [
    "read_dicom",
    "probe_dicom",
    "write_dicom",
    "find_sector",
    "dicom_frame_rate",
    "palette_table",
]

log = logging.getLogger(__name__)

# Frames sampled evenly over a cine to find the sector; fixed per video, so every
# clip of one video gets the same crop and mask.
SECTOR_PROBE_FRAMES = 8
_US_MULTIFRAME_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.3.1"


def _is_dicom(head: bytes) -> bool:
    return head[128:132] == b"DICM"


@register_reader("dicom", sniff=_is_dicom, priority=10)
def read_dicom(
    path: str | os.PathLike[str],
    indices: Sequence[int] | IndexSelector | None = None,
    n: int | None = None,
    target_fps: float | None = None,
    start: int = 0,
    *,
    fps: float | None = None,
    crop: bool = True,
    mask: bool = True,
    salt: str | None = None,
) -> Video:
    """Read a single- or multi-frame DICOM as an RGB :class:`Video`.

    Args:
        indices, n, target_fps, start: which frames to decode, as in
            :func:`echoclip.data.video.read_container` (default: all).
        fps: frame rate to use when the header has no timing (FrameTime,
            FrameTimeVector, CineRate, RecommendedDisplayFrameRate). A single frame
            without timing gets 1 fps.
        crop: crop to the ultrasound region (or the detected sector).
        mask: set pixels outside the sector to black.
        salt: salt of the study/series UID hashes in ``meta`` (see :mod:`echoclip.data.deid`).

    Raises:
        VideoReadError: not DICOM, no pixel data, truncated, no decoder for the
            transfer syntax, no frame timing, or varying pixels that convert to flat
            frames. Messages never carry the header's patient data: the file is named
            with each path component holding one replaced whole (``.../[patient]/IM1.dcm``,
            also the error's ``path``) and the cause with such values as ``[redacted]``.
    """
    path = Path(path)
    phi: dict[str, str] | None = None
    with _pydicom_quiet():
        try:
            ds = _read_dataset(path)
            phi = identifying_labels(ds) if len(ds) else None
            return _read_pixels(ds, path, indices, n, target_fps, start, fps, crop, mask, salt)
        except VideoReadError as e:
            shown, reason = _redacted(str(e), path, phi if phi is not None else _header_labels(path))
            raise VideoReadError(f"{shown}: {reason}", path=shown, reason=reason) from None
        except (ValueError, TypeError) as e:
            # Caller errors (bad indices) keep their type; the text is still redacted.
            shown, reason = _redacted(str(e), path, phi if phi is not None else _header_labels(path))
            raise type(e)(f"{shown}: {reason}") from None


def _redacted(message: str, path: Path, phi: dict[str, str]) -> tuple[PurePath, str]:
    """The file and the cause of a ``"<path>: <cause>"`` message, each without patient data.

    The path is redacted by whole components and the cause by whole words, apart: a
    header value such as "OB" must not be cut out of the middle of a file name.
    """
    reason = message.removeprefix(f"{path}: ")
    return redact_path(path, values=phi), redact(reason, values=phi)


def _header_labels(path: Path) -> dict[str, str]:
    """The identifying values of a file whose full read failed, from its header alone.

    A file cut off in its pixel data parses as an empty data set, yet its header - and
    the patient's name, which may also be in its path - is intact.
    """
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return identifying_labels(pydicom.dcmread(path, stop_before_pixels=True))
        except Exception:  # nothing readable: nothing known to redact
            return {}


# what _to_rgb8 converts
_PHOTOMETRICS = frozenset(
    ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT", "PALETTE COLOR", "MONOCHROME1", "MONOCHROME2")
)


def probe_dicom(
    path: str | os.PathLike[str],
    *,
    fps: float | None = None,
    salt: str | None = None,
    header: tuple[Any, int] | None = None,
) -> dict[str, Any]:
    """What :func:`read_dicom` gives for the whole file, found without decoding a pixel.

    Reads the header up to the pixel data and walks the pixel data's layout (its length,
    or the items of encapsulated data), not its content. Returns the de-identified
    ``meta`` of the video a read would give, with ``fps`` and ``frames`` added and
    ``height``, ``width``, ``crop_box`` and ``cm_per_px`` of its ultrasound region. A
    file without a region is cropped on read to the sector its pixels show, which a
    probe cannot see: its ``height`` and ``width`` are the frame's (``crop_box`` the
    whole frame).

    ``header``: the file's data set as ``dcmread(fp, stop_before_pixels=True)`` read it
    and ``fp.tell()`` after, for a caller that has read the header already.

    Example::

        probe_dicom("IM0001.dcm")["frames"]  # NumberOfFrames, the file read no further

    Raises:
        VideoReadError: whatever :func:`read_dicom` rejects before decoding - not
            DICOM, no (or float) pixel data, no Rows/Columns, no frame timing, no
            decoder for the transfer syntax, a photometric interpretation it does not
            convert - and pixel data that ends before its frames do (a file cut
            short). What only decoding shows (a corrupt JPEG frame, flat colour) is
            found when the file is read. Messages are redacted as :func:`read_dicom`'s.
    """
    path = Path(path)
    ds = None
    with _pydicom_quiet():
        try:
            try:
                fp = open(path, "rb")  # noqa: SIM115 - closed below; open errors get their own message
            except FileNotFoundError:
                raise VideoReadError(f"{path}: file not found") from None
            except IsADirectoryError:
                raise VideoReadError(f"{path}: is a directory, not a video file") from None
            except OSError as e:
                raise VideoReadError(f"{path}: cannot open ({type(e).__name__})") from None
            with fp:
                if header is None:
                    ds = _read_dataset(path, fp, stop_before_pixels=True)
                else:
                    ds = header[0]
                    fp.seek(header[1])
                return _probe(ds, fp, path, fps, salt)
        except (ValueError, TypeError) as e:  # VideoReadError among them
            # the header's values are looked up only for a message: most files have none
            phi = identifying_labels(ds) if ds is not None and len(ds) else _header_labels(path)
            shown, reason = _redacted(str(e), path, phi)
            if isinstance(e, VideoReadError):
                raise VideoReadError(f"{shown}: {reason}", path=shown, reason=reason) from None
            raise type(e)(f"{shown}: {reason}") from None


def _probe(ds: Any, fp: Any, path: Path, fps: float | None, salt: str | None) -> dict[str, Any]:
    """:func:`probe_dicom` of a header read from ``fp``, which stands at the pixel data element."""
    _require_data_set(ds, path)
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    # a deflated data set is inflated in memory: its offsets are not the file's
    layout = None if tsyntax is None or tsyntax.is_deflated else _pixel_element(ds, fp, path)
    num_frames, rows, cols = _frame_shape(ds, path)
    source_fps, fps_source = dicom_frame_rate(ds, num_frames, fps, path)
    _decoder(ds, path)
    photometric = str(ds.get("PhotometricInterpretation", "") or "")
    if photometric not in _PHOTOMETRICS:
        raise VideoReadError(f"{path}: photometric interpretation {photometric!r} is not supported")
    if layout is not None:
        _check_pixel_layout(ds, fp, path, *layout, num_frames, rows, cols, photometric)

    meta = dicom_meta(ds, salt)
    region = _image_region(meta.get("ultrasound_regions", []), rows, cols)
    box = (0, 0, rows, cols)
    if region is not None:
        box = (region["y0"], region["x0"], region["y1"] + 1, region["x1"] + 1)
    meta.update(
        fps=source_fps,
        frames=num_frames,
        height=box[2] - box[0],
        width=box[3] - box[1],
        source_height=rows,
        source_width=cols,
        source_frames=num_frames,
        source_fps=source_fps,
        fps_source=fps_source,
        crop_box=box,
        cm_per_px=region_scale(region),
    )
    return meta


def _pixel_element(ds: Any, fp: Any, path: Path) -> tuple[int, int, int]:
    """Where the pixel data's value starts in ``fp``, its declared length and the file's size.

    ``fp`` stands where ``dcmread(..., stop_before_pixels=True)`` stopped: at the tag of
    the pixel data, or at the end of a file without any.
    """
    start = fp.tell()
    size = fp.seek(0, os.SEEK_END)
    fp.seek(start)
    implicit, little = getattr(ds, "original_encoding", (False, True))
    order = "<" if little is not False else ">"
    head = fp.read(8)
    if len(head) < 8:
        raise VideoReadError(f"{path}: {_no_pixel_data(ds)}")
    group, element = struct.unpack(f"{order}HH", head[:4])
    if (group, element) in ((0x7FE0, 0x0008), (0x7FE0, 0x0009)):
        raise VideoReadError(f"{path}: {_FLOAT_PIXELS}")
    if (group, element) != (0x7FE0, 0x0010):
        raise VideoReadError(f"{path}: {_no_pixel_data(ds)}")
    if implicit:
        return start + 8, struct.unpack(f"{order}L", head[4:])[0], size
    if head[4:6] in (b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN"):  # a 4-byte length after 2 reserved
        more = fp.read(4)
        if len(more) < 4:
            raise VideoReadError(f"{path}: DICOM file is truncated (it ends in the pixel data's header)")
        return start + 12, struct.unpack(f"{order}L", more)[0], size
    return start + 8, struct.unpack(f"{order}H", head[6:])[0], size


def _check_pixel_layout(
    ds: Any,
    fp: Any,
    path: Path,
    value_at: int,
    length: int,
    size: int,
    frames: int,
    rows: int,
    cols: int,
    photometric: str,
) -> None:
    """Raise when the pixel data cannot hold ``frames`` frames: cut short, too small, or too few items."""
    if length != 0xFFFFFFFF:  # native: one block of known length
        samples = 2 if photometric == "YBR_FULL_422" else int(ds.get("SamplesPerPixel", 1) or 1)
        bits = int(ds.get("BitsAllocated", 8) or 8)
        needed = -(-frames * rows * cols * samples * bits // 8)
        if value_at + length > size:
            raise VideoReadError(
                f"{path}: DICOM file is truncated: its pixel data ends {value_at + length - size} bytes early"
            )
        if length < needed:
            raise VideoReadError(
                f"{path}: pixel data holds {length} bytes; {frames} frames of {cols}x{rows} need {needed}"
            )
        return
    # encapsulated (PS3.5 A.4): a basic offset table item, then at least one item per frame
    items, at = 0, value_at
    while True:
        fp.seek(at)
        head = fp.read(8)
        if head[:4] == b"\xfe\xff\xdd\xe0":  # the end marker's tag (pydicom needs no more of it)
            break
        if len(head) < 8:
            raise VideoReadError(
                f"{path}: DICOM file is truncated: its pixel data ends after {max(items - 1, 0)} of "
                f"{frames} frames' fragments"
            )
        group, element, item_length = struct.unpack("<HHL", head)
        if (group, element) != (0xFFFE, 0xE000) or item_length == 0xFFFFFFFF:
            raise VideoReadError(
                f"{path}: cannot parse the encapsulated pixel data (a bad item at byte {at})"
            )
        at += 8 + item_length
        if at > size:
            raise VideoReadError(
                f"{path}: DICOM file is truncated: its pixel data ends in fragment {items} of {frames} frames"
            )
        items += 1
    if items - 1 < frames:
        raise VideoReadError(
            f"{path}: encapsulated pixel data holds {max(items - 1, 0)} fragments for {frames} frames"
        )


_reading = threading.local()


class _DropInReader(logging.Filter):
    """Drops pydicom's log records made inside :func:`read_dicom` (in that thread only).

    pydicom logs the full path of a file it finds odd, and quotes element values; the
    error the reader raises gives the cause without either.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_reading, "active", False)


@contextmanager
def _pydicom_quiet() -> Iterator[None]:
    logger = logging.getLogger("pydicom")
    if not any(isinstance(f, _DropInReader) for f in logger.filters):
        logger.addFilter(_DropInReader())
    outer = getattr(_reading, "active", False)
    _reading.active = True
    try:
        yield
    finally:
        _reading.active = outer


def _read_dataset(path: Path, fp: Any = None, **kwargs: Any) -> Any:
    """The data set of ``path`` (read from ``fp`` when given; ``kwargs`` go to ``dcmread``)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    kwargs = kwargs or {"defer_size": "64 KB"}
    with warnings.catch_warnings():
        # pydicom warns about odd element values by quoting them: those may be patient data.
        warnings.simplefilter("ignore")
        try:
            return pydicom.dcmread(path if fp is None else fp, **kwargs)
        except FileNotFoundError:
            raise VideoReadError(f"{path}: file not found") from None
        except IsADirectoryError:
            raise VideoReadError(f"{path}: is a directory, not a video file") from None
        except InvalidDicomError:
            raise VideoReadError(f"{path}: not a valid DICOM file") from None
        except EOFError:
            raise VideoReadError(f"{path}: DICOM file is truncated (the header ends early)") from None
        except Exception as e:  # the parser raises many types; their text may quote header values
            raise VideoReadError(f"{path}: cannot parse the DICOM header ({type(e).__name__})") from None


def _read_pixels(
    ds: Any,
    path: Path,
    indices: Sequence[int] | IndexSelector | None,
    n: int | None,
    target_fps: float | None,
    start: int,
    fps: float | None,
    crop: bool,
    mask: bool,
    salt: str | None,
) -> Video:
    _require_data_set(ds, path)
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise VideoReadError(f"{path}: {_no_pixel_data(ds)}")
    if "PixelData" not in ds:
        raise VideoReadError(f"{path}: {_FLOAT_PIXELS}")
    num_frames, rows, cols = _frame_shape(ds, path)
    source_fps, fps_source = dicom_frame_rate(ds, num_frames, fps, path)

    out_fps = source_fps
    if callable(indices):
        wanted = np.asarray(indices(num_frames, source_fps), dtype=np.int64)
    elif indices is None and (n is not None or target_fps is not None or start):
        wanted = frame_indices(num_frames, source_fps, n=n, target_fps=target_fps, start=start)
        out_fps = source_fps if target_fps is None else float(target_fps)
    elif indices is None:
        wanted = np.arange(num_frames)
    else:
        wanted = np.asarray(indices, dtype=np.int64)
    if wanted.size == 0 or wanted.min() < 0 or wanted.max() >= num_frames:
        raise ValueError(f"{path}: frame indices must lie in [0, {num_frames}), got {wanted.tolist()[:8]}")

    meta = dicom_meta(ds, salt)
    region = _image_region(meta.get("ultrasound_regions", []), rows, cols)
    probe = np.unique(
        np.linspace(0, num_frames - 1, min(num_frames, SECTOR_PROBE_FRAMES)).round().astype(int)
    )
    use_sector = num_frames > 1 and (mask or (crop and region is None))
    needed = np.unique(np.concatenate([wanted, probe])) if use_sector else np.unique(wanted)
    decoded = dict(zip(needed.tolist(), _decode_rgb(ds, path, needed), strict=True))

    sector = None
    if use_sector:
        within = _region_mask(region, rows, cols)
        sector = find_sector(np.stack([decoded[int(i)] for i in probe]), within=within)
    keep = sector if sector is not None else _region_mask(region, rows, cols)
    frames = np.stack([decoded[int(i)] for i in wanted])
    if mask and keep is not None:
        frames[:, ~keep] = 0
    box = (0, 0, rows, cols)
    if crop:
        if region is not None:
            box = (region["y0"], region["x0"], region["y1"] + 1, region["x1"] + 1)
        elif sector is not None:
            ys, xs = np.nonzero(sector)
            box = (int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1)
        frames = np.ascontiguousarray(frames[:, box[0] : box[2], box[1] : box[3]])

    meta.update(
        height=int(frames.shape[1]),
        width=int(frames.shape[2]),
        source_height=rows,
        source_width=cols,
        source_frames=num_frames,
        source_fps=source_fps,
        fps_source=fps_source,
        crop_box=box,
        sector_masked=bool(mask and keep is not None),
        # the pixel size of the region the image lies in (the one kept); unknown without one
        cm_per_px=region_scale(region),
    )
    return Video(frames, out_fps, meta)


_FLOAT_PIXELS = "float pixel data is not an image this reader handles"


def _require_data_set(ds: Any, path: Path) -> None:
    if len(ds) == 0:
        raise VideoReadError(f"{path}: DICOM file holds no data set after its header (truncated or corrupt)")


def _no_pixel_data(ds: Any) -> str:
    return f"no pixel data (SOP class {_uid_name(ds.get('SOPClassUID', None)) or 'unknown'})"


def _frame_shape(ds: Any, path: Path) -> tuple[int, int, int]:
    """NumberOfFrames, Rows and Columns of an image."""
    try:
        return int(ds.get("NumberOfFrames", 1) or 1), int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError):
        raise VideoReadError(f"{path}: the image pixel module is incomplete (Rows, Columns)") from None


def dicom_frame_rate(
    ds: Any, num_frames: int, fps: float | None = None, path: Path | str = ""
) -> tuple[float, str]:
    """Frames per second of a DICOM cine and the element it came from.

    Order: FrameTime (ms), the mean of FrameTimeVector, CineRate,
    RecommendedDisplayFrameRate, then the caller's ``fps`` for a file without timing.
    A single frame without timing is a still: 1 fps.
    """
    frame_time = positive_number(ds.get("FrameTime", None))
    if frame_time:
        return 1000.0 / frame_time, "FrameTime"
    vector = ds.get("FrameTimeVector", None)
    if vector is not None and not isinstance(vector, (str, bytes)) and len(vector) > 1:
        steps = [positive_number(v) for v in list(vector)[1:]]  # the first entry is 0 by definition
        if steps and all(steps):
            return 1000.0 / float(np.mean(steps)), "FrameTimeVector"
    for keyword in ("CineRate", "RecommendedDisplayFrameRate"):
        rate = positive_number(ds.get(keyword, None))
        if rate:
            return rate, keyword
    if fps is not None:
        if not (np.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a positive number, got {fps!r}")
        return float(fps), "argument"
    if num_frames == 1:
        return 1.0, "still"
    raise VideoReadError(
        f"{path}: no frame timing in the header (FrameTime, FrameTimeVector, CineRate or "
        "RecommendedDisplayFrameRate); give its frame rate to read it (--fps, or fps= in Python)"
    )


def _uid_name(uid: Any) -> str:
    return str(getattr(uid, "name", "") or uid or "")


# ---------------------------------------------------------------------------------------
# pixels -> RGB


def _decode_rgb(ds: Any, path: Path, indices: np.ndarray) -> list[np.ndarray]:
    """Decode frames ``indices`` and convert each to ``uint8 [H,W,3]`` RGB exactly once."""
    from pydicom.uid import JPEGBaseline8Bit, JPEGExtended12Bit

    tsyntax, decoder = _decoder(ds, path)
    # Pillow's libjpeg-turbo decodes baseline JPEG about twice as fast as the other plugins.
    fast_jpeg = tsyntax in (JPEGBaseline8Bit, JPEGExtended12Bit) and "pillow" in decoder.available_plugins
    plugin = "pillow" if fast_jpeg else ""
    out: list[np.ndarray] = []
    palette: tuple[np.ndarray, int] | None = None
    # A conversion that maps varying stored values to one colour has misread the file
    # (a palette in the wrong byte order once gave all-black videos): say so, not black.
    stored_varies = converted_varies = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            frames = decoder.iter_array(
                ds, indices=[int(i) for i in indices], raw=True, decoding_plugin=plugin
            )
            for arr, info in frames:
                photometric = str(info["photometric_interpretation"])
                if photometric == "PALETTE COLOR" and palette is None:
                    palette = palette_table(ds, path)
                rgb = _to_rgb8(arr, photometric, ds, path, palette)
                if not converted_varies:
                    converted_varies = not _is_constant(rgb)
                    stored_varies = stored_varies or not _is_constant(arr)
                out.append(rgb)
        except VideoReadError:
            raise
        except Exception as e:  # decoders raise many types for broken data
            reason = f"{type(e).__name__}: {e}".strip()
            raise VideoReadError(f"{path}: cannot decode pixel data ({_short(reason)})") from None
    if len(out) != len(indices):
        raise VideoReadError(f"{path}: pixel data holds {len(out)} of {len(indices)} requested frames")
    if stored_varies and not converted_varies:
        raise VideoReadError(
            f"{path}: every frame is one flat colour after converting {photometric} to RGB although "
            f"the stored pixels vary (bits stored {ds.get('BitsStored', '?')}): refusing to return a blank video"
        )
    return out


def _decoder(ds: Any, path: Path) -> tuple[Any, Any]:
    """The file's transfer syntax and an installed pydicom decoder for it."""
    from pydicom.pixels import get_decoder

    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if tsyntax is None:
        raise VideoReadError(f"{path}: no transfer syntax in the file meta information")
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError:
        raise VideoReadError(f"{path}: pixel data in {_uid_name(tsyntax)} cannot be decoded") from None
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies)
        raise VideoReadError(f"{path}: no decoder installed for {_uid_name(tsyntax)} ({missing})")
    return tsyntax, decoder


def _is_constant(arr: np.ndarray) -> bool:
    """Whether every pixel of one frame ``[H,W]`` or ``[H,W,C]`` has the same value."""
    pixels = arr.reshape(-1, arr.shape[-1]) if arr.ndim == 3 else arr.reshape(-1, 1)
    return bool((pixels == pixels[0]).all())


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _to_rgb8(
    arr: np.ndarray, photometric: str, ds: Any, path: Path, palette: tuple[np.ndarray, int] | None = None
) -> np.ndarray:
    """One decoded frame in ``photometric`` (as the decoder reports it) -> ``uint8 [H,W,3]`` RGB.

    ``palette`` is the file's :func:`palette_table`, read once per video.
    """
    from pydicom.pixels import convert_color_space

    if photometric in ("YBR_FULL", "YBR_FULL_422"):
        # The decoder already undid the 4:2:2 subsampling; what remains is full-range YCbCr.
        return convert_color_space(_to_uint8(arr, ds), "YBR_FULL", "RGB")
    if photometric in ("RGB", "YBR_RCT", "YBR_ICT"):
        # JPEG 2000 decoders apply the inverse RCT/ICT themselves and return RGB.
        return _to_uint8(arr, ds)
    if photometric == "PALETTE COLOR":
        table, first = palette if palette is not None else palette_table(ds, path)
        # Values below the first mapped one take the first entry, above the last the last.
        index = np.clip(arr.astype(np.int64) - first, 0, len(table) - 1)
        return table[index]
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        grey = _grey_to_uint8(arr, ds)
        if photometric == "MONOCHROME1":
            grey = 255 - grey  # MONOCHROME1: the lowest value is white
        return np.repeat(grey[..., None], 3, axis=-1)
    raise VideoReadError(f"{path}: photometric interpretation {photometric!r} is not supported")


def palette_table(ds: Any, path: Path | str = "") -> tuple[np.ndarray, int]:
    """The palette of a PALETTE COLOR image as ``uint8 [N, 3]`` RGB, and the first stored value it maps.

    The table data are read in the byte order of the file's transfer syntax (pydicom's
    ``apply_color_lut`` reads them as little endian whatever the file says, which gave
    all-black videos for big-endian files). Entries become 8 bits by what they hold:
    16-bit entries keep their high byte; a table whose every entry fits in 8 bits is
    8-bit, whatever its descriptor says (8-bit values in 16-bit words are common, and a
    16-bit palette that dark would show nothing).
    """
    descriptor = ds.get("RedPaletteColorLookupTableDescriptor", None)
    try:
        entries, first, declared = (int(v) for v in descriptor)
    except (TypeError, ValueError):
        raise VideoReadError(
            f"{path}: PALETTE COLOR image without a valid Red Palette Color Lookup Table Descriptor"
        ) from None
    entries = entries or 2**16  # 0 means 65536 entries
    if "RedPaletteColorLookupTableData" in ds:
        table = np.stack(
            [_palette_channel(ds, colour, entries, path) for colour in ("Red", "Green", "Blue")], 1
        )
    elif "SegmentedRedPaletteColorLookupTableData" in ds:
        from pydicom.pixels import apply_color_lut

        # pydicom expands segmented tables in the file's byte order; the ramp reads the table out.
        table = np.asarray(apply_color_lut(np.arange(first, first + entries), ds))[:, :3]
    else:
        raise VideoReadError(f"{path}: PALETTE COLOR image without palette data")
    top = int(table.max(initial=0))
    bits = 8 if top <= 255 else max(declared, top.bit_length())
    return (table.astype(np.int64) >> (bits - 8)).astype(np.uint8), first


def _palette_channel(ds: Any, colour: str, entries: int, path: Path | str) -> np.ndarray:
    """One channel's palette entries as integers, read in the file's byte order."""
    value = ds[f"{colour}PaletteColorLookupTableData"].value
    if not isinstance(value, (bytes, bytearray)):  # stored as US: pydicom has decoded it
        data = np.asarray(value, dtype=np.int64).ravel()
    elif len(value) >= 2 * entries:
        data = np.frombuffer(value, dtype=("<" if _little_endian(ds) else ">") + "u2")
    else:
        data = np.frombuffer(value, dtype=np.uint8)
    if len(data) < entries:
        raise VideoReadError(
            f"{path}: the {colour.lower()} palette holds {len(data)} entries; its descriptor says {entries}"
        )
    return data[:entries].astype(np.int64)


def _little_endian(ds: Any) -> bool:
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        return bool(tsyntax.is_little_endian)
    except (AttributeError, ValueError):
        encoding = getattr(ds, "original_encoding", (None, True))
        return encoding[1] is not False


def _to_uint8(arr: np.ndarray, ds: Any) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    bits = int(ds.get("BitsStored", arr.dtype.itemsize * 8) or 8)
    return (arr.astype(np.int64) >> max(bits - 8, 0)).clip(0, 255).astype(np.uint8)


def _grey_to_uint8(arr: np.ndarray, ds: Any) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    from pydicom.pixels import apply_voi_lut

    values = arr.astype(np.float64)
    if "WindowCenter" in ds or "VOILUTSequence" in ds:
        values = apply_voi_lut(arr, ds).astype(np.float64)
    bits = int(ds.get("BitsStored", 16) or 16)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    low = -(2 ** (bits - 1)) if signed else 0
    high = low + 2**bits - 1
    return np.round((values - low) / (high - low) * 255).clip(0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------
# region and sector


def _image_region(regions: list[dict[str, Any]], rows: int, cols: int) -> dict[str, int] | None:
    """The largest 2-D image region that lies inside the frame (with its pixel size), or None.

    Some files (resized exports, for one) keep the region of the original frame size;
    a region outside the frame is ignored rather than trusted.
    """
    # Max X1/Y1 are inclusive; some scanners write the frame size itself, one too many.
    clamped = [
        {**r, "x1": min(int(r["x1"]), cols - 1), "y1": min(int(r["y1"]), rows - 1)}
        for r in regions
        if r["x1"] <= cols and r["y1"] <= rows
    ]
    fits = [
        r
        for r in clamped
        if int(r.get("spatial_format", 1)) in (1, 0) and 0 <= r["x0"] < r["x1"] and 0 <= r["y0"] < r["y1"]
    ]
    if regions and not fits:
        log.info("ultrasound region lies outside the %dx%d frame; using the detected sector", cols, rows)
    if not fits:
        return None
    best = max(fits, key=lambda r: (r["x1"] - r["x0"]) * (r["y1"] - r["y0"]))
    return {**best, **{k: int(best[k]) for k in ("x0", "y0", "x1", "y1")}}


def _region_mask(region: dict[str, int] | None, rows: int, cols: int) -> np.ndarray | None:
    if region is None:
        return None
    keep = np.zeros((rows, cols), dtype=bool)
    keep[region["y0"] : region["y1"] + 1, region["x0"] : region["x1"] + 1] = True
    return keep


def find_sector(
    frames: np.ndarray,
    within: np.ndarray | None = None,
    threshold: float = 6.0,
    min_fraction: float = 0.05,
) -> np.ndarray | None:
    """The ultrasound sector: the largest region of pixels that change over time.

    Burnt-in text and labels are static; an ECG trace moves but lies apart from the
    sector, so the largest connected component of changing pixels is the image, and
    its convex hull (a fan is convex) fills the dark, still parts inside it such as
    the blood pool. Returns a bool mask ``[H, W]``, or None when too few pixels
    change (a still frame, a frozen loop).

    Args:
        frames: ``[K, H, W]`` or ``[K, H, W, 3]``, at least two frames.
        within: optional bool mask ``[H, W]`` the sector must lie in (the header's region).
        threshold: grey-level range over time above which a pixel counts as changing.
        min_fraction: smallest sector, as a fraction of the searched area.
    """
    from scipy import ndimage

    frames = np.asarray(frames)
    if frames.ndim not in (3, 4) or frames.shape[0] < 2:
        return None
    change = frames.max(axis=0).astype(np.int16) - frames.min(axis=0)
    if change.ndim == 3:
        change = change.max(axis=-1)  # the largest change of any channel
    changing = change > threshold
    if within is not None:
        changing &= within
    changing = ndimage.binary_opening(changing, structure=np.ones((2, 2), dtype=bool))
    pad = 3
    closed = ndimage.binary_closing(
        np.pad(changing, pad), structure=np.ones((2 * pad - 1, 2 * pad - 1), dtype=bool)
    )[pad:-pad, pad:-pad]
    labels, count = ndimage.label(closed)
    if count == 0:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    sector = labels == (int(np.argmax(sizes)) + 1)
    area = within.sum() if within is not None else sector.size
    if sector.sum() < min_fraction * area:
        return None
    sector = _convex_hull_mask(sector)
    if within is not None:
        sector &= within
    return sector


def _convex_hull_mask(mask: np.ndarray) -> np.ndarray:
    """The filled convex hull of a bool mask: a fan (sector plus arc) is convex."""
    from scipy.spatial import ConvexHull, QhullError

    points = np.argwhere(mask)
    try:
        hull = ConvexHull(points)
    except (QhullError, ValueError):  # a degenerate (line-like) component
        return mask
    (r0, c0), (r1, c1) = points.min(axis=0), points.max(axis=0) + 1
    rows, cols = np.mgrid[r0:r1, c0:c1].astype(np.float64)
    inside = np.ones(rows.shape, dtype=bool)
    for a, b, c in hull.equations:  # inside: a*row + b*col + c <= 0 for every facet
        inside &= rows * a + cols * b + c <= 1e-9
    out = mask.copy()
    out[r0:r1, c0:c1] |= inside
    return out


# ---------------------------------------------------------------------------------------
# writing


def write_dicom(
    video: Video | np.ndarray,
    path: str | os.PathLike[str],
    fps: float | None = None,
    *,
    photometric: str = "RGB",
    compression: str | None = None,
    regions: Sequence[dict[str, int | float]] | None = None,
    tags: dict[str, Any] | None = None,
    quality: int = 90,
) -> Path:
    """Write frames ``uint8 [T,H,W,3]`` as an ultrasound multi-frame DICOM, atomically.

    Exports a simulated study in the form a hospital hands over, so the DICOM path of
    the pipeline can be exercised without patient data.

    Args:
        fps: written as FrameTime and CineRate; ``None`` writes no timing.
        photometric: ``"RGB"``, ``"YBR_FULL"`` or ``"MONOCHROME2"`` (the mean of the
            channels); JPEG always writes ``"YBR_FULL_422"``, as scanners do.
        compression: ``None`` (explicit VR little endian), ``"rle"`` (RLE lossless) or
            ``"jpeg"`` (JPEG baseline, 4:2:2, through Pillow).
        regions: SequenceOfUltrasoundRegions entries with ``x0, y0, x1, y1`` (inclusive)
            and optionally ``delta_x, delta_y`` (cm per pixel), ``spatial_format`` and
            ``data_type`` (PS3.3 C.8.5.5.1: default 1 and 1, a 2-D tissue image).
        tags: extra header elements by keyword (e.g. ``{"Manufacturer": "ACME"}``).
    """
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.pixels import convert_color_space
    from pydicom.uid import (
        ExplicitVRLittleEndian,
        JPEGBaseline8Bit,
        RLELossless,
        generate_uid,
    )

    if isinstance(video, Video):
        frames, fps = video.frames, (fps if fps is not None else video.fps)
    else:
        frames = np.asarray(video)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [T,H,W,3], got {frames.dtype} {tuple(frames.shape)}")
    if compression not in (None, "rle", "jpeg"):
        raise ValueError(f"compression must be None, 'rle' or 'jpeg', got {compression!r}")
    if photometric not in ("RGB", "YBR_FULL", "MONOCHROME2"):
        raise ValueError(f"photometric must be 'RGB', 'YBR_FULL' or 'MONOCHROME2', got {photometric!r}")
    path = Path(path)
    t, h, w, _ = frames.shape

    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = _US_MULTIFRAME_SOP_CLASS
    ds.SOPClassUID = _US_MULTIFRAME_SOP_CLASS
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "US"
    ds.Manufacturer = "echoclip"
    if fps is not None:
        ds.FrameTime = f"{1000.0 / fps:.4f}"
        ds.CineRate = int(round(fps))
        ds.FrameIncrementPointer = pydicom.tag.Tag("FrameTime")
    if regions:
        ds.SequenceOfUltrasoundRegions = [_region_item(r) for r in regions]

    if compression == "jpeg":
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        _set_image_module(ds, t, h, w, samples=3, photometric="YBR_FULL_422")
        from pydicom.encaps import encapsulate

        ds.PixelData = encapsulate([_jpeg_bytes(f, quality) for f in frames])
        ds["PixelData"].VR = "OB"
        ds.LossyImageCompression = "01"
    else:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        if photometric == "MONOCHROME2":
            data = np.round(frames.astype(np.float32).mean(axis=-1)).astype(np.uint8)
        elif photometric == "YBR_FULL":
            data = convert_color_space(frames, "RGB", "YBR_FULL")
        else:
            data = frames
        ds.set_pixel_data(data if t > 1 else data[0], photometric, 8, generate_instance_uid=False)
        ds.NumberOfFrames = t
        if compression == "rle":
            ds.compress(RLELossless, generate_instance_uid=False)
    for keyword, value in (tags or {}).items():
        setattr(ds, keyword, value)
    # the file meta must name the instance the tags made (a still, a secondary capture)
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID

    with atomic.writing(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return path


def _set_image_module(ds: Any, t: int, h: int, w: int, samples: int, photometric: str) -> None:
    ds.NumberOfFrames = t
    ds.Rows, ds.Columns = h, w
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric
    if samples > 1:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0


def _jpeg_bytes(frame: np.ndarray, quality: int) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    # subsampling=1 is 4:2:2, what YBR_FULL_422 declares.
    Image.fromarray(frame, "RGB").save(buf, format="JPEG", quality=quality, subsampling=1)
    return buf.getvalue()


def _region_item(region: dict[str, int | float]) -> Any:
    import pydicom

    item = pydicom.Dataset()
    item.RegionSpatialFormat = int(region.get("spatial_format", 1))  # 1: 2-D image, 3: spectral
    item.RegionDataType = int(region.get("data_type", 1))  # 1 tissue, 2 colour flow, 3 PW, 4 CW
    item.RegionFlags = 0
    item.RegionLocationMinX0 = int(region["x0"])
    item.RegionLocationMinY0 = int(region["y0"])
    item.RegionLocationMaxX1 = int(region["x1"])
    item.RegionLocationMaxY1 = int(region["y1"])
    item.PhysicalUnitsXDirection = int(region.get("units_x", 3))  # 3: cm
    item.PhysicalUnitsYDirection = int(region.get("units_y", 3))
    item.PhysicalDeltaX = float(region.get("delta_x", 0.03))
    item.PhysicalDeltaY = float(region.get("delta_y", 0.03))
    return item
