"""``echoclip train`` end to end: a real tiny model on simulated studies, SIGKILL and resume, bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from echoclip.cli.main import main

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_MAX_": "0"}


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> Path:
    from echoclip.data.synthetic import simulate_dataset

    out = tmp_path_factory.mktemp("sim") / "data"
    simulate_dataset(out, n=24, seed=1, size=64, frames=32, fps=25.0, progress=False)
    table = pd.read_parquet(out / "manifest.parquet")
    table["split"] = ["val" if i % 6 == 0 else "train" for i in range(len(table))]
    table.to_parquet(out / "manifest.parquet")
    return out


def _train_cmd(sim: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "echoclip.cli.main",
        "-q",
        "train",
        "--data",
        str(sim),
        "--model",
        "echoclip-tiny",
        "--out",
        str(out),
        "--steps",
        "12",
        "--batch-size",
        "4",
        "--lr",
        "1e-3",
        "--checkpoint-every",
        "3",
        "--keep-last",
        "5",
        "--seed",
        "5",
        # the sentence and value terms and their random subsets must resume exactly too
        "--sentence-loss-weight",
        "1",
        "--max-sentences",
        "8",
        "--value-loss-weight",
        "1",
        "--value-sentences",
        "4",
        "--sentence-report-weight",
        "1",
        "--concept",
        "pacemaker=pacemaker|pacer|pacing|lead",
        "--concept",
        r"tavr=\btav[ri]\b|transcatheter",
        *extra,
    ]


def test_sigkill_then_resume_matches_an_uninterrupted_run(sim, tmp_path):
    reference = tmp_path / "reference"
    subprocess.run(_train_cmd(sim, reference), env=ENV, check=True, timeout=600, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        _train_cmd(sim, killed), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 600
    while not (killed / "checkpoints" / "step_00000006").exists():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "final").exists()

    done = subprocess.run(
        _train_cmd(sim, killed, "--resume"), env=ENV, timeout=600, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "train done" in done.stdout
    a = load_file(reference / "final" / "model.safetensors")
    b = load_file(killed / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:  # bit-identical (NaN marks the non-value tokens of the value map)
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, equal_nan=True)
    assert (reference / "metrics.csv").read_text() == (killed / "metrics.csv").read_text()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--lr", "0"], "learning rate"),
        (["--lr", "nan"], "learning rate"),
        (["--batch-size", "500"], "larger than the training data set"),
        (["--max-sentences", "-1"], "max_sentences"),
        (["--sentence-loss-weight", "-1"], "sentence_loss_weight"),
        (["--value-loss-weight", "inf"], "value_loss_weight"),
        (["--value-sentences", "0"], "value_sentences"),
        (["--sentence-report-weight", "-1"], "sentence_report_weight"),
        (["--concept", "tavr=(tavr"], "concept_patterns['tavr']"),
    ],
)
def test_bad_settings_are_one_line_errors(sim, tmp_path, capsys, args, message):
    code = main(["train", "--data", str(sim), "--out", str(tmp_path / "run"), "--steps", "2", *args])
    err = capsys.readouterr().err
    assert code == 1
    assert message in err and len(err.strip().splitlines()) == 1


def test_unreadable_or_missing_data(sim, tmp_path, capsys):
    assert (
        main(["train", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "r"), "--steps", "2"])
        == 1
    )
    assert "nothing" in capsys.readouterr().err

    broken = tmp_path / "broken"
    (broken / "Videos").mkdir(parents=True)
    table = pd.read_parquet(sim / "manifest.parquet")
    for p in table["video_path"]:
        (broken / p).write_bytes(b"not a video")
    table.to_parquet(broken / "manifest.parquet")
    code = main(
        ["train", "--data", str(broken), "--out", str(tmp_path / "r2"), "--steps", "2", "--batch-size", "2"]
    )
    err = capsys.readouterr().err
    assert code == 1 and "no readable training samples" in err


def test_init_prefix_loads_only_part_of_a_pretrained_tower(sim, tmp_path, capsys, caplog):
    from echoclip.models.encoders import save_encoder
    from echoclip.models.factory import create_model

    torch.manual_seed(3)
    encoder = save_encoder(create_model("echoclip-tiny").video_tower, tmp_path / "ssl")
    args = ["train", "--data", str(sim), "--steps", "1", "--batch-size", "4", "--init", str(encoder)]
    caplog.set_level("INFO", logger="echoclip.train.clip")
    assert main([*args, "--out", str(tmp_path / "all")]) == 0
    assert main([*args, "--out", str(tmp_path / "part"), "--init-prefix", "backbone."]) == 0
    whole, part = (r.getMessage() for r in caplog.records if "initialised the video tower" in r.getMessage())
    assert "left out by prefix" not in whole
    assert "left out by prefix (aggregation." in part
    assert main([*args, "--out", str(tmp_path / "none"), "--init-prefix", "head."]) == 1
    assert "no tensor starts with head." in capsys.readouterr().err


def test_concepts_come_from_the_recipe_and_the_flags(tmp_path):
    import argparse

    from echoclip.cli import train as train_cli

    recipe = tmp_path / "recipe.toml"
    recipe.write_text("[train]\nsteps = 5\n\n[train.contrastive.concept_patterns]\ntavr = '\\btav[ri]\\b'\n")
    parser = argparse.ArgumentParser()
    train_cli.add_arguments(parser)
    base = ["--data", "x", "--config", str(recipe)]
    config, _ = train_cli.config_from_args(parser.parse_args(base))
    assert config.contrastive.concept_patterns == {"tavr": r"\btav[ri]\b"} and config.steps == 5
    args = parser.parse_args([*base, "--concept", "tavr=transcatheter", "--concept", "clip= mitraclip=x"])
    config, _ = train_cli.config_from_args(args)
    assert config.contrastive.concept_patterns == {"tavr": "transcatheter", "clip": " mitraclip=x"}
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--concept", "no-equals-sign"])
