"""evaluate() on a hand-built model: every task scored, the report written, bad requests refused."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

from echoclip.errors import ConfigError, DataError
from echoclip.evaluate import evaluate
from echoclip.zeroshot.prompts import load_prompt_set

from .zeroshot.toy import clip_with, ef_vector, toy_model

DIM = 25
DEVICES = ["pacemaker", "tavr", "surgical_valve", "mitraclip", "impella"]
FINDINGS = ["lv_dilation", "rv_dilation", "la_enlargement", "pericardial_effusion", "lv_hypertrophy"]
VIEWS = ["A4C", "A2C", "PLAX", "PSAX"]
# axes: 0-1 EF, 2-6 devices, 7-11 findings, 12 reduced LV function, 13-16 views, 17-23 what
# makes a study unique, 24 ordinary report text (sentences about none of the targets)
ORDINARY = DIM - 1
AXIS = {**{d: 2 + i for i, d in enumerate(DEVICES)}, **{f: 7 + i for i, f in enumerate(FINDINGS)}}
AXIS["reduced_lv_function"] = 12
AXIS.update({v: 13 + i for i, v in enumerate(VIEWS)})
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def unit(i: int) -> np.ndarray:
    v = np.zeros(DIM)
    v[i] = 1.0
    return v


def prompt_vectors() -> dict[str, np.ndarray]:
    vectors: dict[str, np.ndarray] = {}
    ef = load_prompt_set("ejection_fraction").targets["ejection_fraction"]
    for value, texts in zip(ef.values(), ef.prompts(), strict=True):
        vectors.update(dict.fromkeys(texts, ef_vector(value, DIM)))
    for set_name in ("devices", "findings"):
        targets = load_prompt_set(set_name).targets
        # the texts the model reads: the prompts inside the set's contexts, if it has any
        shared = Counter(text for target in targets.values() for text in set(target.negative_texts()))
        for name, target in targets.items():
            vectors.update(dict.fromkeys(target.positive_texts(), unit(AXIS[name])))
            for text in target.negative_texts():  # a negative of one target is its opposite
                vectors[text] = -unit(AXIS[name]) if shared[text] == 1 else unit(ORDINARY)
    for name, texts in load_prompt_set("views").targets["view"].classes.items():
        vectors.update(dict.fromkeys(texts, unit(AXIS[name])))
    return vectors


class Studies(torch.utils.data.Dataset):
    """Studies whose clips embed their truths: what a perfectly trained model would see."""

    def __init__(
        self, n: int, seed: int, prefix: str, with_view: bool = True, with_devices: bool = True
    ) -> None:
        rng = np.random.default_rng(seed)
        self.items, self.reports = [], {}
        for s in range(n):
            sid = f"{prefix}{s:03d}"
            ef = float(rng.uniform(20, 75))
            present = [name for name in DEVICES + FINDINGS if rng.random() < 0.35]
            view = VIEWS[s % 4]
            vec = ef_vector(ef, DIM) + sum((0.5 * unit(AXIS[p]) for p in present), np.zeros(DIM))
            vec += 0.5 * unit(AXIS[view]) + (0.5 * unit(AXIS["reduced_lv_function"]) if ef < 50 else 0)
            vec[17:ORDINARY] = rng.normal(0, 0.4, ORDINARY - 17)
            report = f"STUDY {sid}: LVEF {round(ef)}%."
            self.reports[report] = vec
            labels = {f"finding_{f}": float(f in present) for f in FINDINGS}
            if with_devices:
                labels.update({f"device_{d}": float(d in present) for d in DEVICES})
            for _ in range(1 + s % 2):  # one or two clips per study
                item = {
                    "video": clip_with(vec + rng.normal(0, 0.02, DIM)),
                    "study_id": sid,
                    "report": report,
                    "ef": ef,
                    "labels": labels,
                }
                if with_view:
                    item["view"] = view
                self.items.append(item)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


@pytest.fixture
def setup():
    test, val = Studies(40, seed=0, prefix="t"), Studies(30, seed=1, prefix="v")
    model, tokenizer = toy_model({**prompt_vectors(), **test.reports, **val.reports})
    return model, tokenizer, test, val


def test_evaluate_scores_every_task_and_writes_the_report(setup, tmp_path) -> None:
    model, tokenizer, test, val = setup
    metrics_csv = tmp_path / "metrics.csv"
    metrics_csv.write_text("step,loss\n1,3.0\n2,2.5\n3,2.2\n")
    out = tmp_path / "report"
    metrics = evaluate(
        model, tokenizer, test, out, calibration_data=val, metrics_csv=metrics_csv, batch_size=8
    )

    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert metrics["data"]["studies"] == 40 and metrics["data"]["videos"] == 60
    zs = metrics["zero_shot"]
    assert set(zs) == {"ejection_fraction", *DEVICES, *FINDINGS, "reduced_lv_function", "view"}
    ef = zs["ejection_fraction"]
    assert ef["method"] == "echoclip_rank" and ef["unit"] == "%" and ef["n"] == 40
    assert ef["mae"] < 1.5 and ef["r2"] > 0.98
    # beside it, always answering the calibration studies' mean EF
    test_ef = np.array([item["ef"] for item in {i["study_id"]: i for i in test.items}.values()])
    val_ef = np.mean([item["ef"] for item in {i["study_id"]: i for i in val.items}.values()])
    mean = ef["mean_predictor"]
    assert mean["value"] == pytest.approx(val_ef)
    assert mean["mae"] == pytest.approx(np.abs(test_ef - val_ef).mean())
    assert mean["mae_ratio"] == pytest.approx(ef["mae"] / mean["mae"]) and mean["mae_ratio"] < 0.5
    for name in DEVICES + FINDINGS + ["reduced_lv_function"]:
        assert zs[name]["auc"] == 1.0, name
        assert "calibrated" in zs[name]["threshold_source"]
        assert zs[name]["brier"] < zs[name]["brier_minmax"], name
    assert zs["view"]["accuracy"] == 1.0
    retrieval = metrics["retrieval"]["video_to_report"]
    assert retrieval["recall@1"] > 0.9 and retrieval["n"] == 40
    assert metrics["retrieval"]["report_to_video"]["median_rank"] == 1.0

    for name in (
        "regression_ejection_fraction",
        "roc_devices",
        "roc_findings",
        "retrieval_ranks",
        "loss_curves",
    ):
        assert (out / metrics["plots"][name]).read_bytes()[:8] == PNG_MAGIC
    summary = (out / "summary.md").read_text()
    assert "| ejection_fraction | echoclip_rank | 40 |" in summary
    assert f"{mean['mae']:.2f} % ({mean['mae_ratio']:.2f}) |" in summary
    assert "![roc_devices](roc_devices.png)" in summary and "## Report retrieval" in summary
    predictions = (out / "predictions.csv").read_text().splitlines()
    assert len(predictions) == 41 and predictions[0].startswith(
        "study_id,ejection_fraction_true,ejection_fraction"
    )
    assert not list(out.glob("*.tmp"))


def test_without_a_calibration_split_thresholds_are_chosen_on_the_data_and_say_so(setup, tmp_path) -> None:
    model, tokenizer, test, _ = setup
    metrics = evaluate(model, tokenizer, test, tmp_path, prompt_sets=["devices"], method="contrast")
    entry = metrics["zero_shot"]["pacemaker"]
    assert entry["method"] == "contrast" and "optimistic" in entry["threshold_source"]
    assert "brier" not in entry and entry["sensitivity"] == 1.0 and entry["specificity"] == 1.0
    assert set(metrics["zero_shot"]) == set(DEVICES)


def test_missing_labels_are_skipped_by_default_and_refused_when_asked_for(tmp_path) -> None:
    bare = Studies(12, seed=2, prefix="b", with_view=False, with_devices=False)
    model, tokenizer = toy_model({**prompt_vectors(), **bare.reports})
    metrics = evaluate(model, tokenizer, bare, tmp_path / "a")
    assert "view" not in metrics["zero_shot"] and "pacemaker" not in metrics["zero_shot"]
    assert metrics["skipped_targets"]["view"] == "the data set has no column 'view'"
    assert "lv_dilation" in metrics["zero_shot"]
    with pytest.raises(
        DataError, match="prompt set 'devices', target 'pacemaker' needs the label column 'device_pacemaker'"
    ):
        evaluate(model, tokenizer, bare, tmp_path / "b", prompt_sets=["ejection_fraction", "devices"])
    with pytest.raises(ConfigError, match="unknown method 'mode'"):
        evaluate(model, tokenizer, bare, tmp_path / "c", method="mode")


def _simulated_manifest(folder, n_test: int = 10, n_val: int = 6):
    """A small manifest of simulated studies (videos, reports, labels) in the agreed layout."""
    import pandas as pd

    from echoclip.data.synthetic import simulate_study
    from echoclip.data.video import save_video

    (folder / "videos").mkdir(parents=True)
    rows = []
    for i in range(n_test + n_val):
        study = simulate_study(i, size=64, frames=24)
        t = study.truth
        path = f"videos/{i:03d}.avi"
        save_video(study.video, folder / path, codec="mjpeg")
        rows.append(
            {
                "video_path": path,
                "report": study.report,
                "patient_id": f"p{i}",
                "study_id": f"s{i}",
                "view": t.view,
                "ef": t.ef,
                "split": "test" if i < n_test else "val",
                **{f"device_{d}": d in t.devices for d in DEVICES},
                **{f"finding_{f}": f in t.findings for f in FINDINGS},
            }
        )
    pd.DataFrame(rows).to_parquet(folder / "manifest.parquet")
    return folder / "manifest.parquet"


@pytest.fixture
def tiny_model_dir(tmp_path):
    from echoclip.models.factory import create_model, get_tokenizer

    return create_model("echoclip-tiny").save_pretrained(
        tmp_path / "model", tokenizer=get_tokenizer("echoclip-tiny")
    )


@pytest.mark.slow
def test_cli_evaluate_and_zeroshot_on_an_untrained_tiny_model(tmp_path, tiny_model_dir, capsys) -> None:
    """The commands run end to end and write their files (the figures of a trained model are another matter)."""
    import pandas as pd

    from echoclip.cli.main import main

    manifest = _simulated_manifest(tmp_path / "sim")
    (tmp_path / "metrics.csv").write_text("step,loss\n1,4.0\n2,3.6\n")  # as training writes beside final/

    out = tmp_path / "report"
    assert main(["evaluate", "--model", str(tiny_model_dir), "--data", str(manifest), "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith("evaluate: 10 studies, EF MAE")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["calibration_studies"] == 6
    assert set(metrics["zero_shot"]) >= {"ejection_fraction", "pacemaker", "view", "reduced_lv_function"}
    for png in (
        "regression_ejection_fraction.png",
        "roc_devices.png",
        "retrieval_ranks.png",
        "loss_curves.png",
    ):
        assert (out / png).read_bytes()[:8] == PNG_MAGIC
    assert "# echoclip evaluation" in (out / "summary.md").read_text()

    preds = tmp_path / "preds.parquet"
    argv = [
        "zeroshot",
        "--model",
        str(tiny_model_dir),
        "--data",
        str(manifest),
        "--prompts",
        "ejection_fraction,devices",
    ]
    assert main([*argv, "--method", "expectation", "--out", str(preds)]) == 0
    table = pd.read_parquet(preds)
    assert len(table) == 10 and {"study_id", "ejection_fraction", "pacemaker", "impella"} <= set(
        table.columns
    )
    assert table["ejection_fraction"].between(5, 85).all()


def test_cli_errors_are_one_line_and_come_before_any_video_is_read(tmp_path, tiny_model_dir, capsys) -> None:
    import pandas as pd

    from echoclip.cli.main import main

    manifest = tmp_path / "manifest.parquet"  # its videos do not exist: nothing may try to read them
    pd.DataFrame(
        {
            "video_path": ["v/0.avi"],
            "report": ["LVEF 40%."],
            "patient_id": ["p"],
            "study_id": ["s"],
            "ef": [40.0],
            "split": ["test"],
        }
    ).to_parquet(manifest)
    argv = [
        "zeroshot",
        "--model",
        str(tiny_model_dir),
        "--data",
        str(manifest),
        "--out",
        str(tmp_path / "p.parquet"),
    ]
    assert main([*argv, "--method", "median"]) == 1
    assert "unknown method 'median'" in capsys.readouterr().err
    assert main([*argv, "--prompts", "ejection_fraction", "--method", "contrast"]) == 1
    assert "--method contrast scores none of the targets of ejection_fraction" in capsys.readouterr().err
    bad = [
        "evaluate",
        "--model",
        str(tiny_model_dir),
        "--data",
        str(manifest),
        "--prompts",
        "ejection_fraction,views",
    ]
    assert main([*bad, "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        "echoclip evaluate: error: prompt set 'views', target 'view' needs the label column 'view'"
    )
    assert "\n" not in err
    assert not (tmp_path / "r").exists()


def test_evaluate_scores_targets_by_their_nearest_reports_with_knn(setup, tmp_path) -> None:
    import pandas as pd

    model, tokenizer, test, val = setup
    rows = {item["study_id"]: item for item in val.items}
    labels = pd.DataFrame(
        [{"study_id": sid, "ef": item["ef"], **item["labels"]} for sid, item in rows.items()]
    )
    emb = np.stack([val.reports[item["report"]] for item in rows.values()])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    metrics = evaluate(
        model,
        tokenizer,
        test,
        tmp_path / "knn",
        prompt_sets=["devices", "ejection_fraction"],
        method="knn",
        neighbours=(emb, labels),
        k=3,
        calibration_data=val,
    )
    zs = metrics["zero_shot"]
    assert {zs[d]["method"] for d in DEVICES} == {"knn"} and zs["ejection_fraction"]["method"] == "knn"
    aucs = [zs[d]["auc"] for d in DEVICES]
    assert min(aucs) > 0.6 and np.mean(aucs) > 0.75  # 3 of 30 neighbours, chance is 0.5
    truth = np.array([item["ef"] for item in {i["study_id"]: i for i in test.items}.values()])
    assert zs["ejection_fraction"]["mae"] < np.abs(truth - truth.mean()).mean()  # beats the mean


def test_ef_error_against_the_stated_ef_and_the_observer_floor() -> None:
    import pandas as pd

    from echoclip.evaluate import _against_stated

    index = pd.Index(["a", "b", "c", "d"], name="study_id")
    studies = pd.DataFrame(
        {"ef": [60.0, 40.0, 30.0, 55.0], "reported_ef": [65.0, 40.0, None, 50.0]}, index=index
    )
    truth = studies["ef"]
    pred = pd.Series([62.0, 44.0, 20.0, 55.0], index=index)
    stated = _against_stated(studies, "ef", truth, pred)["stated"]
    assert stated["n"] == 3  # the study whose report states no EF is left out
    assert stated["mae"] == pytest.approx((3 + 4 + 5) / 3)
    assert stated["observer_mae"] == pytest.approx((5 + 0 + 5) / 3)
    assert stated["mae_true_same_rows"] == pytest.approx((2 + 4 + 0) / 3)
    assert _against_stated(studies.drop(columns="reported_ef"), "ef", truth, pred) == {}
