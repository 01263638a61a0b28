"""Pretraining runs end to end: simulated files -> Trainer -> encoder checkpoint -> CLIP model; exact resume."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from echoclip.cli.main import main
from echoclip.data.synthetic import simulate_dataset
from echoclip.loop.checkpoint import latest_checkpoint
from echoclip.loop.trainer import Trainer
from echoclip.models.encoders import load_pretrained_encoder
from echoclip.models.factory import create_model
from echoclip.pretrain.objectives import PretrainConfig, build_objective
from echoclip.pretrain.pretrain import pretrain
from echoclip.train.config import TrainConfig

from .clips import BeatingClips

VIT = {"video": {"image_size": 32, "num_frames": 8, "patch_size": 8, "width": 32, "layers": 1, "heads": 2}}
SMALL = dict(decoder_width=32, decoder_layers=1, decoder_heads=2, projection_dim=16, image_every=2)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    return simulate_dataset(
        tmp_path_factory.mktemp("sim") / "data", n=12, seed=0, size=32, frames=16, fps=12.5, progress=False
    )


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
        seed=1,
    )
    return TrainConfig(**{**base, **kw})


def test_vit_pretraining_writes_an_encoder_the_clip_model_loads(sim, tmp_path):
    result = pretrain(
        sim,
        _config(tmp_path / "ssl"),
        model="echoclip-vit-tiny",
        mask="tube",
        ratio=0.75,
        options=PretrainConfig(**SMALL),
        model_overrides=VIT,
        val_split="train",
    )
    final = result.final_dir
    assert (final / "encoder.safetensors").is_file() and (final / "model.safetensors").is_file()
    info = json.loads((final / "encoder.json").read_text())
    assert (
        info["objective"] == "mae"
        and info["pretrain"]["mask"] == "tube"
        and info["model"] == "echoclip-vit-tiny"
    )
    assert sorted(p.name for p in (tmp_path / "ssl" / "images").iterdir()) == [
        "recon_step00000000.png",
        "recon_step00000002.png",
    ]
    assert "recon" in result.metrics_csv.read_text().splitlines()[0]
    assert "recon" in result.validation  # the loss on the clips of val_split

    model = create_model("echoclip-vit-tiny", **VIT)
    report = load_pretrained_encoder(model, final)
    trained = load_file(final / "encoder.safetensors")
    assert report.matched == sorted(trained) and all(k.startswith("model.") for k in trained)
    for k in report.matched:
        assert torch.equal(model.video_tower.state_dict()[k], trained[k])


def test_frame_tower_pretraining(sim, tmp_path):
    result = pretrain(
        sim,
        _config(tmp_path / "ssl", steps=2),
        model="echoclip-tiny",
        periodic_weight=0.5,
        options=PretrainConfig(**SMALL),
        train_split=None,
        val_split=None,
    )
    info = json.loads((result.final_dir / "encoder.json").read_text())
    assert info["objective"] == "frames-ssl" and info["video"]["kind"] == "frames"
    report = load_pretrained_encoder(create_model("echoclip-tiny"), result.final_dir)
    assert report.missing == [] and report.unexpected == []
    assert not (tmp_path / "ssl" / "images").exists()  # no reconstructions without masked modelling


def test_the_same_seed_gives_the_same_encoder_whatever_ran_before(sim, tmp_path):
    def run(out):
        return pretrain(
            sim,
            _config(out, steps=2),
            model="echoclip-tiny",
            options=PretrainConfig(**SMALL),
            model_overrides={"video": {"image_size": 32}},
            train_split=None,
            val_split=None,
        )

    torch.manual_seed(5)
    a = load_file(run(tmp_path / "a").final_dir / "encoder.safetensors")
    torch.rand(100)  # the global random state differs; the run's own seed decides
    b = load_file(run(tmp_path / "b").final_dir / "encoder.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("kind", ["videomae", "frames"])
def test_resume_after_a_kill_gives_identical_weights(tmp_path, kind):
    def run(out, crash_at=None, resume=False):
        from echoclip.models.video_towers import build_video_tower

        name = "echoclip-vit-tiny" if kind == "videomae" else "echoclip-tiny"
        cfg = create_model(name, **(VIT if kind == "videomae" else {"video": {"image_size": 32}})).config
        torch.manual_seed(0)
        tower = build_video_tower(cfg.video, cfg.embed_dim)
        model, objective = build_objective(tower, PretrainConfig(**SMALL, periodic_weight=0.5), seed=1)
        if crash_at is not None:
            compute = objective.compute

            def crashing(m, batch, _calls=[0]):  # noqa: B006 - counts calls across steps
                _calls[0] += 1
                if _calls[0] > crash_at:
                    raise KeyboardInterrupt
                return compute(m, batch)

            objective.compute = crashing
        frames = 8 if kind == "videomae" else 16
        config = _config(out, steps=6, checkpoint_every=3, batch_size=2)
        return Trainer(model, objective, BeatingClips(10, frames=frames), config, resume=resume).fit()

    reference = run(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", crash_at=4)
    assert latest_checkpoint(tmp_path / "b").name == "step_00000003"
    torch.manual_seed(123)
    resumed = run(tmp_path / "b", resume=True)
    a = load_file(reference.final_dir / "model.safetensors")
    b = load_file(resumed.final_dir / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert reference.metrics_csv.read_text() == resumed.metrics_csv.read_text()


def test_cli(sim, tmp_path, capsys):
    out = tmp_path / "ssl"
    code = main(
        [
            "pretrain",
            "--data",
            str(sim),
            "--model",
            "echoclip-tiny",
            "--out",
            str(out),
            "--steps",
            "2",
            "--batch-size",
            "4",
            "--periodic-weight",
            "0.2",
            "--seed",
            "0",
            "--probe",
            "ef",
            "--probe-steps",
            "5",
        ]
    )
    assert code == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("pretrain done: ")
    summary = json.loads(line.removeprefix("pretrain done: "))
    assert summary["steps"] == 2 and summary["encoder"] == str(out / "final")
    assert set(summary["probe"]) == {"pretrained", "random"} and "ridge.r2" in summary["probe"]["random"]
    assert (out / "metrics.csv").is_file() and (out / "final" / "encoder.json").is_file()


def test_cli_errors(sim, tmp_path, capsys):
    assert main(["pretrain", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "x")]) == 1
    assert "not found" in capsys.readouterr().err
    assert main(["pretrain", "--data", str(sim), "--ratio", "1.5", "--out", str(tmp_path / "x")]) == 1
    assert "mask ratio" in capsys.readouterr().err
