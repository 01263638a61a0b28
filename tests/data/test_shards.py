"""Preprocessed shards: contents, resuming after a kill, splitting across ranks and workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from echoclip.data.augment import TrainTransform
from echoclip.data.shards import STATE_FILE, ShardConfig, ShardDataset, iter_shard, write_shards
from echoclip.data.transforms import PreprocessConfig
from echoclip.data.video import load_video, save_video
from echoclip.errors import DataError


def _manifest(root: Path, n: int, frames: int = 12, size: int = 32) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        video = rng.integers(0, 256, (frames, size // 4, size // 4, 1), dtype=np.uint8)
        save_video(video.repeat(4, 1).repeat(4, 2).repeat(3, 3), root / f"v{i:03d}.avi", fps=25)
        rows.append(
            {
                "video_path": f"v{i:03d}.avi",
                "report": f"report {i}",
                "patient_id": f"p{i}",
                "study_id": f"s{i:03d}",
                "ef": float(30 + i),
                "device_tavr": i % 3 == 0,
                "split": "train" if i % 4 else "val",
            }
        )
    path = root / "manifest.parquet"
    pd.DataFrame(rows).to_parquet(path)
    return path


def _studies(out: Path) -> list[str]:
    return [s["ids"]["study_id"] for shard in sorted(out.glob("shard-*.tar")) for s in iter_shard(shard)]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _manifest(tmp_path_factory.mktemp("studies"), n=12)


def test_shards_hold_uint8_clips_reports_labels_and_ids(manifest: Path, tmp_path: Path) -> None:
    summary = write_shards(
        manifest, tmp_path, ShardConfig(image_size=16, num_frames=4, shard_size=5), progress=False
    )
    assert summary.shards == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert summary.samples == 12 and not summary.skipped
    samples = [s for shard in sorted(tmp_path.glob("shard-*.tar")) for s in iter_shard(shard)]
    first = samples[0]
    assert first["clip"].dtype == np.uint8 and first["clip"].shape == (4, 16, 16, 3)
    assert first["report"] == "report 0"
    assert first["labels"] == {"ef": 30.0, "labels": {"ef": 30.0, "device_tavr": 1.0}, "cm_per_px": None}
    assert first["ids"] == {"study_id": "s000", "patient_id": "p0", "row": 0}
    # the stored clip is the centred clip of the video, resized
    video = load_video(manifest.parent / "v000.avi")
    centre = video.frames[4:8].astype(float).mean()
    assert abs(first["clip"].astype(float).mean() - centre) < 3


def test_split_option_and_settings_guard(manifest: Path, tmp_path: Path) -> None:
    summary = write_shards(
        manifest, tmp_path, ShardConfig(image_size=16, num_frames=4, split="val"), progress=False
    )
    assert sorted(_studies(tmp_path)) == ["s000", "s004", "s008"] and summary.samples == 3
    with pytest.raises(DataError, match="other settings"):
        write_shards(
            manifest, tmp_path, ShardConfig(image_size=24, num_frames=4, split="val"), progress=False
        )


def test_restart_redoes_only_unfinished_shards(manifest: Path, tmp_path: Path) -> None:
    config = ShardConfig(image_size=16, num_frames=4, shard_size=3)
    write_shards(manifest, tmp_path, config, progress=False)
    state = json.loads((tmp_path / STATE_FILE).read_text())
    del state["done"]["shard-000002.tar"]  # as if killed after writing it, before recording it
    (tmp_path / STATE_FILE).write_text(json.dumps(state))
    (tmp_path / "shard-000003.tar").unlink()
    (tmp_path / "shard-000003.tar.tmp").write_bytes(b"half a shard")  # killed mid-shard
    del state["done"]["shard-000003.tar"]
    (tmp_path / STATE_FILE).write_text(json.dumps(state))
    kept = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("shard-00000[01].tar")}
    time.sleep(0.01)

    summary = write_shards(manifest, tmp_path, config, progress=False)
    assert summary.resumed == 2 and summary.samples == 12
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("shard-00000[01].tar")} == kept
    assert not list(tmp_path.glob("*.tmp"))
    assert sorted(_studies(tmp_path)) == [f"s{i:03d}" for i in range(12)]


def test_killed_preprocess_restarts_without_losing_or_duplicating(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path / "studies", n=30, frames=16, size=32)
    out = tmp_path / "shards"
    cmd = [sys.executable, "-m", "echoclip.cli.main", "-q", "preprocess", "--manifest", str(manifest)]
    cmd += ["--out", str(out), "--size", "24", "--frames", "8", "--shard-size", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done_at_kill = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            done_at_kill = len(json.loads((out / STATE_FILE).read_text())["done"])
        except (OSError, ValueError):
            done_at_kill = None
        if done_at_kill:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.002)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "preprocess finished before it could be killed"
    assert done_at_kill is not None and done_at_kill < 15

    summary = write_shards(
        manifest, out, ShardConfig(image_size=24, num_frames=8, shard_size=2), progress=False
    )
    assert summary.resumed >= done_at_kill and len(summary.shards) == 15
    studies = _studies(out)
    assert len(studies) == 30 and sorted(studies) == [f"s{i:03d}" for i in range(30)]
    assert not list(out.glob("*.tmp"))


@pytest.mark.slow
def test_parallel_workers_write_the_same_samples(manifest: Path, tmp_path: Path) -> None:
    config = ShardConfig(image_size=16, num_frames=4, shard_size=3)
    serial = write_shards(manifest, tmp_path / "serial", config, progress=False)
    parallel = write_shards(manifest, tmp_path / "parallel", config, workers=2, progress=False)
    assert parallel.shards == serial.shards and parallel.samples == 12
    for name in serial.shards:
        a, b = list(iter_shard(tmp_path / "serial" / name)), list(iter_shard(tmp_path / "parallel" / name))
        assert [s["ids"] for s in a] == [s["ids"] for s in b]
        assert all(np.array_equal(x["clip"], y["clip"]) for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def shards(manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    write_shards(manifest, out, ShardConfig(image_size=16, num_frames=4, shard_size=2), progress=False)
    return out


def test_ranks_and_workers_split_the_shards_exactly(shards: Path) -> None:
    ds = ShardDataset(shards, shuffle=True, seed=1)
    assert len(ds.shards) == 6 and ds.num_samples == 12
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        parts = [ds.shards_for(rank, 2, worker, 2) for rank in range(2) for worker in range(2)]
        flat = [p for part in parts for p in part]
        assert sorted(flat) == sorted(ds.shards) and len(flat) == len(set(flat))
    ds.set_epoch(0)
    order0 = ds.shards_for(0, 1)
    ds.set_epoch(1)
    assert ds.shards_for(0, 1) != order0 and sorted(ds.shards_for(0, 1)) == sorted(order0)


def test_shard_dataset_items_match_the_manifest_dataset(shards: Path) -> None:
    items = list(ShardDataset(shards, rank=0, world_size=1))
    assert [i["study_id"] for i in items] == [f"s{i:03d}" for i in range(12)]
    item = items[3]
    assert item["video"].shape == (3, 4, 16, 16) and item["video"].dtype == torch.float32
    assert (item["report"], item["patient_id"], item["ef"], item["index"]) == ("report 3", "p3", 33.0, 3)
    assert item["labels"] == {"ef": 33.0, "device_tavr": 1.0}
    half = list(ShardDataset(shards, rank=1, world_size=2))
    assert len(half) == 6 and {i["study_id"] for i in half}.isdisjoint({i["study_id"] for i in items[:2]})


def test_shard_loader_is_reproducible_with_workers(shards: Path) -> None:
    def tensors(workers: int) -> dict[int, torch.Tensor]:
        ds = ShardDataset(shards, TrainTransform(PreprocessConfig(image_size=16, num_frames=4), seed=5))
        ds.set_epoch(2)
        out = {}
        for batch in DataLoader(ds, batch_size=4, num_workers=workers):
            out.update({int(i): v for i, v in zip(batch["index"], batch["video"], strict=True)})
        return out

    serial, parallel = tensors(0), tensors(2)
    assert sorted(serial) == list(range(12)) and sorted(parallel) == list(range(12))
    assert all(torch.equal(serial[i], parallel[i]) for i in serial)


def test_missing_or_foreign_folders_are_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such shard folder"):
        ShardDataset(tmp_path / "nowhere")
    with pytest.raises(DataError, match=STATE_FILE):
        ShardDataset(tmp_path)
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"not a tar")
    with pytest.raises(DataError, match="bad.tar"):
        list(ShardDataset([bad]))


def test_ranks_write_their_shards_and_the_merge_equals_one_process(manifest: Path, tmp_path: Path) -> None:
    from echoclip.data.shards import merge_shards
    from echoclip.ranks import Ranks

    config = ShardConfig(image_size=16, num_frames=4, shard_size=3)  # 4 shards over 3 ranks
    single = write_shards(manifest, tmp_path / "one", config, progress=False)
    split = tmp_path / "split"
    parts = [
        write_shards(manifest, split, config, progress=False, ranks=Ranks(r, 3, "flags")) for r in (2, 0)
    ]
    assert [p.shards for p in parts] == [["shard-000002.tar"], ["shard-000000.tar", "shard-000003.tar"]]
    assert not (split / STATE_FILE).exists() and not (split / "skipped.csv").exists()
    with pytest.raises(DataError, match=r"no part of ranks \[1\] of 3"):
        merge_shards(split)
    with pytest.raises(DataError, match="not merged yet"):
        ShardDataset(split)
    write_shards(manifest, split, config, progress=False, ranks=Ranks(1, 3, "flags"))
    # a rank run again keeps its shard
    again = write_shards(manifest, split, config, progress=False, ranks=Ranks(1, 3, "flags"))
    assert again.resumed == 1

    merged = merge_shards(split)
    assert merged.shards == single.shards and merged.samples == single.samples == 12
    assert json.loads((split / STATE_FILE).read_text()) == json.loads(
        (tmp_path / "one" / STATE_FILE).read_text()
    )
    assert (split / "skipped.csv").read_text() == (tmp_path / "one" / "skipped.csv").read_text()
    assert not (split / "parts").exists()
    for name in single.shards:
        assert (split / name).read_bytes() == (tmp_path / "one" / name).read_bytes()
    # and a merged folder resumes as one: nothing left to do
    assert write_shards(manifest, split, config, progress=False).resumed == 4


def test_merge_refuses_parts_of_another_world_and_incomplete_shards(manifest: Path, tmp_path: Path) -> None:
    from echoclip.data.shards import merge_shards
    from echoclip.ranks import Ranks

    config = ShardConfig(image_size=16, num_frames=4, shard_size=6)
    for r in range(2):
        write_shards(manifest, tmp_path, config, progress=False, ranks=Ranks(r, 2, "flags"))
    (tmp_path / "shard-000001.tar").unlink()  # lost after rank 1 recorded it
    with pytest.raises(
        DataError, match=r"1 shards not complete \(first shard-000001.tar\); rerun ranks \[1\] of 2"
    ):
        merge_shards(tmp_path)
    write_shards(manifest, tmp_path, config, progress=False, ranks=Ranks(1, 2, "flags"))
    write_shards(manifest, tmp_path, config, progress=False, ranks=Ranks(2, 3, "flags"))
    with pytest.raises(DataError, match="rank-00002/shards.json: a part of another"):
        merge_shards(tmp_path)
