"""Robustness of the zero-shot figures to acquisition perturbations, each at its moderate strength.

Trains a small CLIP model (``echoclip-tiny``, the ``tiny-cpu`` recipe shortened to
``--steps``) on ``--studies`` simulated studies, or takes the model and data of an earlier
run (``--model runs/demo/clip/final --data runs/demo/data``). Then evaluates it on the
test split clean and under every registered perturbation at ``--strength`` (0.5:
moderate; see ``echoclip.data.perturb``) with ``echoclip.robustness.evaluate_robustness``.

With ``--recipe demo-small --augment 0.2`` it trains the demo's recipe twice on the same
simulated studies instead, side by side (each arm in a process of its own on one thread,
without the ablation and probes): with the acquisition augmentation at that rate
(``[train.augment] acquisition_p``) and without it, and evaluates both.

Prints one JSON line: the clean figures (EF MAE and Pearson r, mean device AUC,
video->report recall@5) and per perturbation the EF MAE as a ratio to clean and the
change of the mean device AUC (perturbed minus clean), with the date and the machine
(per arm with ``--recipe``).

    python benchmarks/bench_robustness.py [--studies 300 --steps 300] [--model DIR --data DIR]
    python benchmarks/bench_robustness.py --recipe demo-small --augment 0.2 --keep runs/bench_robustness
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

from machine import describe_machine


def _r(value: Any, digits: int = 4) -> Any:
    value = float(value)
    return None if value != value else round(value, digits)  # NaN: not computed


def _train(work: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    """Simulate studies and train a tiny CLIP model on them; the model folder and the data."""
    from echoclip.data.synthetic import simulate_dataset, simulate_reports
    from echoclip.loop.config import load_recipe
    from echoclip.tokenizer import EchoTokenizer
    from echoclip.train.clip import train_clip
    from echoclip.train.config import TrainConfig

    data = simulate_dataset(
        work / "data",
        n=args.studies,
        seed=args.seed,
        size=args.size,
        frames=args.frames,
        fps=args.fps,
        progress=False,
    )
    tokenizer = EchoTokenizer.train(simulate_reports(args.studies, seed=args.seed))
    config = TrainConfig.from_dict(load_recipe("tiny-cpu")["train"]).updated(
        out=str(work / "clip"),
        steps=args.steps,
        batch_size=args.batch_size,
        warmup_steps=max(1, min(50, args.steps // 5)),
        checkpoint_every=10**9,
        log_every=max(1, args.steps // 10),
        tensorboard=False,
        progress=False,
        seed=args.seed,
    )
    result = train_clip(data, config, model="echoclip-tiny", tokenizer=tokenizer, preload=True)
    return result.final_dir, data


def _robustness(model_dir: Path, data: Path, out: Path, args: argparse.Namespace) -> tuple[dict, dict, int]:
    """Clean figures, per-perturbation changes and the number of test studies of one model."""
    from echoclip.data.perturb import PERTURBATIONS, Perturbation
    from echoclip.models.factory import get_tokenizer, load_model
    from echoclip.robustness import CLEAN, evaluate_robustness

    perturbations = [Perturbation(name, args.strength) for name in PERTURBATIONS.names()]
    table = evaluate_robustness(
        load_model(model_dir, device="cpu"),
        get_tokenizer(model_dir),
        data,
        out,
        perturbations,
        seed=args.seed,
        split=args.split,
        device="cpu",
    )
    clean = table.loc[CLEAN]

    def column(row: Any, name: str) -> float:
        return row[name] if name in row else float("nan")

    figures = {
        "ef.mae": _r(column(clean, "ejection_fraction.mae"), 3),
        "ef.pearson": _r(column(clean, "ejection_fraction.pearson_r")),
        "devices.mean_auc": _r(column(clean, "devices.mean_auc")),
        "recall@5": _r(column(clean, "retrieval.video_to_report.recall@5")),
    }
    per_perturbation = {}
    for p in perturbations:
        row = table.loc[p.label]
        per_perturbation[p.name] = {
            "ef.mae_ratio": _r(column(row, "ejection_fraction.mae") / column(clean, "ejection_fraction.mae")),
            "devices.mean_auc_change": _r(
                column(row, "devices.mean_auc") - column(clean, "devices.mean_auc")
            ),
            "ef.pearson": _r(column(row, "ejection_fraction.pearson_r")),
            "recall@5": _r(column(row, "retrieval.video_to_report.recall@5")),
        }
    studies = int(json.loads((out / CLEAN / "metrics.json").read_text())["data"]["studies"])
    return figures, per_perturbation, studies


def _arm(out: Path, recipe: Any, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """One demo-recipe run on one thread, then its robustness (in a process of its own, or in this one)."""
    import torch

    from echoclip.demo import run_demo

    torch.set_num_threads(1)
    run_demo(out, recipe, seed=seed, progress=False)
    clean, per_perturbation, studies = _robustness(
        out / "clip" / "final", out / "data", out / "robustness", args
    )
    return {"clean": clean, "perturbations": per_perturbation, "test_studies": studies}


def _compare_recipe(args: argparse.Namespace) -> None:
    """The recipe trained with and without the acquisition augmentation, side by side."""
    import dataclasses

    from echoclip.demo import DemoRecipe, DemoRun, stage_simulate
    from echoclip.processes import BackgroundCall

    base = dataclasses.replace(DemoRecipe.load(args.recipe), ablation=False, probe_steps=0)
    off = dataclasses.replace(base.train.augment, acquisition_p=0.0)
    on = dataclasses.replace(base.train.augment, acquisition_p=args.augment)
    arms = {
        "augmented": dataclasses.replace(base, train=dataclasses.replace(base.train, augment=on)),
        "plain": dataclasses.replace(base, train=dataclasses.replace(base.train, augment=off)),
    }
    work = Path(args.keep or "runs/bench_robustness")
    t0 = time.perf_counter()
    runs = {name: work / f"seed{args.seed}-{name}" for name in arms}
    if not (runs["augmented"] / "data" / "manifest.parquet").is_file():
        stage_simulate(DemoRun(runs["augmented"], arms["augmented"], args.seed, progress=False))
    if not (runs["plain"] / "data").is_dir():
        shutil.copytree(runs["augmented"] / "data", runs["plain"] / "data")
    beside = BackgroundCall(_arm, runs["plain"], arms["plain"], args.seed, args)
    try:
        augmented = _arm(runs["augmented"], arms["augmented"], args.seed, args)
        plain = beside.result()
    finally:
        beside.stop()
    print(
        json.dumps(
            {
                "benchmark": "robustness",
                "date": date.today().isoformat(),
                "machine": describe_machine(),
                "recipe": args.recipe,
                "acquisition_p": args.augment,
                "strength": args.strength,
                "seed": args.seed,
                "augmented": augmented,
                "plain": plain,
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a model directory to evaluate (default: train one)")
    parser.add_argument("--data", help="its labelled data (a manifest or data set folder); with --model")
    parser.add_argument("--studies", type=int, default=300, help="simulated studies to train and test on")
    parser.add_argument("--steps", type=int, default=300, help="training steps of the tiny model")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--strength", type=float, default=0.5, help="every perturbation's strength")
    parser.add_argument("--split", default="test")
    parser.add_argument("--seed", type=int, default=0, help="data, training and perturbation seed")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--keep", help="work folder to keep (default: a temporary one)")
    parser.add_argument("--recipe", help="train this demo recipe with and without --augment, side by side")
    parser.add_argument("--augment", type=float, default=0.2, help="acquisition_p of the augmented arm")
    args = parser.parse_args()
    if (args.model is None) != (args.data is None):
        parser.error("--model and --data go together")
    if args.recipe:
        _compare_recipe(args)
        return

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-robustness-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.model is None:
        model_dir, data = _train(work, args)
        source = f"echoclip-tiny, {args.studies} simulated studies, {args.steps} steps"
    else:
        model_dir, data = Path(args.model), Path(args.data)
        source = str(model_dir)
    train_s = time.perf_counter() - t0
    clean, per_perturbation, test_studies = _robustness(model_dir, data, work / "robustness", args)
    print(
        json.dumps(
            {
                "benchmark": "robustness",
                "date": date.today().isoformat(),
                "machine": describe_machine(),
                "model": source,
                "split": args.split,
                "test_studies": test_studies,
                "strength": args.strength,
                "seed": args.seed,
                "clean": clean,
                "perturbations": per_perturbation,
                "train_s": round(train_s, 1),
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
    )
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
