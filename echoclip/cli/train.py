"""``echoclip train``: contrastive video-report training."""

from __future__ import annotations

import argparse
import json
from typing import Any

from echoclip.cli.loop_options import add_loop_arguments, loop_config_from_args
from echoclip.cli.video_options import read_options

HELP = "train a video-report CLIP model on a manifest or a simulated data set"
EXAMPLE = (
    "echoclip train --data runs/sim --model echoclip-tiny --tokenizer runs/tok "
    "--init runs/ssl/final --out runs/clip --steps 800 --batch-size 32\n"
    "  echoclip train --data runs/sim --level study --videos-per-study 4 --study-pooling attention "
    "--out runs/study --steps 800 --batch-size 16"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data", required=True, help="manifest (parquet/CSV) or a folder holding manifest.parquet"
    )
    p.add_argument("--model", default="echoclip-tiny", help="model config name or a model directory")
    p.add_argument("--tokenizer", help="folder with tokenizer.json (default: the model's tokenizer)")
    p.add_argument("--init", help="pretraining checkpoint to initialise the video tower from")
    p.add_argument(
        "--init-prefix",
        action="append",
        dest="init_prefixes",
        metavar="PREFIX",
        help="load only the --init tensors whose names start with PREFIX (repeatable), e.g. backbone.",
    )
    p.add_argument("--out", default="runs/clip", help="output folder (checkpoints, metrics, final model)")
    p.add_argument("--sentence-dropout", type=float, help="chance of dropping each report sentence (0.3)")
    p.add_argument("--shuffle-sentences", action="store_true", default=None)
    p.add_argument(
        "--sentence-loss-weight",
        type=float,
        help="weight of the term where each report sentence picks its videos (default 0: whole reports only)",
    )
    p.add_argument(
        "--max-sentences", type=int, help="sentences per step for that term (default 0: all of the batch's)"
    )
    p.add_argument(
        "--sentence-report-weight",
        type=float,
        help="weight of the term where the same sentences pick the reports that hold them (default 0: off)",
    )
    p.add_argument(
        "--value-loss-weight",
        type=float,
        help="weight of the term where each video ranks copies of its report's numeric sentences "
        "with the numbers shifted (default 0: off)",
    )
    p.add_argument("--value-sentences", type=int, help="numeric sentences per step for that term (32)")
    p.add_argument(
        "--concept",
        action="append",
        dest="concepts",
        type=_concept,
        metavar="NAME=REGEX",
        help="a concept reports name in many phrasings, as a regular expression matched without case "
        "(repeatable), e.g. tavr='\\btav[ri]\\b|transcatheter': a sentence naming it is not a negative "
        "of the videos and reports that name it otherwise, and is always among --max-sentences",
    )
    p.add_argument("--loss", choices=["clip", "siglip"])
    p.add_argument(
        "--sample-weight-column",
        help="manifest column of per-study sampling weights (studies are drawn in proportion to them)",
    )
    g = p.add_argument_group("study level")
    g.add_argument(
        "--level",
        choices=["clip", "study"],
        help="what meets a report: one video of its study (clip, default) or the study embedding of "
        "several (study; --batch-size then counts studies)",
    )
    g.add_argument(
        "--videos-per-study",
        type=int,
        metavar="K",
        help="study level: the most videos drawn per study and step (4); a study with fewer uses all",
    )
    g.add_argument(
        "--study-pooling",
        help="study level: how a study's videos are pooled (attention, mean, echoprime; default: the "
        "model's own, else attention); saved with the model",
    )
    for flag, what in (("video", "each video is left out of its study"), ("view", "each view is hidden")):
        g.add_argument(
            f"--study-{flag}-dropout",
            type=float,
            metavar="RATE",
            help=f"study level: the rate at which {what} in training (default 0), so that the "
            "pooling learns to do without it; saved with the model",
        )
    g.add_argument(
        "--view-column",
        help="study level: the manifest column of the videos' views (auto: view_pred, else view, else "
        "unknown; none: unknown)",
    )
    add_loop_arguments(p)


def _concept(text: str) -> tuple[str, str]:
    name, sep, pattern = text.partition("=")
    if not sep or not name.strip() or not pattern:
        raise argparse.ArgumentTypeError(f"expected NAME=REGEX, got {text!r}")
    return name.strip(), pattern


# ContrastiveConfig fields exposed as flags
CONTRASTIVE_FLAGS = (
    "loss",
    "sentence_dropout",
    "shuffle_sentences",
    "sentence_loss_weight",
    "max_sentences",
    "sentence_report_weight",
    "value_loss_weight",
    "value_sentences",
)


# TrainConfig fields of study-level training exposed as flags
STUDY_FLAGS = ("level", "videos_per_study", "study_pooling", "view_column")


def config_from_args(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The :class:`TrainConfig` of a recipe file plus flags, and the recipe's other tables."""
    from echoclip.train.config import TrainConfig

    config, recipe = loop_config_from_args(args, TrainConfig)
    contrastive = config.contrastive.updated(**{k: getattr(args, k) for k in CONTRASTIVE_FLAGS})
    if args.concepts:
        contrastive = contrastive.updated(
            concept_patterns={**contrastive.concept_patterns, **dict(args.concepts)}
        )
    study = {k: getattr(args, k) for k in STUDY_FLAGS}
    return (
        config.updated(contrastive=contrastive, sample_weight_column=args.sample_weight_column, **study),
        recipe,
    )


def _with_study_dropouts(overrides: Any, args: argparse.Namespace, config: Any) -> dict[str, Any] | None:
    """The recipe's model overrides plus the study dropout flags (model settings, as the
    pooling they act on); a dropout given at clip level is a :class:`ConfigError`."""
    from echoclip.errors import ConfigError
    from echoclip.train.config import DEFAULT_STUDY_POOLING

    dropouts = {
        f"study_{k}_dropout": getattr(args, f"study_{k}_dropout")
        for k in ("video", "view")
        if getattr(args, f"study_{k}_dropout") is not None
    }
    if not dropouts:
        return overrides
    if config.level != "study":
        raise ConfigError(f"{', '.join(dropouts)}: study dropouts are trained only at level 'study'")
    merged = {**(overrides or {}), **dropouts}
    # the model config needs the pooling the dropouts act on; train_clip sets the same one
    merged.setdefault("study_pooling", config.study_pooling or DEFAULT_STUDY_POOLING)
    return merged


def run(args: argparse.Namespace) -> int:
    from echoclip.loop.distributed import init_distributed
    from echoclip.models.ood import OOD_FILE
    from echoclip.train.clip import train_clip

    config, recipe = config_from_args(args)
    model_overrides = _with_study_dropouts(recipe.get("model"), args, config)
    result = train_clip(
        args.data,
        config,
        model=args.model,
        tokenizer=args.tokenizer,
        init=args.init,
        init_prefixes=args.init_prefixes,
        resume=args.resume,
        model_overrides=model_overrides,
        augment=not args.no_augment,
        preload=args.preload,
        read_options=read_options(args),
    )
    if init_distributed().is_main:
        last = next((r for r in reversed(result.history) if r.get("loss") not in (None, "")), {})
        summary = {
            "steps": result.step,
            "final_loss": round(float(last.get("loss", float("nan"))), 4),
            **{k: round(v, 4) for k, v in result.validation.items()},
            "seconds": round(result.seconds, 1),
            "model": str(result.final_dir),
            "ood_reference": (result.final_dir / OOD_FILE).is_file(),
        }
        print("train done: " + json.dumps(summary))
    return 0
