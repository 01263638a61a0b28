"""AVI/MP4 reading and writing, clip seeking, reader dispatch by content, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from echoclip.data.video import (
    Video,
    frame_indices,
    list_readers,
    load_video,
    read_container,
    register_reader,
    save_video,
)
from echoclip.errors import VideoReadError


def _smooth_frames(t: int = 40, h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """Echo-like frames: blocky speckle that moves, so every frame differs."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (t, h // 4, w // 4, 1)).repeat(4, 1).repeat(4, 2)
    tint = np.array([1.0, 0.9, 0.8])
    return (base * tint).clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def avi(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    frames = _smooth_frames()
    path = save_video(frames, tmp_path_factory.mktemp("video") / "clip.avi", fps=50)
    return path, frames


def test_avi_round_trip_keeps_count_fps_size_and_pixels(avi: tuple[Path, np.ndarray]) -> None:
    path, frames = avi
    video = load_video(path)
    assert video.frames.shape == frames.shape
    assert video.fps == pytest.approx(50)
    assert np.abs(video.frames.astype(int) - frames).mean() < 8


def test_ffv1_is_lossless(tmp_path: Path) -> None:
    frames = _smooth_frames(t=6)
    path = save_video(frames, tmp_path / "lossless.mkv", fps=25, codec="ffv1")
    np.testing.assert_array_equal(load_video(path).frames, frames)


def test_seeking_clip_equals_full_decode(avi: tuple[Path, np.ndarray]) -> None:
    path, _ = avi
    full = load_video(path).frames
    for idx in ([5, 6, 7, 8], [30, 2, 2, 39], list(range(0, 40, 3))):
        clip = read_container(path, indices=idx)
        np.testing.assert_array_equal(clip.frames, full[idx])
    clip = read_container(path, n=10, target_fps=25, start=30)  # wraps past the end
    np.testing.assert_array_equal(clip.frames, full[frame_indices(40, 50, n=10, target_fps=25, start=30)])
    assert clip.fps == 25


def test_index_selector_sees_header_count_and_fps(avi: tuple[Path, np.ndarray]) -> None:
    path, _ = avi
    seen = []

    def select(num_frames: int, fps: float) -> list[int]:
        seen.append((num_frames, fps))
        return [num_frames - 1]

    assert load_video(path, indices=select).num_frames == 1
    assert seen == [(40, pytest.approx(50))]


def test_frame_indices_resample_and_wrap() -> None:
    np.testing.assert_array_equal(frame_indices(10, 50, n=4, target_fps=25), [0, 2, 4, 6])
    np.testing.assert_array_equal(frame_indices(5, 30, n=7, start=3), [3, 4, 0, 1, 2, 3, 4])
    with pytest.raises(ValueError):
        frame_indices(0, 30, n=4)


@pytest.mark.parametrize("case", ["missing", "zero", "truncated", "text", "directory"])
def test_bad_files_raise_one_error_naming_file_and_cause(
    case: str, avi: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    good, _ = avi
    path = tmp_path / f"{case}.avi"
    cause = {
        "missing": "not found",
        "zero": "empty",
        "truncated": "truncated",
        "text": "not a readable video",
        "directory": "directory",
    }[case]
    if case == "zero":
        path.write_bytes(b"")
    elif case == "truncated":
        data = good.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif case == "text":
        path.write_text("FileName,EF\nnot a video,55\n" * 20)
    elif case == "directory":
        path.mkdir()
    with pytest.raises(VideoReadError) as err:
        load_video(path)
    assert str(path) in str(err.value)
    assert cause in str(err.value)


def test_truncated_avi_fails_even_for_a_clip_before_the_cut(
    avi: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    data = avi[0].read_bytes()
    path = tmp_path / "cut.avi"
    path.write_bytes(data[: int(len(data) * 0.7)])
    with pytest.raises(VideoReadError, match="truncated"):
        read_container(path, indices=[0, 1, 2])


def test_reader_is_chosen_by_content_not_extension(tmp_path: Path) -> None:
    @register_reader("test-magic", sniff=lambda head: head.startswith(b"MAGICVID"), priority=50)
    def read_magic(path: Path, **kwargs: object) -> Video:
        t = Path(path).read_bytes()[8]
        return Video(np.zeros((t, 2, 2, 3), np.uint8), fps=10.0, meta={"source": "magic"})

    try:
        path = tmp_path / "looks_like.avi"
        path.write_bytes(b"MAGICVID\x03")
        video = load_video(path)
        assert video.meta["source"] == "magic" and video.num_frames == 3
        assert list_readers()[0] == "test-magic"
        assert {"dicom", "container"} <= set(list_readers())
    finally:
        from echoclip.data import video as video_module

        video_module._READERS.pop("test-magic")


def test_video_validates_frames_and_fps() -> None:
    with pytest.raises(ValueError):
        Video(np.zeros((2, 4, 4), np.uint8), fps=10)
    with pytest.raises(ValueError):
        Video(np.zeros((2, 4, 4, 3), np.uint8), fps=0)
    assert "fps=10" in repr(Video(np.zeros((2, 4, 4, 3), np.uint8), fps=10))
