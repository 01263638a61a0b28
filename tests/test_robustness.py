"""evaluate_robustness on simulated studies with a tiny random model: a clean row first, one
row per perturbation, relative changes against clean, the clean run as plain evaluate; and
``echoclip evaluate --perturb`` on the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from echoclip.cli.main import build_parser, main
from echoclip.data.perturb import PERTURBATIONS
from echoclip.errors import ConfigError
from echoclip.evaluate import evaluate
from echoclip.robustness import CLEAN, REL_SUFFIX, evaluate_robustness, headline_metrics

TINY = {"video": {"image_size": 32, "num_frames": 8}}
OPTIONS = {"split": None, "calibration_split": None, "batch_size": 8}


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    from echoclip.data.synthetic import simulate_dataset, simulate_reports
    from echoclip.models.factory import create_model
    from echoclip.tokenizer import EchoTokenizer

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("robustness")
    sim = simulate_dataset(root / "sim", n=10, seed=0, size=32, frames=24, fps=25.0, progress=False)
    tokenizer = EchoTokenizer.train(simulate_reports(50, seed=1))
    model = create_model("echoclip-tiny", tokenizer=tokenizer, **TINY)
    model.save_pretrained(root / "model", tokenizer=tokenizer)
    return {"sim": sim, "model": model, "tokenizer": tokenizer, "root": root}


def test_the_table_has_a_clean_row_and_relative_changes(setup, tmp_path):
    model, tokenizer, sim = setup["model"], setup["tokenizer"], setup["sim"]
    out = tmp_path / "robust"
    table = evaluate_robustness(model, tokenizer, sim, out, "shadow:1,frame_rate", seed=0, **OPTIONS)

    assert list(table.index) == [CLEAN, "shadow:1", "frame_rate:0.5"]
    assert list(table["name"]) == [CLEAN, "shadow", "frame_rate"]
    assert list(table["strength"]) == [0.0, 1.0, 0.5]
    for column in (
        "ejection_fraction.mae",
        "ejection_fraction.pearson_r",
        "pacemaker.auc",
        "devices.mean_auc",
        "view.accuracy",
        "retrieval.video_to_report.recall@1",
        "retrieval.report_to_video.recall@10",
    ):
        assert column in table.columns and column + REL_SUFFIX in table.columns, column
    metrics = [c for c in table.columns if c not in ("name", "strength") and not c.endswith(REL_SUFFIX)]
    clean = table.loc[CLEAN, metrics].astype(float)
    for label in ("shadow:1", "frame_rate:0.5"):
        row = table.loc[label, metrics].astype(float)
        expected = (row - clean) / clean.abs().where(clean.abs() > 0)
        got = table.loc[label, [m + REL_SUFFIX for m in metrics]].astype(float).to_numpy()
        np.testing.assert_allclose(got, expected.to_numpy(), equal_nan=True)
    clean_changes = table.loc[CLEAN, [m + REL_SUFFIX for m in metrics]].astype(float)
    assert ((clean_changes == 0) | clean_changes.isna()).all()
    assert table.loc["shadow:1", "ejection_fraction.mae"] != table.loc[CLEAN, "ejection_fraction.mae"]

    # the written table is the returned one; each run has its report
    written = pd.read_csv(out / "robustness.csv").set_index("perturbation")
    pd.testing.assert_frame_equal(written, table, check_dtype=False, check_names=False)
    md = (out / "robustness.md").read_text()
    assert "| clean |" in md and "| shadow:1 |" in md and "`frame_rate`:" in md and "%)" in md
    for folder in ("clean", "shadow-1", "frame_rate-0.5"):
        assert (out / folder / "metrics.json").is_file() and (out / folder / "summary.md").is_file()
    perturbed = json.loads((out / "shadow-1" / "metrics.json").read_text())
    assert perturbed["data"]["perturbation"] == {"name": "shadow", "strength": 1.0, "seed": 0}
    assert "Perturbed: `shadow`" in (out / "shadow-1" / "summary.md").read_text()
    assert not list(out.glob("*.tmp"))

    # the clean run is plain evaluate, untouched
    plain = evaluate(model, tokenizer, sim, tmp_path / "plain", **OPTIONS)
    assert json.loads((out / "clean" / "metrics.json").read_text()) == plain
    assert "perturbation" not in plain["data"]
    assert headline_metrics(plain) == pytest.approx(
        table.loc[CLEAN, list(headline_metrics(plain))].astype(float).to_dict(), nan_ok=True
    )


def test_the_same_seed_gives_the_same_perturbed_metrics(setup, tmp_path):
    model, tokenizer, sim = setup["model"], setup["tokenizer"], setup["sim"]
    runs = [
        evaluate(
            model,
            tokenizer,
            sim,
            tmp_path / f"r{i}",
            prompt_sets=["ejection_fraction"],
            perturbation="speckle:1",
            perturbation_seed=seed,
            **OPTIONS,
        )
        for i, seed in enumerate((3, 3, 4))
    ]
    assert runs[0]["zero_shot"] == runs[1]["zero_shot"]
    assert (
        runs[0]["zero_shot"]["ejection_fraction"]["mae"] != runs[2]["zero_shot"]["ejection_fraction"]["mae"]
    )


def test_bad_perturbations_fail_before_any_work(setup, tmp_path):
    with pytest.raises(ConfigError, match="unknown perturbation 'bogus'"):
        evaluate_robustness(setup["model"], setup["tokenizer"], setup["sim"], tmp_path / "x", "bogus")
    with pytest.raises(ConfigError, match="given twice"):
        evaluate_robustness(
            setup["model"], setup["tokenizer"], setup["sim"], tmp_path / "x", ["blur", "blur:0.5"]
        )
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("spec", "says"), [("bogus", "unknown perturbation 'bogus'"), ("blur:2", "outside [0, 1]")]
)
def test_cli_a_bad_perturb_is_one_line_and_exit_1(spec, says, tmp_path, capsys):
    gone = str(tmp_path / "no-such-model")
    assert (
        main(["evaluate", "--model", gone, "--data", gone, "--out", str(tmp_path / "o"), "--perturb", spec])
        == 1
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("echoclip evaluate: error: ") and says in err
    assert "Traceback" not in err


def test_cli_help_names_every_perturbation_without_a_lone_percent():
    evaluate_parser = next(a for a in build_parser()._actions if a.dest == "command").choices["evaluate"]
    action = next(a for a in evaluate_parser._actions if a.dest == "perturb")
    assert "%" not in action.help
    assert all(name in action.help for name in PERTURBATIONS.names())


def test_cli_perturb_writes_the_table(setup, tmp_path, capsys):
    out = tmp_path / "cli"
    argv = [
        "evaluate",
        "--model",
        str(setup["root"] / "model"),
        "--data",
        str(setup["sim"]),
        "--out",
        str(out),
    ]
    argv += ["--split", "all", "--calibration-split", "none", "--perturb", "gain:0.25", "--device", "cpu"]
    assert main(argv) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("evaluate: clean EF MAE") and "gain:0.25" in line and "robustness.md" in line
    table = pd.read_csv(out / "robustness.csv")
    assert list(table["perturbation"]) == ["clean", "gain:0.25"]
    assert isinstance(Path(out / "clean" / "metrics.json").read_text(), str)
