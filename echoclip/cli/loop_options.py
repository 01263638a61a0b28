"""Command-line options of the shared training loop (``train``, ``pretrain``, ``finetune``)
and how they become a :class:`~echoclip.loop.config.LoopConfig` (or a subclass of it)."""

from __future__ import annotations

import argparse
from typing import Any

from echoclip.cli.video_options import add_video_arguments

# LoopConfig fields that every training command exposes as flags
LOOP_FLAGS = (
    "epochs",
    "steps",
    "batch_size",
    "grad_accum",
    "lr",
    "warmup_steps",
    "weight_decay",
    "precision",
    "num_workers",
    "checkpoint_every",
    "keep_last",
    "val_every",
    "grad_checkpointing",
    "compile",
    "strategy",
    "seed",
)


def add_loop_arguments(p: argparse.ArgumentParser) -> None:
    """Budget, optimizer, precision, checkpointing, distribution and data-loading flags."""
    g = p.add_argument_group("training loop")
    g.add_argument(
        "--config",
        help="TOML recipe (a file, or the name of a shipped one such as demo-small) with a [train] "
        "table; flags override it",
    )
    g.add_argument("--epochs", type=int)
    g.add_argument("--steps", type=int, help="optimizer steps (overrides --epochs)")
    g.add_argument(
        "--batch-size", type=int, help="clips per step and per process (studies with train --level study)"
    )
    g.add_argument("--grad-accum", type=int)
    g.add_argument("--lr", type=float)
    g.add_argument("--warmup-steps", type=int)
    g.add_argument("--weight-decay", type=float)
    g.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        help="auto (default): bf16 on a GPU or a CPU with bf16 units, else fp32 (emulated bf16 is slow)",
    )
    g.add_argument("--workers", type=int, dest="num_workers", help="data loading processes")
    g.add_argument("--checkpoint-every", type=int)
    g.add_argument("--keep-last", type=int)
    g.add_argument("--val-every", type=int, help="validate before training, every N steps and at the end")
    g.add_argument("--grad-checkpointing", action="store_true", default=None)
    g.add_argument("--compile", action="store_true", default=None)
    g.add_argument(
        "--strategy",
        choices=["ddp", "fsdp"],
        help="under torchrun: replicate the model (ddp) or shard it across processes (fsdp)",
    )
    g.add_argument("--seed", type=int)
    g.add_argument("--no-augment", action="store_true", help="centred clips without augmentation")
    g.add_argument(
        "--preload",
        action="store_true",
        help="decode every training video once (small data sets, many epochs)",
    )
    g.add_argument("--resume", action="store_true", help="continue from the latest complete checkpoint")
    add_video_arguments(p)


def loop_config_from_args(
    args: argparse.Namespace, config_class: Any = None, defaults: str | None = None
) -> tuple[Any, dict[str, Any]]:
    """The config of the shipped recipe ``defaults``, then the user's recipe (``--config``),
    then the flags of ``LOOP_FLAGS``; and the merged recipe for the command's own tables."""
    from echoclip.loop.config import LoopConfig, load_recipe, merge_recipes

    config_class = config_class or LoopConfig
    recipe: dict[str, Any] = load_recipe(defaults) if defaults else {}
    if args.config:
        recipe = merge_recipes(recipe, load_recipe(args.config))
    base = config_class.from_dict({**recipe.get("train", {}), "out": args.out})
    overrides = {k: getattr(args, k) for k in LOOP_FLAGS}
    if args.steps is None and args.epochs is not None:
        overrides["steps"] = 0
    return base.updated(**overrides), recipe
