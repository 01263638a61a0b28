"""Chamber size with and without physical scale, on the demo's recipe and data.

Per seed, the demo's recipe is trained twice on the same simulated studies: once with the
physical scale (``--method embedding``: each clip's cm per pixel is an input of the video
embedding; ``field``: every clip resampled to a fixed field of view of ``--field-cm``, so a
dilated heart covers more pixels; ``both``) and once without any (the baseline: the whole
frame resized, and since the imaging depth follows the heart, every heart fills the
frame). Both arms run side by side, each in a process of its own on one thread, without
the demo's ablation and probes. Prints one JSON line: for each seed and arm the zero-shot
AUCs of the four size findings (LV dilation, RV dilation, LA enlargement, LV
hypertrophy) and their mean, EF MAE against the mean predictor and Pearson r, the worst
device AUC and video->report recall@10, and what a linear probe fitted on the training
studies' embeddings finds of the size findings on the test studies (``probe``: whether the
embedding holds a size the prompts do not read); for the scale arm also the size findings
when the test videos' scale is unknown.

    python benchmarks/bench_scale.py [--seeds 0 1 2] [--method embedding] [--out runs/bench_scale]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from datetime import date
from pathlib import Path
from typing import Any

from machine import describe_machine

SIZE_FINDINGS = ("lv_dilation", "rv_dilation", "la_enlargement", "lv_hypertrophy")
DEVICES = ("pacemaker", "tavr", "surgical_valve", "mitraclip", "impella")


def _arm(out: Path, recipe: Any, seed: int) -> dict[str, Any]:
    """One demo run on one thread (in a process of its own, or in this one)."""
    import torch

    from echoclip.demo import run_demo

    torch.set_num_threads(1)
    return run_demo(out, recipe, seed=seed, progress=False)


def _r(value: Any) -> Any:
    return None if value is None else round(float(value), 4)


def _size_aucs(auc: dict[str, Any]) -> dict[str, Any]:
    known = [v for v in auc.values() if v is not None]  # None: the test set lacks a class
    return {
        **{f"{f}.auc": _r(v) for f, v in auc.items()},
        "size.mean_auc": _r(sum(known) / len(known)) if known else None,
    }


def _figures(metrics: dict[str, Any]) -> dict[str, Any]:
    auc = {f: metrics.get(f"zeroshot.finding.{f}.auc") for f in SIZE_FINDINGS}
    return {
        **_size_aucs(auc),
        "ef.mae_ratio": _r(metrics["zeroshot.ef.mae"] / metrics["zeroshot.ef.mae_mean_baseline"]),
        "ef.pearson": _r(metrics["zeroshot.ef.pearson"]),
        "device.min_auc": _r(min((metrics.get(f"zeroshot.device.{d}.auc") or 1.0) for d in DEVICES)),
        "recall@10": _r(metrics["retrieval.video_to_report.recall@10"]),
    }


def _unknown_scale(run: Path) -> dict[str, Any]:
    """The size findings of a scale-trained model on test videos whose scale is not given."""
    import pandas as pd

    from echoclip.evaluate import evaluate
    from echoclip.models.factory import get_tokenizer, load_model

    table = pd.read_parquet(run / "data" / "manifest.parquet")
    table.drop(columns="cm_per_px").to_parquet(run / "data" / "manifest_no_scale.parquet")
    model_dir = run / "clip" / "final"
    metrics = evaluate(
        load_model(model_dir),
        get_tokenizer(model_dir),
        run / "data" / "manifest_no_scale.parquet",
        run / "eval_no_scale",
        prompt_sets=["findings"],
        split="test",
        calibration_split=None,
    )
    return _size_aucs({f: metrics["zero_shot"].get(f, {}).get("auc") for f in SIZE_FINDINGS})


def _probe(run: Path) -> dict[str, Any]:
    """What a linear read-out of the study embeddings finds of the size findings: a logistic
    regression per finding fitted on the training studies (its strength chosen by
    cross-validation there), its AUC on the test studies. Beside the zero-shot AUC it says
    whether the embedding holds the size and the prompts fail to read it, or it is not there."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from echoclip.data.datasets import Manifest
    from echoclip.data.transforms import VideoTransform
    from echoclip.models.embed import embed_studies
    from echoclip.models.factory import load_model

    manifest = run / "data" / "manifest.parquet"
    model = load_model(run / "clip" / "final")
    table = pd.read_parquet(manifest)
    labels = (
        table.assign(study_id=table["study_id"].astype(str)).drop_duplicates("study_id").set_index("study_id")
    )
    split: dict[str, tuple[Any, Any]] = {}
    for name in ("train", "test"):
        studies = embed_studies(
            model,
            Manifest(manifest, split=name, transform=VideoTransform(model.preprocess_config)),
            progress=False,
        )
        split[name] = (studies.features, labels.loc[[str(s) for s in studies.study_ids]])
    auc = {}
    for finding in SIZE_FINDINGS:
        (x, train), (x_test, test) = split["train"], split["test"]
        y, y_test = (t[f"finding_{finding}"].astype(float).to_numpy() > 0.5 for t in (train, test))
        folds = min(5, int(y.sum()), int((~y).sum()))
        if folds < 2 or y_test.all() or not y_test.any():  # too few of a class to fit, or to score
            auc[finding] = None
            continue
        probe = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=8, cv=folds, max_iter=5000)).fit(x, y)
        auc[finding] = roc_auc_score(y_test, probe.predict_proba(x_test)[:, 1])
    return _size_aucs(auc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--method", choices=("embedding", "field", "both"), default="embedding")
    parser.add_argument("--field-cm", type=float, default=24.0)
    parser.add_argument("--recipe", default="demo-small")
    parser.add_argument("--out", default="runs/bench_scale")
    args = parser.parse_args()

    from echoclip.demo import DemoRecipe, DemoRun, stage_simulate
    from echoclip.processes import BackgroundCall

    recipe = DemoRecipe.load(args.recipe)
    base = dataclasses.replace(recipe, ablation=False, probe_steps=0, field_cm=0.0, scale_embedding=False)
    arms = {
        "scale": dataclasses.replace(
            base,
            field_cm=args.field_cm if args.method in ("field", "both") else 0.0,
            scale_embedding=args.method in ("embedding", "both"),
            scale_dropout=recipe.scale_dropout or 0.1,
        ),
        "no_scale": base,
    }
    out = Path(args.out)
    t0 = time.perf_counter()
    results: dict[str, Any] = {}
    for seed in args.seeds:
        runs = {name: out / f"seed{seed}-{name}" for name in arms}
        if not (runs["scale"] / "data" / "manifest.parquet").is_file():
            stage_simulate(DemoRun(runs["scale"], arms["scale"], seed, progress=False))
        if not (runs["no_scale"] / "data").is_dir():
            shutil.copytree(runs["scale"] / "data", runs["no_scale"] / "data")
        beside = BackgroundCall(_arm, runs["no_scale"], arms["no_scale"], seed)
        try:
            scale = _arm(runs["scale"], arms["scale"], seed)
            no_scale = beside.result()
        finally:
            beside.stop()
        results[f"seed{seed}"] = {
            "scale": {
                **_figures(scale),
                "unknown_scale": _unknown_scale(runs["scale"]),
                "probe": _probe(runs["scale"]),
            },
            "no_scale": {**_figures(no_scale), "probe": _probe(runs["no_scale"])},
        }
    gains = [_r(r["scale"]["size.mean_auc"] - r["no_scale"]["size.mean_auc"]) for r in results.values()]
    print(
        json.dumps(
            {
                "benchmark": "scale",
                "date": date.today().isoformat(),
                "machine": describe_machine(),
                "recipe": args.recipe,
                "method": args.method,
                "field_cm": args.field_cm if args.method in ("field", "both") else None,
                "scale_dropout": arms["scale"].scale_dropout,
                "seeds": results,
                "size.mean_auc_gain": gains,
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
