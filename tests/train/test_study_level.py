"""Study-level contrastive training: several videos of a study, pooled, meet its report."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from echoclip.cli.main import main
from echoclip.errors import ConfigError, DataError
from echoclip.models.embed import study_view_column
from echoclip.train.config import ContrastiveConfig, TrainConfig
from echoclip.train.contrastive import collate_studies
from echoclip.train.pairs import StudyPairs
from tests.train.toy import ToyClips

# the tiny model on 32-pixel clips: a step of 8 studies takes well under a second
SMALL = {"video": {"image_size": 32}}


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> Path:
    """24 studies of A4C and PLAX, 1-2 videos of each view (2-4 per study)."""
    from echoclip.data.synthetic import simulate_dataset

    out = tmp_path_factory.mktemp("sim") / "data"
    simulate_dataset(
        out,
        n=24,
        seed=1,
        size=32,
        frames=16,
        fps=25.0,
        views=("A4C", "PLAX"),
        videos_per_view=(1, 2),
        progress=False,
    )
    table = pd.read_parquet(out / "manifest.parquet")
    studies = sorted(table["study_id"].unique())
    held_out = set(studies[::6])  # 4 studies, all their videos
    table["split"] = ["val" if s in held_out else "train" for s in table["study_id"]]
    table.to_parquet(out / "manifest.parquet")
    return out


def _config(out: Path, **kw) -> TrainConfig:
    base = dict(
        out=str(out),
        steps=30,
        batch_size=8,
        lr=3e-4,
        warmup_steps=5,
        weight_decay=0.0,
        precision="fp32",
        log_every=1,
        checkpoint_every=100,
        tensorboard=False,
        progress=False,
        seed=0,
        level="study",
        videos_per_study=3,
        contrastive=ContrastiveConfig(sentence_dropout=0.0),
    )
    base.update(kw)
    return TrainConfig(**base)


def _train(sim: Path, config: TrainConfig, val_split: str | None = None, **kw):
    from echoclip.train.clip import train_clip

    return train_clip(
        sim,
        config,
        model="echoclip-tiny",
        model_overrides=SMALL,
        val_split=val_split,
        ood=False,
        augment=False,
        **kw,
    )


@pytest.fixture(scope="module")
def trained(sim, tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "run"
    return _train(sim, _config(out, checkpoint_every=30))


def test_study_items_draw_up_to_k_videos_without_replacement():
    base = ToyClips(6)
    ids = ["s1", "s1", "s1", "s2", "s3", "s3"]
    views = ["A4C", "PLAX", None, "A2C", float("nan"), " "]
    pairs = StudyPairs(base, ids, ["R"] * 6, seed=4, videos_per_study=2, views=views)
    seen = set()
    for epoch in range(10):
        pairs.set_epoch(epoch)
        item = pairs[0]
        assert item["videos"].shape == (2, *base[0]["video"].shape) and item["index"] == 0
        rows = {i for i in range(3) for v in item["videos"] if torch.equal(v, base[i]["video"])}
        assert len(rows) == 2  # two different videos of the study
        assert item["views"] == [["A4C", "PLAX", None][r] for r in sorted(rows)]
        seen.add(tuple(sorted(rows)))
        pairs.set_epoch(epoch)
        assert torch.equal(pairs[0]["videos"], item["videos"])  # (seed, epoch, study) fixes the draw
    assert len(seen) == 3  # every pair of the three videos comes up over the epochs
    assert pairs[1]["videos"].shape[0] == 1 and pairs[1]["views"] == ["A2C"]  # fewer than K: all of them
    assert pairs[2]["views"] == [None, None]  # empty cells are unknown views
    # an unreadable video is left out of its study; a study with none readable is None
    broken = StudyPairs(ToyClips(6, bad={0, 3}), ids, ["R"] * 6, videos_per_study=3)
    assert broken[0]["videos"].shape[0] == 2 and broken[1] is None


def test_study_view_column_prefers_predicted_views():
    assert study_view_column(["view", "view_pred"]) == "view_pred"
    assert study_view_column(["view"]) == "view"
    assert study_view_column(["report"]) is None
    assert study_view_column(["view"], "none") is None
    assert study_view_column(["view"], "my_view") == "my_view"


def test_collate_studies_pads_and_masks():
    a = {"videos": torch.ones(3, 3, 2, 4, 4), "cm_per_px": torch.ones(3, 2), "views": ["A4C", None, "PLAX"]}
    b = {"videos": torch.full((1, 3, 2, 4, 4), 2.0), "cm_per_px": torch.ones(1, 2), "views": ["A2C"]}
    batch = collate_studies([a, b])
    assert batch["video"].shape == (2, 3, 3, 2, 4, 4)
    assert batch["video_mask"].tolist() == [[True, True, True], [True, False, False]]
    assert float(batch["video"][1, 1:].abs().sum()) == 0.0 and float(batch["video"][1, 0].mean()) == 2.0
    assert batch["views"] == [["A4C", None, "PLAX"], ["A2C"]]
    assert batch["cm_per_px"].shape == (2, 3, 2) and torch.isnan(batch["cm_per_px"][1, 1:]).all()


def test_study_level_loss_falls(trained):
    losses = [float(r["loss"]) for r in trained.history if r.get("loss") not in (None, "")]
    assert len(losses) == 30
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    # chance is log(8) = 2.08 for 8 studies per step; the model learns to tell them apart
    assert last < 0.5 * first and last < 0.5 * math.log(8), losses


def test_the_saved_model_pools_as_training_did(trained, sim):
    from echoclip.models.factory import load_model

    final = trained.final_dir
    assert json.loads((final / "config.json").read_text())["study_pooling"] == "attention"
    model = load_model(final)
    assert model.study_encoder is not None and model.study_encoder.name == "attention"
    assert float(model.study_encoder.pooling.query.detach().abs().sum()) > 0  # the pooling was trained
    # the last checkpoint holds the weights the run ended with; both load to the same study embedding
    same = load_model(final.parent / "checkpoints" / "step_00000030" / "model")
    torch.manual_seed(0)
    clips = torch.randn(2, 3, *model.video_shape)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    views = [["A4C", "PLAX", None], ["PLAX", "A4C"]]
    with torch.no_grad():
        a = model.encode_study(clips, views=views, mask=mask)
        b = same.encode_study(clips, views=views, mask=mask)
        mean = model.encode_study(model.encode_video(clips.flatten(0, 1)).view(2, 3, -1), mask=mask)
    assert a.shape == (2, model.config.embed_dim)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # it pools by its learned weights, no longer the mean's equal ones (30 small steps move
    # them by about 1e-4)
    with torch.no_grad():
        x = F.normalize(model.encode_video(clips.flatten(0, 1)).view(2, 3, -1), dim=-1)
        w = model.study_encoder.pooling.weights(x, mask, model.study_encoder.view_ids(views))
        torch.testing.assert_close(a, F.normalize(torch.einsum("bn,bnd->bd", w[:, 0], x), dim=-1))
    assert float((w[0, 0] - 1 / 3).abs().max()) > 1e-5
    assert not torch.allclose(a, F.normalize(mean, dim=-1), atol=1e-7)


def test_more_videos_per_study_than_any_has_with_sentence_and_value_terms(sim, tmp_path):
    contrastive = ContrastiveConfig(sentence_loss_weight=1.0, value_loss_weight=1.0, value_sentences=4)
    config = _config(
        tmp_path / "run",
        steps=3,
        batch_size=4,
        videos_per_study=16,
        study_pooling="mean",
        contrastive=contrastive,
    )
    result = _train(sim, config, val_split="val")
    # held-out studies are validated as studies: each one's videos pooled, against its report
    assert result.validation["n"] == 4 and 1 <= result.validation["study_to_report.mean_rank"] <= 4
    assert "video_to_report.recall@1" not in result.validation
    rows = [r for r in result.history if r.get("loss") not in (None, "")]
    assert len(rows) == 3
    for r in rows:
        for key in ("loss", "sentence_loss", "value_loss"):
            assert math.isfinite(float(r[key])), r
    assert json.loads((result.final_dir / "config.json").read_text())["study_pooling"] == "mean"


def test_a_killed_study_level_run_resumes_exactly(sim, tmp_path):
    reference = _train(sim, _config(tmp_path / "reference", steps=6, checkpoint_every=3, keep_last=5))
    resumed = tmp_path / "resumed"
    shutil.copytree(reference.final_dir.parent, resumed)
    shutil.rmtree(resumed / "final")
    shutil.rmtree(resumed / "checkpoints" / "step_00000006")  # as if killed after step 3's checkpoint
    result = _train(sim, _config(resumed, steps=6, checkpoint_every=3, keep_last=5), resume=True)
    assert result.step == 6
    a = load_file(reference.final_dir / "model.safetensors")
    b = load_file(resumed / "final" / "model.safetensors")
    assert a.keys() == b.keys() and any(k.startswith("study_encoder.") for k in a)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, equal_nan=True)


def test_study_level_config_is_checked():
    with pytest.raises(ConfigError, match="unknown training level 'patient'"):
        TrainConfig(level="patient")
    with pytest.raises(ConfigError, match="videos_per_study must be at least 1"):
        TrainConfig(level="study", videos_per_study=0)
    with pytest.raises(ConfigError, match="trained only at level 'study'"):
        TrainConfig(study_pooling="attention")
    assert TrainConfig.from_dict({"level": "study", "videos_per_study": 2}).videos_per_study == 2


def test_study_pairs_need_study_ids():
    base = ToyClips(3)
    base.table = pd.DataFrame({"report": ["R", "R", "S"]})
    base.path = Path("data/manifest.csv")
    with pytest.raises(DataError, match="manifest.csv: no study_id column"):
        StudyPairs.from_table_dataset(base, videos_per_study=2)
    base.table = pd.DataFrame({"study_id": ["a", None, ""], "report": ["R", "R", "S"]})
    with pytest.raises(DataError, match="column study_id is empty in 2 of 3 rows"):
        StudyPairs.from_table_dataset(base, videos_per_study=2)
    with pytest.raises(DataError, match="no view column 'view'"):
        StudyPairs.from_table_dataset(
            type("D", (), {"table": pd.DataFrame({"study_id": ["a"], "report": ["R"]})})(),
            videos_per_study=2,
            view_column="view",
        )


@pytest.mark.parametrize(
    "change, args, message",
    [
        ("drop", [], "lacks required columns ['study_id']"),
        ("blank", [], "column study_id is empty in"),
        (None, ["--view-column", "probe_view"], "no view column 'probe_view'"),
        (None, ["--study-pooling", "nope"], "nope"),
        (None, ["--level", "clip", "--study-pooling", "attention"], "trained only at level 'study'"),
        (None, ["--videos-per-study", "0"], "videos_per_study must be at least 1"),
        (
            None,
            ["--level", "clip", "--study-video-dropout", "0.1"],
            "dropouts are trained only at level 'study'",
        ),
        (None, ["--study-view-dropout", "1.5"], "study_view_dropout must be in [0, 1)"),
    ],
)
def test_bad_study_level_input_is_a_one_line_error(sim, tmp_path, capsys, change, args, message):
    table = pd.read_parquet(sim / "manifest.parquet")
    table["video_path"] = [str(sim / p) for p in table["video_path"]]
    if change == "drop":
        table = table.drop(columns=["study_id"])
    elif change == "blank":
        table.loc[table.index[:3], "study_id"] = ""
    manifest = tmp_path / "manifest.csv"
    table.to_csv(manifest, index=False)
    code = main(
        [
            "train",
            "--data",
            str(manifest),
            "--out",
            str(tmp_path / "run"),
            "--steps",
            "1",
            "--level",
            "study",
            *args,
        ]
    )
    err = capsys.readouterr().err
    assert code == 1, err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_cli_trains_at_study_level(sim, tmp_path, capsys):
    code = main(
        [
            "-q",
            "train",
            "--data",
            str(sim),
            "--out",
            str(tmp_path / "run"),
            "--steps",
            "2",
            "--batch-size",
            "4",
            "--level",
            "study",
            "--videos-per-study",
            "2",
            "--study-pooling",
            "echoprime",
            "--study-video-dropout",
            "0.25",
            "--study-view-dropout",
            "0.5",
            "--no-augment",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert "train done" in capsys.readouterr().out
    saved = json.loads((tmp_path / "run" / "final" / "config.json").read_text())
    assert saved["study_pooling"] == "echoprime"
    assert saved["study_video_dropout"] == 0.25 and saved["study_view_dropout"] == 0.5


def _run_worker(sim: Path, out: Path, batch_size: int, pooling: str, ranks: int) -> None:
    """``study_dist_worker.py`` as one process or as ``ranks`` gloo ranks on this machine."""
    import os
    import socket
    import subprocess
    import sys

    worker = Path(__file__).with_name("study_dist_worker.py")
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    args = [sys.executable, str(worker), str(sim), str(out), str(batch_size), pooling]
    if ranks == 1:
        subprocess.run(args, env=env, check=True, timeout=180)
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    ranked = {"WORLD_SIZE": str(ranks), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
    procs = [
        subprocess.Popen(args, env={**env, **ranked, "RANK": str(r), "LOCAL_RANK": str(r)})
        for r in range(ranks)
    ]
    assert [p.wait(timeout=180) for p in procs] == [0] * ranks


def test_two_ranks_train_studies_as_one_process_with_the_double_batch(sim, tmp_path):
    """Under torchrun each rank draws its own studies; their embeddings meet every report of the
    global batch and the attention pooling's gradients are summed, so two ranks of 2 studies
    take the steps of one process with 4."""
    pooling = "attention"
    single, double = tmp_path / "single", tmp_path / "double"
    _run_worker(sim, single, 4, pooling, ranks=1)
    _run_worker(sim, double, 2, pooling, ranks=2)

    def losses(run: Path) -> list[float]:
        table = pd.read_csv(run / "metrics.csv")
        return table["loss"].dropna().astype(float).tolist()

    assert len(losses(single)) == 2 and losses(single) == pytest.approx(losses(double), abs=1e-5)
    a = load_file(single / "final" / "model.safetensors")
    b = load_file(double / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-5, equal_nan=True)
    assert json.loads((double / "final" / "config.json").read_text())["study_pooling"] == pooling
