"""``predict_views`` and ``echoclip views``: each video's view from a fine-tuned classifier or prompts."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import echoclip
from echoclip.cli.main import main
from echoclip.data.synthetic.anatomy import VIEWS
from echoclip.errors import ModelError
from echoclip.views import predict_views, view_accuracy

TINY = {"video": {"image_size": 32, "num_frames": 8}}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    """Eight four-view studies, a view head fine-tuned for a few steps, an untrained CLIP model."""
    from dataclasses import replace

    from echoclip.data.synthetic import simulate_dataset
    from echoclip.finetune.finetune import finetune
    from echoclip.loop.config import LoopConfig
    from echoclip.models.factory import create_model, get_tokenizer

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("views")
    sim = simulate_dataset(
        root / "sim", n=8, seed=0, size=32, frames=16, fps=12.5, views=VIEWS, progress=False
    )
    config = LoopConfig(
        out=str(root / "ft"),
        steps=20,
        batch_size=8,
        lr=3e-3,
        warmup_steps=1,
        checkpoint_every=1000,
        tensorboard=False,
        progress=False,
        seed=0,
    )
    views = finetune(
        sim, config, head="linear", task="view", model_overrides=TINY, test_split=None, plots=False
    )
    ef = finetune(
        sim,
        replace(config, out=str(root / "ef"), steps=1),
        head="linear",
        model_overrides=TINY,
        test_split=None,
        plots=False,
    )
    clip = create_model("echoclip-tiny", **TINY).save_pretrained(
        root / "clip", tokenizer=get_tokenizer("echoclip-tiny")
    )
    return {"sim": sim, "views": views.final_dir, "ef": ef.final_dir, "clip": clip, "root": root}


def test_a_fine_tuned_classifier_labels_every_video(setup):
    manifest = pd.read_parquet(setup["sim"] / "manifest.parquet")
    table = echoclip.predict_views(setup["views"], setup["sim"] / "manifest.parquet")
    assert len(table) == len(manifest) == 32 and list(table.columns[: len(manifest.columns)]) == list(
        manifest.columns
    )
    assert (table["view"] == manifest["view"]).all()  # the ground truth is left as it is
    assert set(table["view_pred"]) <= set(VIEWS) and table["view_prob"].between(0.25, 1).all()
    assert table.attrs["method"] == "finetuned" and table.attrs["classes"] == sorted(VIEWS)
    scored = view_accuracy(table)
    assert scored["n"] == 32 and scored["accuracy"] == (table["view"] == table["view_pred"]).mean()
    assert scored["accuracy"] > 0.5  # 20 steps on these very different views; chance is 0.25


def test_zero_shot_with_the_views_prompt_set(setup):
    model = echoclip.load_model(setup["clip"])
    tokenizer = echoclip.get_tokenizer(setup["clip"])
    files = [
        str(setup["sim"] / p) for p in pd.read_parquet(setup["sim"] / "manifest.parquet")["video_path"][:5]
    ]
    table = predict_views(model, files, tokenizer=tokenizer)
    assert list(table["video_path"]) == files and table["view_prob"].between(0, 1).all()
    assert set(table["view_pred"]) <= {"A4C", "A2C", "PLAX", "PSAX"} and table.attrs["method"].startswith(
        "zero-shot"
    )
    assert view_accuracy(table) is None  # no ground truth: nothing to score
    again = predict_views(setup["clip"], files)  # a directory brings its own tokenizer
    assert again["view_pred"].tolist() == table["view_pred"].tolist()


def test_an_unreadable_video_gets_no_view(setup, tmp_path):
    manifest = pd.read_parquet(setup["sim"] / "manifest.parquet").head(3)
    manifest["video_path"] = [str(setup["sim"] / p) for p in manifest["video_path"]]
    (tmp_path / "broken.avi").write_bytes(b"not a video")
    manifest.loc[1, "video_path"] = str(tmp_path / "broken.avi")
    manifest.to_parquet(tmp_path / "manifest.parquet")
    table = predict_views(setup["views"], tmp_path / "manifest.parquet")
    assert table["view_pred"].isna().tolist() == [False, True, False] and table.attrs["unreadable"] == 1
    assert view_accuracy(table)["n"] == 3  # the unreadable one counts as wrong


def test_a_view_outside_the_classes_counts_as_wrong():
    table = pd.DataFrame({"view": ["A4C", "A3C", None], "view_pred": ["A4C", "A4C", "PLAX"]})
    table.attrs["classes"] = ["A4C", "PLAX"]
    assert view_accuracy(table) == {"n": 2, "accuracy": 0.5, "outside_classes": 1}


def test_a_model_that_is_no_view_classifier(setup):
    with pytest.raises(ModelError, match="not a view classifier"):
        predict_views(setup["ef"], setup["sim"])


def test_cli_writes_the_manifest_with_views(setup, tmp_path, capsys):
    out = tmp_path / "views.parquet"
    assert (
        main(["views", "--data", str(setup["sim"]), "--model", str(setup["views"]), "--out", str(out)]) == 0
    )
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"views: 32 videos -> {out} (finetuned: A2C/A4C/PLAX/PSAX); accuracy ")
    assert line.endswith("on 32 videos with a view")
    table = pd.read_parquet(out)
    manifest = pd.read_parquet(setup["sim"] / "manifest.parquet")
    assert len(table) == 32 and (table["video_path"] == manifest["video_path"]).all()
    assert table["view_prob"].between(0, 1).all() and not out.with_name(out.name + ".tmp").exists()
    accuracy = float(line.split("accuracy ")[1].split()[0])
    assert accuracy == pytest.approx((table["view"] == table["view_pred"]).mean(), abs=1e-3)

    csv = tmp_path / "val.csv"
    args = ["views", "--data", str(setup["sim"]), "--split", "val", "--model", str(setup["clip"])]
    assert main([*args, "--out", str(csv)]) == 0
    assert "zero-shot argmax (views)" in capsys.readouterr().out
    assert len(pd.read_csv(csv)) == (manifest["split"] == "val").sum()


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no-model", "no such model"),
        ("no-data", "no such manifest, folder or video file"),
        ("ef-model", "not a view classifier"),
        ("bad-out", "must end in .parquet or .csv"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_1(setup, tmp_path, capsys, case, message):
    data, model, out = str(setup["sim"]), str(setup["views"]), str(tmp_path / "v.parquet")
    if case == "no-model":
        model = str(tmp_path / "nothing")
    elif case == "no-data":
        data = str(tmp_path / "nothing.parquet")
    elif case == "ef-model":
        model = str(setup["ef"])
    else:
        out = str(tmp_path / "v.json")
    assert main(["views", "--data", data, "--model", model, "--out", out]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("echoclip views: error: ") and message in err
