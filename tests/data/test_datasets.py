"""Manifest and EchoNet-Dynamic datasets: items, labels, splits, skipping bad files, seeding."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import torch
from torch.utils.data import DataLoader

from echoclip.data.augment import TrainTransform
from echoclip.data.datasets import EchoNetDynamic, Manifest, SkipRecord, collate_skip, write_skip_report
from echoclip.data.dicom import write_dicom
from echoclip.data.transforms import ClipSampler, PreprocessConfig, VideoTransform
from echoclip.data.video import save_video
from echoclip.errors import DataError

CFG = PreprocessConfig(image_size=24, num_frames=4)
BAD = {"corrupt.dcm", "truncated.avi", "empty.avi", "no_pixels.dcm"}


def _frames(seed: int, t: int = 16, h: int = 32, w: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (t, h // 4, w // 4, 1), dtype=np.uint8).repeat(4, 1).repeat(4, 2).repeat(3, 3)


def write_mixed_folder(root: Path, good: int = 20) -> Path:
    """``good`` readable videos (AVI and DICOM) plus four broken files, and a manifest of all."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(good):
        frames = _frames(i)
        if i % 3 == 0:
            name = f"v{i:02d}.dcm"
            write_dicom(frames, root / name, fps=30, compression=("rle", "jpeg", None)[i % 9 // 3])
        else:
            name = f"v{i:02d}.avi"
            save_video(frames, root / name, fps=30)
        rows.append({"video_path": name, "patient_id": f"p{i // 2}", "study_id": f"s{i}", "split": "train"})
    good_avi = (root / "v01.avi").read_bytes()
    (root / "truncated.avi").write_bytes(good_avi[: len(good_avi) // 2])
    (root / "empty.avi").write_bytes(b"")
    good_dcm = (root / "v03.dcm").read_bytes()
    start = good_dcm.index(b"\xff\xd8\xff")  # v03 is JPEG: zero the tables of its first frame
    (root / "corrupt.dcm").write_bytes(good_dcm[: start + 2] + bytes(100) + good_dcm[start + 102 :])
    ds = pydicom.dcmread(root / "v00.dcm")
    del ds.PixelData
    ds.save_as(root / "no_pixels.dcm")
    for j, name in enumerate(sorted(BAD)):
        rows.append({"video_path": name, "patient_id": f"q{j}", "study_id": f"bad{j}", "split": "train"})
    table = pd.DataFrame(rows)
    table["report"] = [f"LV ejection fraction is {40 + k}%." for k in range(len(table))]
    table["ef"] = [40.0 + k for k in range(len(table))]
    table["device_pacemaker"] = [k % 2 == 0 for k in range(len(table))]
    table["view"] = "A4C"
    path = root / "manifest.parquet"
    table.to_parquet(path)
    return path


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mixed_folder(tmp_path_factory.mktemp("mixed"))


def _full_pass(ds: Manifest, workers: int) -> list[dict]:
    loader = DataLoader(ds, batch_size=6, num_workers=workers, collate_fn=collate_skip)
    batches = [b for b in loader if b is not None]
    return batches


@pytest.mark.parametrize("workers", [0, 2])
def test_full_pass_yields_good_videos_and_reports_bad_ones(mixed: Path, workers: int, tmp_path: Path) -> None:
    ds = Manifest(mixed, transform=VideoTransform(CFG))
    assert len(ds) == 24
    batches = _full_pass(ds, workers)
    studies = [s for b in batches for s in b["study_id"]]
    assert sorted(studies) == sorted(f"s{i}" for i in range(20))
    assert batches[0]["video"].shape[1:] == (3, 4, 24, 24)
    skipped = {Path(r.path).name: r.reason for r in ds.skipped}
    assert set(skipped) == BAD
    assert "truncated" in skipped["truncated.avi"]
    assert "empty" in skipped["empty.avi"]
    assert "no pixel data" in skipped["no_pixels.dcm"]
    assert "cannot decode pixel data" in skipped["corrupt.dcm"]

    report = ds.skipped.report(tmp_path)
    with open(report, newline="") as f:
        rows = list(csv.DictReader(f))
    assert {Path(r["file"]).name for r in rows} == BAD and all(r["reason"] for r in rows)


def test_items_carry_report_ids_and_labels(mixed: Path) -> None:
    ds = Manifest(mixed, transform=VideoTransform(CFG))
    item = ds[1]
    assert item["report"] == "LV ejection fraction is 41%."
    assert (item["study_id"], item["patient_id"], item["index"]) == ("s1", "p0", 1)
    assert item["ef"] == 41.0
    assert item["labels"] == {"ef": 41.0, "device_pacemaker": 0.0}
    assert ds[20] is None  # a broken file: nothing, and recorded
    assert len(ds.skipped) == 1


def test_manifest_errors_list_what_is_wrong(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    pd.DataFrame({"video_path": ["a.avi"], "report": ["x"]}).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"\['patient_id', 'study_id'\]"):
        Manifest(path)
    pd.DataFrame({"video_path": ["a.avi"], "report": ["x"], "patient_id": ["001"], "study_id": ["7"]}).to_csv(
        path, index=False
    )
    ds = Manifest(path)
    assert ds.table["patient_id"].iat[0] == "001"  # ids stay text
    with pytest.raises(DataError, match="no split column"):
        Manifest(path, split="train")
    with pytest.raises(DataError, match="not found"):
        Manifest(tmp_path / "missing.parquet")


def test_split_selects_rows(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    pd.DataFrame(
        {
            "video_path": ["a", "b", "c"],
            "report": ["", "", ""],
            "patient_id": ["1", "2", "3"],
            "study_id": ["1", "2", "3"],
            "split": ["TRAIN", "val", "test"],
        }
    ).to_csv(path, index=False)
    assert Manifest(path, split="train").table["study_id"].tolist() == ["1"]
    assert Manifest(path, split=["val", "test"]).table["study_id"].tolist() == ["2", "3"]
    with pytest.raises(DataError, match="splits present"):
        Manifest(path, split="external")


def test_runs_are_reproducible_with_any_number_of_workers(mixed: Path) -> None:
    def epoch_tensors(workers: int, epoch: int) -> dict[int, torch.Tensor]:
        ds = Manifest(mixed, transform=TrainTransform(CFG, seed=7))
        ds.set_epoch(epoch)
        out = {}
        for b in _full_pass(ds, workers):
            out.update({int(i): v for i, v in zip(b["index"], b["video"], strict=True)})
        return out

    serial, parallel = epoch_tensors(0, 1), epoch_tensors(2, 1)
    assert sorted(serial) == sorted(parallel) and len(serial) == 20
    for i in serial:
        assert torch.equal(serial[i], parallel[i])
    other_epoch = epoch_tensors(0, 2)
    assert any(not torch.equal(serial[i], other_epoch[i]) for i in serial)


def test_preloaded_dataset_gives_the_same_clips_and_skips(mixed: Path) -> None:
    plain = Manifest(mixed, transform=TrainTransform(CFG, seed=7))
    cached = Manifest(mixed, transform=TrainTransform(CFG, seed=7))
    cached.preload(progress=False)
    assert {Path(r.path).name for r in cached.skipped} == BAD  # found while preloading
    sizes = {v.frames.shape[1:3] for v in cached._preloaded.values()}
    assert sizes == {(CFG.image_size, CFG.image_size)}  # resized once, at load
    for epoch in (0, 3):
        plain.set_epoch(epoch)
        cached.set_epoch(epoch)
        for i in range(len(plain)):
            a, b = plain[i], cached[i]
            assert (a is None) == (b is None)
            if a is not None:
                assert torch.equal(a["video"], b["video"])


def test_datasets_sharing_a_cache_decode_each_video_once(mixed: Path, monkeypatch) -> None:
    import echoclip.data.datasets as datasets

    decoded: list[str] = []
    real_load = datasets.load_video

    def counting_load(path, **options):
        decoded.append(str(path))
        return real_load(path, **options)

    monkeypatch.setattr(datasets, "load_video", counting_load)
    cache: dict = {}
    first = Manifest(mixed, transform=TrainTransform(CFG, seed=7))
    first.preload(progress=False, cache=cache)
    readable = len(cache)
    assert readable > 0 and len(decoded) == readable + len(BAD)
    second = Manifest(mixed, transform=VideoTransform(CFG))  # another stage, another transform
    second.preload(progress=False, cache=cache)
    assert len(decoded) == readable + 2 * len(BAD)  # only the unreadable files are tried again
    assert {Path(r.path).name for r in second.skipped} == BAD
    other_size = Manifest(mixed, transform=VideoTransform(replace(CFG, image_size=CFG.image_size + 8)))
    with pytest.raises(ValueError, match="same image size"):
        other_size.preload(progress=False, cache=cache)
    plain = Manifest(mixed, transform=VideoTransform(CFG))
    for i in range(len(plain)):
        a, b = plain[i], second[i]
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.equal(a["video"], b["video"])


def _numbered_dicom(path: Path, t: int, fps: float) -> Path:
    """Frame ``i`` has every pixel equal to ``i``: a clip shows which frames were read."""
    frames = np.broadcast_to(np.arange(t, dtype=np.uint8)[:, None, None, None], (t, 8, 8, 3)).copy()
    return write_dicom(frames, path, fps=fps)


class _FrameNumbers:
    def __call__(self, frames: np.ndarray) -> list[int]:
        return frames[:, 0, 0, 0].tolist()


def test_cycle_clip_uses_the_heart_rate(tmp_path: Path) -> None:
    _numbered_dicom(tmp_path / "beat.dcm", t=100, fps=50)
    pd.DataFrame(
        {
            "video_path": ["beat.dcm"],
            "report": [""],
            "patient_id": ["1"],
            "study_id": ["1"],
            "heart_rate": [60.0],
        }
    ).to_csv(tmp_path / "m.csv", index=False)
    sampler = ClipSampler(num_frames=5, cycle=True, start="first")
    ds = Manifest(tmp_path / "m.csv", transform=_FrameNumbers(), clip=sampler, read_options={"mask": False})
    assert ds[0]["video"] == [0, 10, 20, 30, 40]  # one beat of 60 bpm = 50 frames at 50 fps


def test_cycle_clip_without_heart_rate_measures_the_beat(tmp_path: Path) -> None:
    t, period, size = 100, 20, 32
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    frames = np.zeros((t, size, size, 3), dtype=np.uint8)
    for i in range(t):
        disc = np.hypot(yy - 16, xx - 16) < 7 + 5 * np.sin(2 * np.pi * i / period)
        frames[i][disc] = 200
        frames[i] += rng.integers(0, 30, (size, size, 1), dtype=np.uint8)  # every frame unique
    write_dicom(frames, tmp_path / "beat.dcm", fps=50)
    pd.DataFrame({"video_path": ["beat.dcm"], "report": [""], "patient_id": ["1"], "study_id": ["1"]}).to_csv(
        tmp_path / "m.csv", index=False
    )
    sampler = ClipSampler(num_frames=5, cycle=True, start="first")
    ds = Manifest(tmp_path / "m.csv", transform=lambda clip: clip, clip=sampler, read_options={"mask": False})
    clip = ds[0]["video"]
    read = [int(np.flatnonzero((frames == f).all(axis=(1, 2, 3)))[0]) for f in clip]
    assert read[0] == 0 and all(3 <= b - a <= 5 for a, b in zip(read, read[1:], strict=False))
    assert 15 <= read[-1] <= 17  # five frames spread over one 20-frame beat


def test_write_skip_report_always_writes_a_file(tmp_path: Path) -> None:
    path = write_skip_report([], tmp_path / "skipped.csv")
    assert path.read_text().strip() == "file,reason"
    path = write_skip_report([SkipRecord("a.dcm", "no pixel data"), ("b.avi", "truncated")], path)
    assert path.read_text().splitlines()[1:] == ["a.dcm,no pixel data", "b.avi,truncated"]


# ---------------------------------------------------------------------------------------
# EchoNet-Dynamic


def _trace_rows(
    name: str, frame: int, cx: float, cy: float, half_width: float, half_height: float
) -> list[list]:
    """EchoNet-style rows: the long axis, then chords across an ellipse from top to bottom."""
    rows = [[name, cx, cy - half_height, cx, cy + half_height, frame]]
    for y in np.linspace(cy - half_height * 0.95, cy + half_height * 0.95, 20):
        dx = half_width * np.sqrt(max(0.0, 1 - ((y - cy) / half_height) ** 2))
        rows.append([name, cx - dx, y, cx + dx, y, frame])
    return rows


@pytest.fixture(scope="module")
def echonet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("echonet")
    (root / "Videos").mkdir()
    splits = ["TRAIN", "TRAIN", "TRAIN", "VAL", "TEST", "TEST"]
    files, traces = [], []
    for i, split in enumerate(splits):
        name = f"0X{i:04X}"
        save_video(_frames(i, t=20, h=32, w=32), root / "Videos" / f"{name}.avi", fps=50)
        files.append([name, 30 + 5 * i, 40 + i, 80 + i, 32, 32, 50, 20, split])
        traces += _trace_rows(name, 3, 16, 16, 6, 10) + _trace_rows(name, 11, 16, 16, 4, 8)
    pd.DataFrame(
        files,
        columns=[
            "FileName",
            "EF",
            "ESV",
            "EDV",
            "FrameHeight",
            "FrameWidth",
            "FPS",
            "NumberOfFrames",
            "Split",
        ],
    ).to_csv(root / "FileList.csv", index=False)
    pd.DataFrame(traces, columns=["FileName", "X1", "Y1", "X2", "Y2", "Frame"]).to_csv(
        root / "VolumeTracings.csv", index=False
    )
    return root


def test_echonet_targets_and_splits_match_filelist(echonet: Path) -> None:
    filelist = pd.read_csv(echonet / "FileList.csv")
    for split in ("train", "val", "test"):
        ds = EchoNetDynamic(echonet, split, transform=VideoTransform(CFG))
        expected = filelist[filelist["Split"] == split.upper()]
        assert ds.table["study_id"].tolist() == expected["FileName"].tolist()
        for i in range(len(ds)):
            item = ds[i]
            row = expected.iloc[i]
            assert item["ef"] == row["EF"]
            assert item["labels"] == {"ef": row["EF"], "esv": row["ESV"], "edv": row["EDV"]}
            assert item["video"].shape == (3, 4, 24, 24)
    assert len(EchoNetDynamic(echonet, "all")) == 6


def test_echonet_tracings_give_ed_and_es_masks(echonet: Path) -> None:
    item = EchoNetDynamic(echonet, "train", transform=VideoTransform(CFG), tracings=True)[0]
    assert (item["ed_frame"], item["es_frame"]) == (3, 11)
    ed, es = item["lv_mask_ed"], item["lv_mask_es"]
    assert ed.dtype == torch.bool and ed.shape == (32, 32)
    assert ed.sum().item() == pytest.approx(np.pi * 6 * 10 * 0.95, rel=0.15)
    assert es.sum().item() == pytest.approx(np.pi * 4 * 8 * 0.95, rel=0.15)
    assert bool(ed[16, 16]) and not bool(ed[2, 2])


def test_echonet_missing_folder_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="FileList.csv"):
        EchoNetDynamic(tmp_path, "train")


def test_echonet_on_a_simulated_folder(tmp_path: Path) -> None:
    synthetic = pytest.importorskip("echoclip.data.synthetic")
    if not hasattr(synthetic, "simulate_dataset"):
        pytest.skip("the simulator does not write datasets yet")
    root = Path(synthetic.simulate_dataset(tmp_path / "sim", n=6, seed=0, size=32, frames=64, fps=50.0))
    filelist = pd.read_csv(root / "FileList.csv")
    total = 0
    for split in ("TRAIN", "VAL", "TEST"):
        expected = filelist[filelist["Split"] == split]
        if expected.empty:
            continue
        ds = EchoNetDynamic(root, split.lower(), transform=VideoTransform(CFG))
        assert len(ds) == len(expected)
        efs = [ds[i]["ef"] for i in range(len(ds))]
        np.testing.assert_allclose(efs, expected["EF"].to_numpy(dtype=float))
        total += len(ds)
    assert total == len(filelist)


def test_preprocess_pass_yields_good_videos_and_reports_bad_ones(mixed: Path, tmp_path: Path, capsys) -> None:
    from echoclip.cli.main import main as cli_main
    from echoclip.data.shards import iter_shard

    out = tmp_path / "shards"
    args = ["preprocess", "--manifest", str(mixed), "--out", str(out), "--size", "24", "--frames", "4"]
    assert cli_main([*args, "--shard-size", "5"]) == 0
    assert "wrote 20 clips in 5 shards" in capsys.readouterr().out
    studies = [s["ids"]["study_id"] for shard in sorted(out.glob("shard-*.tar")) for s in iter_shard(shard)]
    assert sorted(studies) == sorted(f"s{i}" for i in range(20))
    with open(out / "skipped.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {Path(r["file"]).name for r in rows} == BAD and all(r["reason"] for r in rows)


def test_manifest_on_a_simulated_folder(tmp_path: Path) -> None:
    synthetic = pytest.importorskip("echoclip.data.synthetic")
    if not hasattr(synthetic, "simulate_dataset"):
        pytest.skip("the simulator does not write datasets yet")
    root = Path(synthetic.simulate_dataset(tmp_path / "sim", n=4, seed=1, size=32, frames=64, fps=50.0))
    table = pd.read_parquet(root / "manifest.parquet")
    ds = Manifest(root / "manifest.parquet", transform=VideoTransform(CFG))
    assert len(ds) == len(table)
    item = ds[0]
    assert item["report"] == table["report"].iat[0] and item["study_id"] == str(table["study_id"].iat[0])
    assert item["ef"] == pytest.approx(float(table["ef"].iat[0]))
    devices = [c for c in table.columns if c.startswith("device_")]
    assert devices and {c: item["labels"][c] for c in devices} == {c: float(table[c].iat[0]) for c in devices}
    assert not list(ds.skipped)


def test_a_clips_period_comes_from_the_dicom_header_heart_rate(tmp_path):
    """A cine whose header records HeartRate gives every clip its period, though the clip is
    shorter than a beat; without it (and no table column) the period is unknown."""
    import math

    import pandas as pd

    from echoclip.data.dicom import write_dicom
    from echoclip.data.transforms import PreprocessConfig, VideoTransform

    frames = np.random.default_rng(0).integers(0, 255, (20, 32, 32, 3), dtype=np.uint8)
    write_dicom(frames, tmp_path / "a.dcm", fps=25.0, tags={"HeartRate": 60})
    write_dicom(frames, tmp_path / "b.dcm", fps=25.0)
    rows = [{"video_path": f"{n}.dcm", "report": "", "patient_id": n, "study_id": n} for n in "ab"]
    pd.DataFrame(rows).to_parquet(tmp_path / "manifest.parquet")
    dataset = Manifest(tmp_path / "manifest.parquet", transform=VideoTransform(PreprocessConfig(32, 8, 12.5)))
    assert dataset[0]["period"] == pytest.approx(12.5)  # 60 bpm: one beat a second, 12.5 clip frames
    assert math.isnan(dataset[1]["period"])
