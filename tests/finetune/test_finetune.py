"""Fine-tuning end to end on simulated studies: Python API, CLI, exact resume, bad input, clip averaging."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from echoclip.cli.main import main
from echoclip.data.datasets import VideoClips, open_dataset
from echoclip.data.transforms import ClipSampler, VideoTransform
from echoclip.errors import DataError, ModelError
from echoclip.finetune.finetune import FineTuneObjective, finetune, make_task, target_matrix
from echoclip.finetune.model import FineTuneModel, load_finetuned
from echoclip.finetune.report import predict
from echoclip.loop.checkpoint import latest_checkpoint
from echoclip.loop.config import LoopConfig
from echoclip.models.encoders import load_video_encoder, save_encoder
from echoclip.models.factory import create_model

from .conftest import TINY


def _config(out, **kw):
    base = dict(
        out=str(out),
        steps=4,
        batch_size=4,
        lr=1e-3,
        warmup_steps=1,
        checkpoint_every=2,
        log_every=1,
        tensorboard=False,
        progress=False,
        seed=3,
    )
    return LoopConfig(**{**base, **kw})


def test_finetune_writes_a_model_and_a_report_that_load(sim, tmp_path):
    result = finetune(
        sim, _config(tmp_path / "ft"), init="echoclip-tiny", head="stfnet", model_overrides=TINY, test_clips=2
    )
    out = tmp_path / "ft"
    metrics = json.loads((out / "metrics.json").read_text())
    assert (
        metrics["targets"] == ["ef", "esv", "edv"] and metrics["n_test"] == 4 and metrics["test_clips"] == 2
    )
    assert {"mae", "rmse", "r2", "pearson_r"} <= set(metrics["ef"]) and "r2" in metrics["esv"]
    assert {"auc", "accuracy", "f1"} <= set(metrics["ef50"])
    assert metrics["baseline"]["ef_mae_mean_predictor"] > 0
    assert {"ef_scatter", "roc"} <= set(metrics["plots"]) and (out / "ef_scatter.png").stat().st_size > 0
    table = pd.read_csv(out / "predictions.csv")
    assert list(table.columns[:3]) == ["study_id", "ef_true", "ef_pred"] and len(table) == 4
    assert np.isclose(np.abs(table["ef_true"] - table["ef_pred"]).mean(), metrics["ef"]["mae"])

    model = load_finetuned(result.final_dir)
    assert model.targets == ("ef", "esv", "edv") and model.head_name == "stfnet"
    test = open_dataset(sim, "test", VideoTransform(model.preprocess_config))
    _, again = predict(model, test, clips=2)
    assert np.allclose(again[:, 0], table["ef_pred"], atol=1e-4)
    header = result.train.metrics_csv.read_text().splitlines()[0]
    assert "ef_mae" in header and "val/ef_mae" in header


def test_cli_on_an_echonet_dynamic_folder(echonet, tmp_path, capsys):
    out = tmp_path / "ft"
    args = ["finetune", "--data", str(echonet), "--init", "echoclip-tiny", "--head", "linear", "--freeze"]
    args += ["--out", str(out), "--steps", "3", "--batch-size", "4", "--seed", "0", "--no-plots"]
    args += ["--config", str(_recipe(tmp_path))]
    assert main(args) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("finetune done: ")
    summary = json.loads(line.removeprefix("finetune done: "))
    assert summary["steps"] == 3 and summary["n_test"] == 4 and summary["test_mae"] > 0
    assert summary["mean_predictor_mae"] > 0 and summary["model"] == str(out / "final")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["freeze"] is True and metrics["head"] == "linear" and "edv" in metrics
    info = json.loads((out / "final" / "finetune.json").read_text())
    assert info["freeze"] is True and info["task"]["name"] == "ef" and info["init_kind"] == "random"
    weights = load_file(out / "final" / "model.safetensors")
    start = create_model("echoclip-tiny", **TINY).video_tower.state_dict()
    # frozen: the encoder's weights are those of the seeded initialisation it started from
    torch.manual_seed(0)
    tower, _, _ = load_video_encoder("echoclip-tiny", overrides=TINY)
    assert torch.equal(
        weights["encoder.backbone.blocks.0.weight"], tower.state_dict()["backbone.blocks.0.weight"]
    )
    assert set(start) == {k.removeprefix("encoder.") for k in weights if k.startswith("encoder.")}


def _recipe(tmp_path):
    path = tmp_path / "recipe.toml"
    path.write_text("[model.video]\nimage_size = 32\nnum_frames = 8\n")
    return path


def test_ef50_and_findings_tasks(sim, tmp_path):
    result = finetune(
        sim, _config(tmp_path / "a", steps=2), head="attentive", task="ef50", model_overrides=TINY
    )
    assert result.metrics["targets"] == ["ef"] and {"auc", "accuracy", "f1"} <= set(result.metrics["ef"])
    assert result.model.kind == "binary"
    result = finetune(
        sim,
        _config(tmp_path / "b", steps=2),
        head="linear",
        task="findings",
        model_overrides=TINY,
        freeze=True,
    )
    findings = [c for c in pd.read_parquet(sim / "manifest.parquet").columns if c.startswith("finding_")]
    assert result.metrics["targets"] == sorted(findings) and "macro_auc" in result.metrics
    probs = pd.read_csv(tmp_path / "b" / "predictions.csv")[[f"{f}_pred" for f in sorted(findings)]]
    assert ((probs >= 0) & (probs <= 1)).all().all()


def test_resume_after_a_kill_equals_an_uninterrupted_run(sim, tmp_path, monkeypatch):
    def run(out, resume=False):
        return finetune(
            sim,
            _config(out, steps=4, checkpoint_every=2),
            head="stfnet",
            model_overrides=TINY,
            resume=resume,
            test_split=None,
        )

    reference = run(tmp_path / "a")
    loss, calls = FineTuneObjective.loss, [0]

    def crashing(self, model, batch, step):
        calls[0] += 1
        if calls[0] > 3:
            raise KeyboardInterrupt
        return loss(self, model, batch, step)

    monkeypatch.setattr(FineTuneObjective, "loss", crashing)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b")
    monkeypatch.setattr(FineTuneObjective, "loss", loss)
    assert latest_checkpoint(tmp_path / "b").name == "step_00000002"
    torch.manual_seed(123)
    resumed = run(tmp_path / "b", resume=True)
    a = load_file(reference.final_dir / "model.safetensors")
    b = load_file(resumed.final_dir / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert reference.train.metrics_csv.read_text() == resumed.train.metrics_csv.read_text()

    with pytest.raises(ModelError, match="was trained with head='stfnet'"):
        finetune(sim, _config(tmp_path / "b", steps=6), head="linear", model_overrides=TINY, resume=True)


def test_folder_without_filelist(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = main(
        [
            "finetune",
            "--data",
            str(tmp_path / "empty"),
            "--init",
            "echoclip-tiny",
            "--out",
            str(tmp_path / "x"),
        ]
    )
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "FileList.csv" in err and str(tmp_path / "empty") in err


def test_filelist_with_missing_ef(echonet, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(echonet, broken)
    table = pd.read_csv(broken / "FileList.csv")
    table.loc[table["Split"] == "TRAIN", "EF"] = table.loc[table["Split"] == "TRAIN", "EF"].where(
        np.arange((table["Split"] == "TRAIN").sum()) % 5 != 1
    )
    table.to_csv(broken / "FileList.csv", index=False)
    with pytest.raises(DataError, match=r"FileList.csv: 3 of 15 videos have no EF value"):
        finetune(broken, _config(tmp_path / "x"), model_overrides=TINY)
    assert (
        main(["finetune", "--data", str(broken), "--init", "echoclip-tiny", "--out", str(tmp_path / "y")])
        == 1
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "have no EF value" in err


def test_init_of_another_architecture(sim, tmp_path, capsys):
    frames = create_model("echoclip-tiny", **TINY).video_tower
    encoder = save_encoder(frames, tmp_path / "enc", info={"preprocess": {"fps": 12.5}})
    vit = "echoclip-vit-tiny"
    with pytest.raises(ModelError, match="video.kind='frames'"):
        load_video_encoder(encoder, model=vit)
    code = main(
        ["finetune", "--data", str(sim), "--init", str(encoder), "--model", vit, "--out", str(tmp_path / "x")]
    )
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "kind" in err and str(tmp_path / "enc") in err
    with pytest.raises(ModelError, match="not a model directory, an encoder checkpoint or a model config"):
        load_video_encoder(tmp_path / "nothing-here")
    with pytest.raises(ModelError, match="name one architecture"):
        load_video_encoder("echoclip-tiny", model=vit)
    tower, preprocess, kind = load_video_encoder(encoder)  # the checkpoint alone rebuilds its own tower
    assert kind == "encoder" and preprocess.image_size == 32 and preprocess.fps == 12.5
    assert all(torch.equal(v, frames.state_dict()[k]) for k, v in tower.state_dict().items())


def test_test_time_clips(sim):
    sampler = ClipSampler(num_frames=16)
    assert [s[0] for s in sampler.spread(64, 25.0, 1)] == [24]
    assert [s[0] for s in sampler.spread(64, 25.0, 4)] == [0, 16, 32, 48]
    assert [s[0] for s in sampler.spread(10, 25.0, 3)] == [0, 0, 0]
    assert np.array_equal(sampler.spread(61, 25.0, 1)[0], sampler.indices(61, 25.0))
    transform = VideoTransform(create_model("echoclip-tiny", **TINY).preprocess_config)
    test = open_dataset(sim, "test", transform)
    item = VideoClips(test, 3)[0]
    assert item["video"].shape == (3, 3, 8, 32, 32) and item["index"] == 0
    assert torch.equal(VideoClips(test, 1)[0]["video"][0], test[0]["video"])  # one clip: the centred one
    torch.manual_seed(0)
    model = FineTuneModel(load_video_encoder("echoclip-tiny", overrides=TINY)[0], "linear", ("ef", "esv"))
    model.eval()
    index, pred = predict(model, test, clips=3, batch_size=3)
    assert index.tolist() == [0, 1, 2, 3] and pred.shape == (4, 2)
    each = torch.stack([model.predict(VideoClips(test, 3)[i]["video"]).mean(0) for i in range(4)])
    assert np.allclose(pred, each.numpy(), atol=1e-5)


def test_make_task_and_targets(sim):
    columns = ["ef", "esv", "edv", "finding_a", "finding_b", "device_x"]
    assert make_task("ef", columns).targets == ("ef", "esv", "edv")
    assert make_task("ef", columns, volumes=False, loss="mse").loss == "mse"
    assert make_task("findings", columns).targets == ("finding_a", "finding_b")
    assert make_task("findings", columns, labels=["device_x"]).targets == ("device_x",)
    with pytest.raises(Exception, match="unknown task"):
        make_task("lvh", columns)
    with pytest.raises(Exception, match="loss"):
        make_task("ef50", columns, loss="l1")
    train = open_dataset(sim, "train", None)
    y = target_matrix(train, make_task("ef50", list(train.table.columns)))
    assert set(np.unique(y)) <= {0.0, 1.0} and y[:, 0].tolist() == (train.table["ef"] < 50).tolist()


def test_init_from_a_model_directory_or_a_finetuned_one(tmp_path):
    torch.manual_seed(0)
    clip_model = create_model("echoclip-tiny", **TINY)
    clip_model.save_pretrained(tmp_path / "clip")
    tower, preprocess, kind = load_video_encoder(tmp_path / "clip")
    assert kind == "model" and preprocess == clip_model.preprocess_config
    own = clip_model.video_tower.state_dict()
    assert all(torch.equal(v, own[k]) for k, v in tower.state_dict().items())
    with pytest.raises(ModelError, match="weights do not match"):
        load_video_encoder(tmp_path / "clip", model="echoclip-vit-tiny")

    from echoclip.finetune.model import save_finetuned

    save_finetuned(FineTuneModel(tower, "attentive", ("ef",)), tmp_path / "ft")
    again, _, kind = load_video_encoder(tmp_path / "ft", model="echoclip-tiny", overrides=TINY)
    assert kind == "finetuned" and all(torch.equal(v, own[k]) for k, v in again.state_dict().items())
