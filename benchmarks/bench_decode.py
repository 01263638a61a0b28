"""Clip decoding speed: echoclip's seeking readers against decoding every frame, plus DataLoader throughput.

Prints one JSON line:

- ``avi_*``: 16-frame clips (random start) from 200-frame 112x112 Motion-JPEG AVIs
  (what ``save_video`` and the simulator write). ``ours`` seeks and decodes only the
  clip's frames; ``baseline`` decodes every frame and then samples the clip - the
  common practice. ``avi_speedup`` is ours / baseline (target >= 3).
- ``mp4_x264_*``: the same for H.264 MP4s (few keyframes: a seek lands far before the clip).
- ``dicom_*``: the same for multi-frame JPEG-baseline YBR_FULL_422 DICOM cines (the
  usual echo export), including the sector search and crop.
- ``loader_clips_per_s``: a ``Manifest`` dataset with the training transform at the
  tiny model's input (64 px, 16 frames at 12.5 fps) through a DataLoader with 2 workers.

Each figure is the best of ``--rounds`` rounds, ours and baseline alternating, so a
busy machine slows both alike.

    python benchmarks/bench_decode.py [--videos 6] [--clips 24] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def _echo_frames(rng: np.random.Generator, t: int, h: int, w: int) -> np.ndarray:
    """Blocky speckle that changes every frame: compresses like echo, not like flat colour."""
    base = rng.integers(0, 200, (t, h // 4, w // 4, 1), dtype=np.uint8).repeat(4, 1).repeat(4, 2)
    return np.ascontiguousarray(base.repeat(3, 3))


def _write_inputs(root: Path, n: int) -> dict[str, list[Path]]:
    from echoclip.data.dicom import write_dicom
    from echoclip.data.video import save_video

    rng = np.random.default_rng(0)
    files: dict[str, list[Path]] = {"avi": [], "mp4": [], "dicom": []}
    for i in range(n):
        frames = _echo_frames(rng, 200, 112, 112)
        files["avi"].append(save_video(frames, root / f"v{i}.avi", fps=50))
        files["mp4"].append(save_video(frames, root / f"v{i}.mp4", fps=50, codec="libx264"))
        cine = _echo_frames(rng, 100, 240, 320)
        files["dicom"].append(write_dicom(cine, root / f"v{i}.dcm", fps=30, compression="jpeg"))
    return files


def _clip_rate(paths: list[Path], clips: int, seek: bool, seed: int) -> float:
    """Clips per second reading ``clips`` random 16-frame clips, by seeking or by full decode."""
    from echoclip.data.transforms import ClipSampler
    from echoclip.data.video import load_video

    sampler = ClipSampler(num_frames=16, start="random")
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    for k in range(clips):
        path = paths[k % len(paths)]
        if seek:
            clip = load_video(path, indices=lambda total, fps: sampler.indices(total, fps, rng)).frames
        else:
            video = load_video(path)
            clip = video.frames[sampler.indices(video.num_frames, video.fps, rng)]
        assert clip.shape[0] == 16
    return clips / (time.perf_counter() - t0)


def _compare(paths: list[Path], clips: int, rounds: int) -> tuple[float, float]:
    ours, base = [], []
    for r in range(rounds):
        ours.append(_clip_rate(paths, clips, seek=True, seed=r))
        base.append(_clip_rate(paths, max(4, clips // 4), seek=False, seed=r))
    return max(ours), max(base)


def _loader_rate(paths: list[Path], root: Path, items: int, workers: int) -> float:
    import pandas as pd
    from torch.utils.data import DataLoader

    from echoclip.data.augment import TrainTransform
    from echoclip.data.datasets import Manifest, collate_skip
    from echoclip.data.transforms import PreprocessConfig

    manifest = root / "bench_manifest.parquet"
    pd.DataFrame(
        {
            "video_path": [paths[i % len(paths)].name for i in range(items)],
            "report": "",
            "patient_id": [str(i) for i in range(items)],
            "study_id": [str(i) for i in range(items)],
        }
    ).to_parquet(manifest)
    tiny = PreprocessConfig(image_size=64, num_frames=16, fps=12.5)
    ds = Manifest(manifest, transform=TrainTransform(tiny, seed=0))
    loader = DataLoader(ds, batch_size=8, num_workers=workers, collate_fn=collate_skip)
    it = iter(loader)
    first = next(it)  # worker start-up is not throughput
    n, t0 = 0, time.perf_counter()
    for batch in it:
        n += batch["video"].shape[0]
    assert first["video"].shape[1:] == (3, 16, 64, 64)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=6)
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--loader-items", type=int, default=96)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = _write_inputs(root, args.videos)
        avi_ours, avi_base = _compare(files["avi"], args.clips, args.rounds)
        mp4_ours, mp4_base = _compare(files["mp4"], args.clips, args.rounds)
        dcm_ours, dcm_base = _compare(files["dicom"], args.clips, args.rounds)
        loader = _loader_rate(files["avi"], root, args.loader_items, workers=2)
        loader_serial = _loader_rate(files["avi"], root, args.loader_items // 2, workers=0)

    result = {
        "benchmark": "decode",
        "avi_clips_per_s_ours": round(avi_ours, 1),
        "avi_clips_per_s_baseline": round(avi_base, 1),
        "avi_speedup": round(avi_ours / avi_base, 2),
        "mp4_x264_clips_per_s_ours": round(mp4_ours, 1),
        "mp4_x264_clips_per_s_baseline": round(mp4_base, 1),
        "mp4_x264_speedup": round(mp4_ours / mp4_base, 2),
        "dicom_clips_per_s_ours": round(dcm_ours, 1),
        "dicom_clips_per_s_baseline": round(dcm_base, 1),
        "dicom_speedup": round(dcm_ours / dcm_base, 2),
        "loader_clips_per_s_2_workers": round(loader, 1),
        "loader_clips_per_s_0_workers": round(loader_serial, 1),
        "setup": {
            "avi": "200 frames 112x112 mjpeg 50 fps",
            "dicom": "100 frames 240x320 JPEG baseline YBR_FULL_422 30 fps",
            "clip": "16 frames, random start",
            "loader": "64 px, 16 frames at 12.5 fps, TrainTransform, batch 8",
            "videos": args.videos,
            "cpus": os.cpu_count(),
        },
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
