"""``echoclip evaluate``: every zero-shot task and report retrieval, as metrics, plots and a summary."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from echoclip.cli.video_options import add_level_arguments, add_video_arguments, max_videos, read_options
from echoclip.cli.zeroshot import add_neighbour_arguments

HELP = "evaluate a model: zero-shot EF, devices, findings, views and report retrieval, with plots"
EXAMPLE = (
    "echoclip evaluate --model runs/clip/final --data runs/sim --split test --out runs/eval"
    "\n  echoclip evaluate --model runs/clip/final --data runs/sim --out runs/robust --perturb shadow,speckle:0.25"
    "\n  echoclip evaluate --model runs/clip/final --data runs/sim --out runs/eval --drafts runs/sections"
    "\n  echoclip evaluate --model runs/clip/final --data runs/sim --out runs/eval-studies --level study"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model directory (from `echoclip train`)")
    p.add_argument(
        "--data",
        required=True,
        help="labelled manifest (parquet/CSV), a folder holding manifest.parquet, or an EchoNet-Dynamic folder",
    )
    p.add_argument(
        "--out", required=True, help="report folder: metrics.json, predictions.csv, PNG plots, summary.md"
    )
    p.add_argument("--split", default="test", help="split to evaluate; 'all' for every row (default: test)")
    p.add_argument(
        "--calibration-split",
        default="val",
        help="split whose studies calibrate the binary scores; 'none' to choose thresholds on the evaluated "
        "data instead (default: val, when the data has it)",
    )
    p.add_argument(
        "--prompts",
        help="comma-separated prompt sets (names or JSON files); each must find its labels in the data. "
        "Default: every shipped set, skipping targets the data has no labels for",
    )
    p.add_argument(
        "--method", help="scoring method for the targets of its kind (see `echoclip zeroshot --help`)"
    )
    add_level_arguments(p, "metrics and retrieval")
    add_video_arguments(p)
    p.add_argument(
        "--metrics-csv",
        help="training metrics for the loss-curve plot (default: metrics.csv beside or above the model)",
    )
    p.add_argument("--batch-size", type=int, default=16, help="videos per forward pass")
    p.add_argument("--workers", type=int, default=0, help="data loading processes")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: a GPU when present)")
    p.add_argument(
        "--perturb",
        metavar="NAME[:STRENGTH],...",
        help="also evaluate under acquisition perturbations (depth_attenuation, shadow, speckle, gain, "
        "blur, resolution, frame_rate; strength 0-1: 0.25 mild, 0.5 moderate (the default), 1 severe): "
        "clean into OUT/clean, each perturbation into a folder of its own, compared in OUT/robustness.csv",
    )
    p.add_argument("--perturb-seed", type=int, default=0, help="seed of the perturbations' randomness")
    add_neighbour_arguments(p)
    p.add_argument(
        "--drafts",
        metavar="SECTION_INDEX",
        help="also judge draft reports: draft one per evaluated study from this section index "
        "(`echoclip index --sections`, built on the training split), read the devices, findings and "
        "EF it states, and score them against the truth beside the nearest whole training report",
    )
    p.add_argument(
        "--draft-method",
        choices=("consensus", "nearest"),
        default="consensus",
        help="each drafted section's text: what most of the nearest reports say, or the section text "
        "nearest the video (default: consensus)",
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from echoclip.evaluate import evaluate
    from echoclip.models.factory import get_tokenizer, load_model

    perturbations = None
    if args.perturb is not None:  # a bad spec fails before the model loads
        from echoclip.data.perturb import parse_perturbations

        perturbations = parse_perturbations(args.perturb)
    limit = max_videos(args)  # a bad flag fails before the model loads
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(args.model, device=device)
    tokenizer = get_tokenizer(args.model)
    calibration_split = None if args.calibration_split.lower() == "none" else args.calibration_split
    model_hash = None
    if args.drafts is not None:
        from echoclip.models.model_dir import model_identity

        model_hash = model_identity(args.model)["hash"]
    prompt_sets = [p.strip() for p in args.prompts.split(",") if p.strip()] if args.prompts else None
    options = dict(
        prompt_sets=prompt_sets,
        method=args.method,
        split=None if args.split.lower() == "all" else args.split,
        calibration_split=calibration_split,
        metrics_csv=args.metrics_csv or _training_metrics(Path(args.model)),
        batch_size=args.batch_size,
        num_workers=args.workers,
        device=device,
        read_options=read_options(args),
        neighbours=args.neighbours,
        k=args.neighbours_k,
        drafts=args.drafts,
        draft_method=args.draft_method,
        model_hash=model_hash,
        level=args.level,
        max_videos=limit,
    )
    if perturbations is None:
        metrics = evaluate(model, tokenizer, args.data, args.out, **options)
        print(f"evaluate: {_headline(metrics)} -> {Path(args.out) / 'summary.md'}")
        return 0
    from echoclip.robustness import evaluate_robustness

    table = evaluate_robustness(
        model, tokenizer, args.data, args.out, perturbations, seed=args.perturb_seed, **options
    )
    print(f"evaluate: {_robustness_line(table)} -> {Path(args.out) / 'robustness.md'}")
    return 0


def _training_metrics(model_dir: Path) -> Path | None:
    """The ``metrics.csv`` a training run wrote next to (or one level above) its final model."""
    for folder in (model_dir, model_dir.parent):
        if (folder / "metrics.csv").is_file():
            return folder / "metrics.csv"
    return None


def _robustness_line(table: Any) -> str:
    """One line: per run, EF MAE and mean device AUC, as available."""
    parts = []
    for label, row in table.iterrows():
        figures = [
            f"{text} {row[column]:.2f}"
            for column, text in (("ejection_fraction.mae", "EF MAE"), ("devices.mean_auc", "device AUC"))
            if column in row and row[column] == row[column]  # NaN: not computed
        ]
        parts.append(f"{label} " + (", ".join(figures) or "done"))
    return "; ".join(parts)


def _headline(metrics: dict) -> str:
    """One line: EF MAE, mean device AUC, retrieval R@1, as available."""
    parts = [f"{metrics['data']['studies']} studies" + (" (study level)" if metrics.get("level") else "")]
    zs = metrics["zero_shot"]
    if zs.get("ejection_fraction", {}).get("mae") is not None:
        parts.append(f"EF MAE {zs['ejection_fraction']['mae']:.1f}%")
    aucs = [e["auc"] for e in zs.values() if e.get("prompt_set") == "devices" and e.get("auc") is not None]
    if aucs:
        parts.append(f"device AUC {sum(aucs) / len(aucs):.2f} (mean of {len(aucs)})")
    if "retrieval" in metrics:
        parts.append(f"video→report R@1 {metrics['retrieval']['video_to_report']['recall@1']:.2f}")
    draft, nearest = metrics.get("draft"), metrics.get("nearest_report")
    if draft and nearest:  # macro F1 is None where no study has nor states any device or finding
        parts.append(
            f"draft macro F1 {_or_dash(draft.get('macro_f1'))} "
            f"(nearest report {_or_dash(nearest.get('macro_f1'))})"
        )
    return ", ".join(parts)


def _or_dash(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
