"""``echoclip train``: contrastive video-report training."""

from __future__ import annotations

import argparse
import json
from typing import Any

HELP = "train a video-report CLIP model on a manifest or a simulated data set"
EXAMPLE = (
    "echoclip train --data runs/sim --model echoclip-tiny --tokenizer runs/tok "
    "--init runs/ssl/final --out runs/clip --steps 800 --batch-size 32"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data", required=True, help="manifest (parquet/CSV) or a folder holding manifest.parquet"
    )
    p.add_argument("--model", default="echoclip-tiny", help="model config name or a model directory")
    p.add_argument("--tokenizer", help="folder with tokenizer.json (default: the model's tokenizer)")
    p.add_argument("--init", help="pretraining checkpoint to initialise the video tower from")
    p.add_argument("--out", default="runs/clip", help="output folder (checkpoints, metrics, final model)")
    p.add_argument("--config", help="TOML recipe with a [train] table; flags override it")
    p.add_argument("--epochs", type=int)
    p.add_argument("--steps", type=int, help="optimizer steps (overrides --epochs)")
    p.add_argument("--batch-size", type=int, help="clips per step and per process")
    p.add_argument("--grad-accum", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--warmup-steps", type=int)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--loss", choices=["clip", "siglip"])
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"])
    p.add_argument("--workers", type=int, dest="num_workers", help="data loading processes")
    p.add_argument("--checkpoint-every", type=int)
    p.add_argument("--keep-last", type=int)
    p.add_argument("--val-every", type=int)
    p.add_argument("--sentence-dropout", type=float)
    p.add_argument("--shuffle-sentences", action="store_true", default=None)
    p.add_argument("--grad-checkpointing", action="store_true", default=None)
    p.add_argument("--compile", action="store_true", default=None)
    p.add_argument("--seed", type=int)
    p.add_argument("--no-augment", action="store_true", help="no clip augmentation (centred clips)")
    p.add_argument("--resume", action="store_true", help="continue from the latest complete checkpoint")


_TRAIN_FLAGS = (
    "epochs",
    "steps",
    "batch_size",
    "grad_accum",
    "lr",
    "warmup_steps",
    "weight_decay",
    "loss",
    "precision",
    "num_workers",
    "checkpoint_every",
    "keep_last",
    "val_every",
    "sentence_dropout",
    "shuffle_sentences",
    "grad_checkpointing",
    "compile",
    "seed",
)


def config_from_args(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The :class:`TrainConfig` of a recipe file plus flags, and the recipe's other tables."""
    from echoclip.train.config import TrainConfig, load_recipe

    recipe: dict[str, Any] = load_recipe(args.config) if args.config else {}
    base = TrainConfig.from_dict({**recipe.get("train", {}), "out": args.out})
    overrides = {k: getattr(args, k) for k in _TRAIN_FLAGS}
    if args.steps is None and args.epochs is not None:
        overrides["steps"] = 0
    return base.updated(**overrides), recipe


def run(args: argparse.Namespace) -> int:
    from echoclip.train.clip import train_clip
    from echoclip.train.distributed import init_distributed

    config, recipe = config_from_args(args)
    result = train_clip(
        args.data,
        config,
        model=args.model,
        tokenizer=args.tokenizer,
        init=args.init,
        resume=args.resume,
        model_overrides=recipe.get("model"),
        augment=not args.no_augment,
    )
    if init_distributed().is_main:
        last = next((r for r in reversed(result.history) if r.get("loss") not in (None, "")), {})
        summary = {
            "steps": result.step,
            "final_loss": round(float(last.get("loss", float("nan"))), 4),
            **{k: round(v, 4) for k, v in result.validation.items()},
            "seconds": round(result.seconds, 1),
            "model": str(result.final_dir),
        }
        print("train done: " + json.dumps(summary))
    return 0
