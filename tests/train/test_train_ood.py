"""A training run writes the OOD reference into its final model directory; `echoclip
calibrate-ood` refits it for an existing model; `echoclip search --video` reports the flag."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from echoclip.cli.main import main
from echoclip.models.factory import load_model
from echoclip.models.ood import OOD_FILE, OOD_WARNING, weights_fingerprint


def _has_pydicom_data() -> bool:
    try:
        importlib.metadata.version("pydicom-data")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """24 simulated studies (every sixth in val), a tokenizer, and a tiny model trained 2 steps."""
    from echoclip.data.synthetic import simulate_dataset, simulate_reports
    from echoclip.tokenizer import EchoTokenizer

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("ood")
    sim = simulate_dataset(root / "sim", n=24, seed=1, size=32, frames=32, fps=25.0, progress=False)
    table = pd.read_parquet(sim / "manifest.parquet")
    table["split"] = ["val" if i % 6 == 0 else "train" for i in range(len(table))]
    table.to_parquet(sim / "manifest.parquet")
    EchoTokenizer.train(simulate_reports(50, seed=1)).save(root / "tok")
    out = root / "run"
    argv = ["-q", "train", "--data", sim, "--tokenizer", root / "tok", "--out", out]
    argv += ["--steps", 2, "--batch-size", 4, "--lr", "1e-4", "--no-augment", "--seed", 0]
    assert main([str(a) for a in argv]) == 0
    return {"sim": sim, "model": out / "final", "root": root}


def test_training_writes_a_calibrated_reference_of_its_final_weights(trained, capsys):
    model = load_model(trained["model"])
    reference = model.ood_reference
    assert (trained["model"] / OOD_FILE).is_file() and reference is not None
    assert reference.fingerprint == weights_fingerprint(model)
    c = reference.calibration
    assert c["train_videos"] == 20 and c["held_out_videos"] == 4
    assert c["quantile"] == 0.025 and c["held_out_above"] == 0 and reference.threshold == c["threshold"]


def test_calibrate_ood_refits_the_reference_of_an_existing_model(trained, tmp_path, capsys):
    import shutil

    model = shutil.copytree(trained["model"], tmp_path / "model")
    (model / OOD_FILE).unlink()
    argv = ["calibrate-ood", "--model", model, "--data", trained["sim"], "--quantile", 0.25]
    assert main([str(a) for a in argv]) == 0
    out = capsys.readouterr().out
    assert out.startswith("calibrate-ood: 20 training videos, ") and " layer statistics; threshold " in out
    assert "(1 of 4 held-out videos above it, quantile 0.25)" in out
    reference = load_model(model).ood_reference
    assert reference.calibration["held_out_above"] == 1
    assert (
        main(["calibrate-ood", "--model", str(model), "--data", str(trained["sim"]), "--val-split", "nope"])
        == 1
    )


@pytest.mark.skipif(not _has_pydicom_data(), reason="pydicom-data (a dev dependency) holds the real cine")
def test_search_flags_a_real_cine_and_not_a_simulated_one(trained, capsys):
    from pydicom.data import get_testdata_file

    root, model = trained["root"], trained["model"]
    assert (
        main(["embed", "--model", str(model), "--data", str(trained["sim"]), "--out", str(root / "emb")]) == 0
    )
    assert main(["index", "--embeddings", str(root / "emb"), "--out", str(root / "idx")]) == 0
    capsys.readouterr()
    search = ["search", "--index", str(root / "idx"), "--model", str(model), "--k", "2", "--video"]

    assert main([*search, get_testdata_file("color3d_jpeg_baseline.dcm")]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-2]
    assert line.startswith("out of distribution: YES (score ") and line.endswith(OOD_WARNING)

    # a training video (the largest of the 4 validation scores is the threshold itself)
    seen = pd.read_parquet(trained["sim"] / "manifest.parquet").query("split == 'train'")["video_path"]
    assert main([*search, str(trained["sim"] / seen.iloc[0]), "--json"]) == 0
    ood = json.loads(capsys.readouterr().out)["query"]["out_of_distribution"]
    assert ood["flag"] is False and ood["score"] <= ood["threshold"]


@pytest.mark.skipif(not _has_pydicom_data(), reason="pydicom-data (a dev dependency) holds the real cine")
def test_zeroshot_marks_the_real_cine_in_its_table(trained, tmp_path, capsys):
    from pydicom.data import get_testdata_file

    cine = get_testdata_file("color3d_jpeg_baseline.dcm")
    seen = pd.read_parquet(trained["sim"] / "manifest.parquet").query("split == 'train'")["video_path"]
    simulated = str(trained["sim"] / seen.iloc[0])
    argv = ["zeroshot", "--model", str(trained["model"]), "--data", cine, simulated]
    assert main([*argv, "--prompts", "ejection_fraction,devices", "--out", str(tmp_path / "p.csv")]) == 0
    assert "; 1 studies out of distribution (column out_of_distribution)" in capsys.readouterr().out
    table = pd.read_csv(tmp_path / "p.csv").set_index("study_id")
    assert table.loc[cine, "out_of_distribution"] and not table.loc[simulated, "out_of_distribution"]
    assert table.loc[cine, "ood_score"] > table.loc[simulated, "ood_score"]
    assert {"ejection_fraction", "pacemaker"} <= set(table.columns)  # one row per study, both sets
