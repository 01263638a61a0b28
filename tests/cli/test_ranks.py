"""`echoclip embed` and `echoclip preprocess` split across ranks give what one process gives:
independent ranks (`--rank/--world-size`) then `echoclip merge`, or torchrun (gloo) merging
on rank 0."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from echoclip.cli.main import main
from echoclip.data.shards import iter_shard
from echoclip.data.synthetic import simulate_dataset, simulate_reports
from echoclip.models.factory import create_model
from echoclip.retrieval import EmbeddingStore
from echoclip.tokenizer import EchoTokenizer

TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.fixture(scope="module")
def study_set(tmp_path_factory) -> tuple[Path, Path]:
    """8 simulated studies (one of them an unreadable file) and an untrained tiny model."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("ranks")
    sim = simulate_dataset(root / "sim", n=8, seed=0, size=32, frames=32, fps=25.0, progress=False)
    manifest = pd.read_parquet(sim / "manifest.parquet")
    (sim / manifest["video_path"].iloc[5]).write_bytes(b"not a video")
    tokenizer = EchoTokenizer.train(simulate_reports(50, seed=1))
    model = create_model("echoclip-tiny", tokenizer=tokenizer)
    model.save_pretrained(root / "model", tokenizer=tokenizer)
    return sim, root / "model"


def _cli(*args: object) -> int:
    return main([str(a) for a in args])


def _embed(study_set: tuple[Path, Path], out: Path, *more: object) -> list[str]:
    sim, model = study_set
    return [
        "embed",
        "--model",
        model,
        "--data",
        sim,
        "--out",
        out,
        "--dtype",
        "float32",
        "--batch-size",
        3,
        *more,
    ]


@pytest.fixture(scope="module")
def one_process(study_set, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one") / "emb"
    assert _cli(*_embed(study_set, out)) == 0
    return out


def assert_same_embeddings(got: Path, want: Path) -> None:
    """The same stores, row for row: arrays within 1e-5, metadata and everything else exactly."""
    assert sorted(p.name for p in got.iterdir()) == sorted(p.name for p in want.iterdir())
    for kind in ("videos", "reports"):
        a, b = EmbeddingStore(got / kind), EmbeddingStore(want / kind)
        assert (a.dim, a.dtype, a.model, a.video_root, a.columns) == (
            b.dim,
            b.dtype,
            b.model,
            b.video_root,
            b.columns,
        )
        assert len(a) == len(b) > 0
        np.testing.assert_allclose(a.embeddings(), b.embeddings(), atol=1e-5, rtol=0)
        pd.testing.assert_frame_equal(a.metadata(), b.metadata())
    assert (got / "skipped.csv").read_text() == (want / "skipped.csv").read_text()


def test_independent_ranks_then_merge_equal_one_process(study_set, one_process, tmp_path, capsys):
    out = tmp_path / "emb"
    assert _cli(*_embed(study_set, out, "--rank", 1, "--world-size", 2)) == 0
    printed = capsys.readouterr().out
    assert "rank 1 of 2" in printed and f"echoclip merge {out}" in printed
    assert sorted(p.name for p in out.iterdir()) == ["parts"]
    # merging before every rank is done: one line naming the missing rank, exit 1
    assert _cli("merge", out) == 1
    assert "no part of ranks [0] of 2" in capsys.readouterr().err
    assert _cli(*_embed(study_set, out, "--rank", 0, "--world-size", 2)) == 0
    assert _cli("merge", out) == 0
    assert "merge: 7 videos (1 unreadable" in capsys.readouterr().out
    assert_same_embeddings(out, one_process)
    assert not (out / "parts").exists()
    # merged stores are refused as a rank's output unless asked to replace them
    assert _cli(*_embed(study_set, out, "--rank", 0, "--world-size", 2)) == 1
    assert "already exists" in capsys.readouterr().err


def test_more_ranks_than_rows_and_a_stale_part_of_another_world(study_set, one_process, tmp_path, capsys):
    out = tmp_path / "emb"
    for r in range(9):  # 8 videos, 8 reports: rank 8 has nothing, and still writes its part
        assert _cli(*_embed(study_set, out, "--rank", r, "--world-size", 9)) == 0
    assert _cli("merge", out) == 0
    assert_same_embeddings(out, one_process)
    out2 = tmp_path / "emb2"
    assert _cli(*_embed(study_set, out2, "--rank", 1, "--world-size", 2)) == 0
    assert _cli(*_embed(study_set, out2, "--rank", 0, "--world-size", 3)) == 0
    assert _cli("merge", out2) == 1
    assert (
        "rank-00001/part.json: a part of another data set, model, dtype or world size"
        in capsys.readouterr().err
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args: object) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [
        str(TORCHRUN),
        "--nproc-per-node",
        "2",
        "--master-port",
        str(_free_port()),
        "-m",
        "echoclip.cli.main",
    ]
    done = subprocess.run([*cmd, *map(str, args)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_torchrun_embeds_and_rank_zero_merges(study_set, one_process, tmp_path):
    out = tmp_path / "emb"
    printed = _torchrun("-q", *_embed(study_set, out))
    assert "merged 7 videos and 8 reports" in printed
    assert_same_embeddings(out, one_process)
    assert not (out / "parts").exists()


def _preprocess_args(sim):
    """``preprocess`` of the study set into shards of 3 clips of 4 frames at 16 px."""
    return [
        "preprocess",
        "--manifest",
        sim / "manifest.parquet",
        "--size",
        16,
        "--frames",
        4,
        "--shard-size",
        3,
    ]


@pytest.mark.slow
def test_torchrun_preprocess_equals_one_process(study_set, tmp_path):
    sim, _ = study_set
    args = _preprocess_args(sim)
    assert _cli("-q", *args, "--out", tmp_path / "one") == 0
    _torchrun("-q", *args, "--out", tmp_path / "two")
    one, two = tmp_path / "one", tmp_path / "two"
    assert json.loads((two / "shards.json").read_text()) == json.loads((one / "shards.json").read_text())
    assert (two / "skipped.csv").read_text() == (one / "skipped.csv").read_text()
    shards = sorted(p.name for p in one.glob("shard-*.tar"))
    assert shards == sorted(p.name for p in two.glob("shard-*.tar")) and len(shards) == 3
    for name in shards:
        a, b = list(iter_shard(one / name)), list(iter_shard(two / name))
        assert [s["ids"] for s in a] == [s["ids"] for s in b]
        assert all(np.array_equal(x["clip"], y["clip"]) for x, y in zip(a, b, strict=True))


def test_independent_ranks_preprocess_then_merge(study_set, tmp_path, capsys):
    sim, _ = study_set
    args = _preprocess_args(sim)
    assert _cli("-q", *args, "--out", tmp_path / "one") == 0
    for r in (0, 1):
        assert _cli("-q", *args, "--out", tmp_path / "two", "--rank", r, "--world-size", 2) == 0
    assert _cli("merge", tmp_path / "two") == 0
    assert "merge: wrote 7 clips in 3 shards" in capsys.readouterr().out
    for name in ("shards.json", "skipped.csv", "shard-000000.tar", "shard-000001.tar", "shard-000002.tar"):
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
