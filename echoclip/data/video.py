"""The :class:`Video` type, the reader registry, and AVI/MP4 reading and writing with PyAV.

``load_video(path)`` chooses a reader by the file's content (DICOM files carry the
magic ``DICM`` at byte 128, NIfTI images theirs at byte 344, PNG and JPEG stills their
signatures; everything else goes to the container reader), never by its extension. Readers are registered by name, as MONAI registers its image readers::

    @register_reader("myformat", sniff=lambda head: head.startswith(b"MYFMT"))
    def read_myformat(path, **kwargs) -> Video: ...
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from echoclip import atomic
from echoclip.errors import VideoReadError
from echoclip.registry import Registry

__all__ = [
    "Video",
    "VideoReadError",
    "load_video",
    "save_video",
    "register_reader",
    "list_readers",
    "frame_indices",
    "intensity_to_uint8",
    "select_frames",
]


@dataclass
class Video:
    """A decoded echo video.

    Attributes:
        frames: ``uint8`` array ``[T, H, W, 3]``, RGB.
        fps: frames per second of ``frames`` (after any resampling).
        meta: de-identified metadata only (size, fps, frame count, modality, geometry,
            salted hashes for grouping). Never patient names, ids or dates.
    """

    frames: np.ndarray
    fps: float
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        frames = np.asarray(self.frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(
                f"Video frames must be uint8 [T,H,W,3], got {frames.dtype} {tuple(frames.shape)}"
            )
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"Video fps must be a positive number, got {self.fps!r}")
        self.frames = frames

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps

    def __repr__(self) -> str:
        keys = ", ".join(sorted(self.meta))
        return f"Video(frames={self.num_frames}x{self.height}x{self.width}, fps={self.fps:g}, meta=[{keys}])"


# ---------------------------------------------------------------------------------------
# reader registry

Reader = Callable[..., Video]
# ``(num_frames, fps) -> frame indices``: lets a reader ask its caller which frames to
# decode once the header is known.
IndexSelector = Callable[[int, float], Sequence[int]]
Sniffer = Callable[[bytes], bool]


@dataclass(frozen=True)
class _ReaderEntry:
    name: str
    read: Reader
    sniff: Sniffer
    priority: int


_READERS: Registry[_ReaderEntry] = Registry("video reader", ValueError)


def register_reader(name: str, sniff: Sniffer, priority: int = 0) -> Callable[[Reader], Reader]:
    """Register a video reader under ``name``.

    ``sniff(head)`` gets the first 4 KiB of the file and says whether the reader
    handles it; readers are tried from the highest ``priority`` down. The reader is
    called as ``read(path, **kwargs)`` and must raise :class:`VideoReadError` on bad input.
    """

    def decorator(read: Reader) -> Reader:
        _READERS[name] = _ReaderEntry(name, read, sniff, priority)
        return read

    return decorator


def list_readers() -> list[str]:
    """Names of the registered readers, highest priority first."""
    _ensure_builtin_readers()
    return [e.name for e in sorted(_READERS.values(), key=lambda e: -e.priority)]


def _ensure_builtin_readers() -> None:
    # The built-in readers register themselves when their modules are imported; importing
    # them here (not at package import) keeps `import echoclip` free of pydicom and nibabel.
    import echoclip.data.dicom  # noqa: F401
    import echoclip.data.images  # noqa: F401
    import echoclip.data.nifti  # noqa: F401


def load_video(path: str | os.PathLike[str], reader: str | None = None, **kwargs: Any) -> Video:
    """Read a video file (DICOM, AVI, MP4, ...) into a :class:`Video`.

    The reader is chosen by content unless ``reader`` names one. Keyword arguments go
    to the reader (e.g. ``fps=`` for a DICOM without timing tags).

    Raises:
        VideoReadError: the file is missing, empty, truncated or not a video.
    """
    path = Path(path)
    _ensure_builtin_readers()
    if reader is not None:
        return _READERS.get(reader).read(path, **kwargs)
    head = _read_head(path)
    for entry in sorted(_READERS.values(), key=lambda e: -e.priority):
        if entry.sniff(head):
            return entry.read(path, **kwargs)
    raise VideoReadError(f"{path}: not a recognised video format")


def _read_head(path: Path, size: int = 4096) -> bytes:
    try:
        with open(path, "rb") as f:
            head = f.read(size)
    except FileNotFoundError:
        raise VideoReadError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise VideoReadError(f"{path}: is a directory, not a video file") from None
    except OSError as e:
        raise VideoReadError(f"{path}: cannot open ({e.strerror or e})") from None
    if not head:
        raise VideoReadError(f"{path}: file is empty (0 bytes)")
    return head


def intensity_to_uint8(values: np.ndarray) -> np.ndarray:
    """Grey values of any numeric type as ``uint8``, one rule for the whole array.

    ``uint8`` stays as it is; values that already lie in [0, 255] are rounded (an image
    stored as floats keeps its grey levels); any other range is stretched linearly to
    [0, 255]. The rule is applied to a whole sequence at once, never frame by frame, so
    that the brightness a cine has over the cardiac cycle is kept. NaN becomes 0.
    """
    values = np.asarray(values)
    if values.dtype == np.uint8:
        return values
    if values.dtype == bool:
        return values.astype(np.uint8) * 255
    x = np.nan_to_num(values.astype(np.float32, copy=False), nan=0.0, posinf=0.0, neginf=0.0)
    if x.size == 0:
        return x.astype(np.uint8)
    lo, hi = float(x.min()), float(x.max())
    if lo >= 0.0 and hi <= 255.0:
        return np.rint(x).astype(np.uint8)
    if hi <= lo:
        return np.zeros(x.shape, dtype=np.uint8)
    return np.rint((x - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def select_frames(
    num_frames: int,
    fps: float,
    indices: Sequence[int] | IndexSelector | None,
    n: int | None,
    target_fps: float | None,
    start: int,
    path: Path,
) -> np.ndarray | None:
    """The frame numbers a reader of a fully decoded file should keep (``None``: all of them).

    The same arguments as :func:`read_container`: ``indices`` (a list, or a function
    ``(num_frames, fps) -> indices``), or ``n``/``target_fps``/``start`` for :func:`frame_indices`.
    """
    if callable(indices):
        wanted = np.asarray(indices(num_frames, fps), dtype=np.int64)
    elif indices is None and (n is not None or target_fps is not None or start):
        wanted = frame_indices(num_frames, fps, n=n, target_fps=target_fps, start=start)
    elif indices is None:
        return None
    else:
        wanted = np.asarray(indices, dtype=np.int64)
    if wanted.size == 0 or wanted.min() < 0 or wanted.max() >= num_frames:
        raise ValueError(f"{path}: frame indices must lie in [0, {num_frames}), got {wanted.tolist()[:8]}")
    return wanted


# ---------------------------------------------------------------------------------------
# clip sampling


def frame_indices(
    num_frames: int,
    source_fps: float,
    n: int | None = None,
    target_fps: float | None = None,
    start: int = 0,
) -> np.ndarray:
    """Indices of the source frames that make up a clip.

    A clip of ``n`` frames resampled to ``target_fps`` starting at source frame
    ``start``; indices past the end wrap around (an echo cine loops), so any clip
    length is served by any video. With ``n=None`` every frame from ``start`` on is
    taken at the target rate.
    """
    if num_frames <= 0:
        raise ValueError("a video with no frames has no clips")
    step = 1.0 if target_fps is None else source_fps / target_fps
    if n is None:
        n = max(1, int(math.floor((num_frames - start) / step)))
    idx = start + np.floor(np.arange(n) * step + 1e-6).astype(np.int64)
    return idx % num_frames


# ---------------------------------------------------------------------------------------
# AVI / MP4 through PyAV


def _looks_like_container(head: bytes) -> bool:
    return True  # the container reader is the fallback; FFmpeg decides what it can open


@register_reader("container", sniff=_looks_like_container, priority=-100)
def read_container(
    path: str | os.PathLike[str],
    indices: Sequence[int] | IndexSelector | None = None,
    n: int | None = None,
    target_fps: float | None = None,
    start: int = 0,
    fps: float | None = None,
) -> Video:
    """Read an AVI/MP4/... with PyAV, decoding only the frames a clip needs.

    With ``indices`` (or ``n``/``target_fps``/``start``, see :func:`frame_indices`)
    the reader seeks near the first wanted frame and decodes forward to the last one;
    with none of them it reads every frame. ``indices`` may also be a function
    ``(num_frames, fps) -> indices``, called once the header is read, so a caller can
    choose a clip (a random start, a whole cardiac cycle) without opening the file twice.
    ``fps`` is the frame rate to assume when the stream declares none (as for DICOM).
    """
    import av

    path = Path(path)
    _check_riff_size(path)
    try:
        container = av.open(str(path))
    except FileNotFoundError:
        raise VideoReadError(f"{path}: file not found") from None
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as e:
        raise VideoReadError(f"{path}: not a readable video container ({_ffmpeg_reason(e)})") from None
    with container:
        if not container.streams.video:
            raise VideoReadError(f"{path}: the file has no video stream")
        stream = container.streams.video[0]
        # slice threading only: frame threading starts a thread pool per file, which costs
        # more than it gains on short clips (60 MJPEG files: 0.125 s against 0.084 s)
        stream.thread_type = "SLICE"
        declared = float(stream.average_rate or stream.base_rate or stream.guessed_rate or 0)
        fps = declared if declared > 0 else float(fps or 0)
        if not fps > 0:
            raise VideoReadError(
                f"{path}: the video stream has no frame rate; give it to read the file (--fps, or fps= in Python)"
            )
        total = _count_frames(container, stream, fps)
        if callable(indices):
            if total is None:
                total = _decode_count(path)
            indices = indices(total, fps)
        elif indices is None and (n is not None or target_fps is not None or start):
            if total is None:
                total = _decode_count(path)
            indices = frame_indices(total, fps, n=n, target_fps=target_fps, start=start)
        if indices is None:
            frames = _decode_all(container, stream, path, _header_frames(stream))
            out_fps = fps
        else:
            wanted = np.asarray(indices, dtype=np.int64)
            if wanted.size == 0 or wanted.min() < 0:
                raise ValueError(f"{path}: a clip needs at least one frame index, all >= 0")
            frames = _decode_indices(container, stream, wanted, fps, path)
            out_fps = fps if target_fps is None else float(target_fps)
    meta = {
        "source": "container",
        "codec": stream.codec_context.name,
        "source_fps": fps,
        "source_frames": total if total is not None else frames.shape[0],
        "height": int(frames.shape[1]),
        "width": int(frames.shape[2]),
    }
    return Video(frames, out_fps, meta)


def _check_riff_size(path: Path) -> None:
    """An AVI (RIFF) file shorter than its header says was cut off while being copied or written.

    FFmpeg reads such a file without complaint up to the cut, so a clip from it would
    silently be shorter than the study; the RIFF header lets us say so before decoding.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"AVI ":
                return
            declared = int.from_bytes(head[4:8], "little") + 8
            actual = os.fstat(f.fileno()).st_size
    except OSError:
        return  # the container reader reports unreadable files with their cause
    if actual < declared:
        raise VideoReadError(f"{path}: AVI file is truncated ({actual} of {declared} bytes)")


def _header_frames(stream: Any) -> int | None:
    frames = int(stream.frames or 0)
    return frames if 0 < frames < 2**31 else None


def _ffmpeg_reason(e: Exception) -> str:
    msg = getattr(e, "strerror", None) or str(e)
    return msg.split(":")[0].strip() if msg else type(e).__name__


def _count_frames(container: Any, stream: Any, fps: float) -> int | None:
    """Frame count from the header when it is plausible (PyAV sometimes says 0 or 2**32-1)."""
    frames = int(stream.frames or 0)
    if 0 < frames < 2**31:
        return frames
    if stream.duration is not None and stream.time_base is not None:
        return max(1, int(round(float(stream.duration * stream.time_base) * fps)))
    if container.duration:
        return max(1, int(round(container.duration / 1_000_000 * fps)))
    return None


def _decode_count(path: Path) -> int:
    import av

    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def _to_rgb(frame: Any) -> np.ndarray:
    # one thread: PyAV keeps its colour converter between calls, and a converter with a
    # thread pool made in a parent process waits forever in a forked DataLoader worker
    return frame.to_ndarray(format="rgb24", threads=1)


def _decode_all(container: Any, stream: Any, path: Path, expected: int | None = None) -> np.ndarray:
    import av

    out: list[np.ndarray] = []
    try:
        for frame in container.decode(stream):
            out.append(_to_rgb(frame))
    except av.error.FFmpegError as e:
        if not out:
            raise VideoReadError(f"{path}: cannot decode video ({_ffmpeg_reason(e)})") from None
        # A clip from a broken file is not trustworthy: fail loudly, naming where it broke.
        raise VideoReadError(
            f"{path}: video is truncated or corrupt after frame {len(out)} ({_ffmpeg_reason(e)})"
        ) from None
    if not out:
        raise VideoReadError(f"{path}: the video stream has no decodable frames")
    # One frame of slack: some muxers count a final empty packet as a frame.
    if expected is not None and len(out) < expected - 1:
        raise VideoReadError(f"{path}: video is truncated: {len(out)} of {expected} frames could be decoded")
    return np.stack(out)


def _frame_index(frame: Any, stream: Any, fps: float) -> int:
    if frame.pts is None:
        return -1
    return int(round(float(frame.pts * stream.time_base) * fps))


def _decode_indices(container: Any, stream: Any, wanted: np.ndarray, fps: float, path: Path) -> np.ndarray:
    """Decode the frames at ``wanted`` (sorted or not, repeats allowed), seeking once per run.

    Wrapped-around indices (a clip longer than the video) make the sorted list jump
    back; each contiguous run is served by one seek and a forward decode.
    """
    import av

    needed = np.unique(wanted)
    needed_set = {int(i) for i in needed}
    got: dict[int, np.ndarray] = {}
    runs = _runs(needed)
    try:
        for first, last in runs:
            if stream.time_base is not None and first > 0:
                pts = int(first / fps / float(stream.time_base))
                container.seek(max(pts, 0), stream=stream, backward=True, any_frame=False)
            else:
                container.seek(0, stream=stream)
            for frame in container.decode(stream):
                i = _frame_index(frame, stream, fps)
                if i > last:
                    break
                if i >= first and i in needed_set:
                    got[i] = _to_rgb(frame)
    except av.error.FFmpegError as e:
        raise VideoReadError(f"{path}: cannot decode video ({_ffmpeg_reason(e)})") from None
    missing = [int(i) for i in needed if int(i) not in got]
    if missing:
        raise VideoReadError(
            f"{path}: video is truncated or corrupt: frame {missing[0]} of the clip could not be decoded"
        )
    return np.stack([got[int(i)] for i in wanted])


def _runs(sorted_idx: np.ndarray, max_gap: int = 32) -> list[tuple[int, int]]:
    """Group sorted indices into runs; a gap wider than ``max_gap`` frames starts a new seek."""
    runs: list[tuple[int, int]] = []
    start = prev = int(sorted_idx[0])
    for i in sorted_idx[1:]:
        i = int(i)
        if i - prev > max_gap:
            runs.append((start, prev))
            start = i
        prev = i
    runs.append((start, prev))
    return runs


def save_video(
    video: Video | np.ndarray,
    path: str | os.PathLike[str],
    fps: float | None = None,
    codec: str = "mjpeg",
    quality: int = 2,
) -> Path:
    """Write frames ``uint8 [T,H,W,3]`` to an AVI/MP4 file atomically.

    The default, Motion-JPEG in full-range 4:4:4 at ``qscale`` ``quality``, keeps
    echo speckle within 2-3 grey levels and every frame a keyframe (fast seeks);
    ``codec="ffv1"`` is lossless; ``"libx264"`` gives small MP4 files.
    """
    import av

    if isinstance(video, Video):
        frames, fps = video.frames, (fps or video.fps)
    else:
        frames = np.asarray(video)
    if fps is None:
        raise ValueError("save_video needs fps for a bare frame array")
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [T,H,W,3], got {frames.dtype} {tuple(frames.shape)}")
    path = Path(path)
    rate = _fps_fraction(fps)
    fmt = {".avi": "avi", ".mp4": "mp4", ".mkv": "matroska", ".mov": "mov"}.get(path.suffix.lower())
    with atomic.writing(path) as tmp, av.open(str(tmp), mode="w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height = int(frames.shape[2]), int(frames.shape[1])
        if codec == "mjpeg":
            stream.pix_fmt = "yuvj444p"
            ctx = stream.codec_context
            ctx.flags |= av.codec.context.Flags.qscale
            ctx.qmin = ctx.qmax = quality
            ctx.global_quality = quality * 118  # FF_QP2LAMBDA: the fixed quantiser ``-q:v``
        elif codec == "ffv1":
            stream.pix_fmt = "bgr0"
        elif codec == "libx264":
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": "18"}
        for i, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def _fps_fraction(fps: float) -> Any:
    from fractions import Fraction

    return Fraction(fps).limit_denominator(1001)
