"""The demo's recipe on the simulator's ``clean`` and ``real`` presets, side by side.

For one seed, simulates the demo's studies under each realism preset and runs the
demo's recipe on each, as ``make demo`` does (each arm in a process of its own on one
thread; ``--lean`` leaves out the ablation and the probes), evaluates each model on its
own preset's held-out studies,
and the clean model on the real preset's too (what a user moving from the demo to
messier data sees, and whether the model says so).

Prints one JSON line per seed: per arm the EF MAE against the true EF and against the
EF the reports state, the observer-noise floor (stated against true), the mean
predictor's MAE, Pearson r, every device and finding AUC, video->report recall@10 and
the share of test videos flagged out of distribution; with the date and the machine.

    python benchmarks/bench_presets.py --seed 0 [--recipe demo-small] [--lean] [--keep runs/bench_presets]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from datetime import date
from pathlib import Path
from typing import Any

from machine import describe_machine


def _r(value: Any, digits: int = 3) -> Any:
    value = float(value)
    return None if value != value else round(value, digits)  # NaN: not computed


def _figures(folder: Path) -> dict[str, Any]:
    """The headline figures of one evaluation's folder (``metrics.json``, ``predictions.csv``)."""
    import pandas as pd

    from echoclip.robustness import headline_metrics

    metrics = json.loads((folder / "metrics.json").read_text())
    flat = headline_metrics(metrics)
    truth = pd.read_csv(folder / "predictions.csv")["ejection_fraction_true"].dropna()
    ef = metrics["zero_shot"].get("ejection_fraction", {})
    stated = ef.get("stated", {})
    out: dict[str, Any] = {
        "ef.mae": _r(ef.get("mae", float("nan"))),
        "ef.mae_stated": _r(stated.get("mae", float("nan"))),
        "ef.observer_mae": _r(stated.get("observer_mae", float("nan"))),
        "ef.stated_n": stated.get("n"),
        "ef.pearson": _r(ef.get("pearson_r", float("nan"))),
        "ef.mean_predictor_mae": _r((truth - truth.mean()).abs().mean()),
        "recall@10": _r(flat.get("retrieval.video_to_report.recall@10", float("nan"))),
    }
    for name, entry in metrics["zero_shot"].items():
        if entry.get("kind") == "binary" and entry.get("prompt_set") in ("devices", "findings"):
            out[f"{entry['prompt_set']}.{name}.auc"] = _r(entry.get("auc", float("nan")))
    ood = metrics.get("out_of_distribution") or {}
    out["ood.share"] = _r(ood.get("share", float("nan")))
    return out


def _arm(out: Path, recipe: Any, seed: int) -> dict[str, Any]:
    """One demo-recipe run on one thread; its figures on its own test studies."""
    import torch

    from echoclip.demo import run_demo

    torch.set_num_threads(1)
    run_demo(out, recipe, seed=seed, progress=False)
    return _figures(out / "eval")


def _cross(model_run: Path, data_run: Path, out: Path) -> dict[str, Any]:
    """``model_run``'s model evaluated on ``data_run``'s held-out studies."""
    from echoclip.evaluate import evaluate
    from echoclip.models.factory import get_tokenizer, load_model

    path = model_run / "clip" / "final"
    evaluate(
        load_model(path),
        get_tokenizer(path),
        data_run / "data" / "manifest.parquet",
        out,
        split="test",
        calibration_split="val",
    )
    return _figures(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--recipe", default="demo-small")
    parser.add_argument("--lean", action="store_true", help="without the ablation and the probes")
    parser.add_argument("--keep", default="runs/bench_presets", help="work folder (kept: runs resume)")
    args = parser.parse_args()

    from echoclip.demo import DemoRecipe
    from echoclip.processes import BackgroundCall

    base = DemoRecipe.load(args.recipe)
    if args.lean:
        base = dataclasses.replace(base, ablation=False, probe_steps=0)
    work = Path(args.keep)
    runs = {name: work / f"seed{args.seed}-{name}" for name in ("clean", "real")}
    t0 = time.perf_counter()
    beside = BackgroundCall(_arm, runs["real"], dataclasses.replace(base, realism="real"), args.seed)
    try:
        clean = _arm(runs["clean"], dataclasses.replace(base, realism="clean"), args.seed)
        real = beside.result()
    finally:
        beside.stop()
    cross = _cross(runs["clean"], runs["real"], runs["clean"] / "eval_on_real")
    print(
        json.dumps(
            {
                "benchmark": "presets",
                "date": date.today().isoformat(),
                "machine": describe_machine(),
                "recipe": args.recipe,
                "seed": args.seed,
                "clean": clean,
                "real": real,
                "clean_model_on_real": cross,
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
