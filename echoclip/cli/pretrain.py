"""``echoclip pretrain``: self-supervised pretraining of a video tower on unlabelled clips."""

from __future__ import annotations

import argparse
import json
from typing import Any

from echoclip.cli.loop_options import add_loop_arguments, loop_config_from_args
from echoclip.cli.video_options import read_options

HELP = "pretrain a video tower without labels (masked modelling, periodic and invariance losses)"
EXAMPLE = (
    "echoclip pretrain --data runs/sim --model echoclip-tiny --out runs/ssl --steps 300 "
    "--batch-size 32 --periodic-weight 0.5   (then: echoclip train --init runs/ssl/final ...)"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        required=True,
        help="manifest (parquet/CSV), a folder holding manifest.parquet, or an EchoNet-Dynamic folder",
    )
    p.add_argument("--model", default="echoclip-tiny", help="model config name, JSON file or model directory")
    p.add_argument(
        "--out", default="runs/ssl", help="run folder (checkpoints, metrics, images, final/ encoder)"
    )
    p.add_argument("--mask", choices=["tube", "random", "consistent"], help="token mask of masked modelling")
    p.add_argument("--ratio", type=float, help="fraction of tokens hidden (default 0.9)")
    p.add_argument(
        "--periodic-weight", type=float, help="weight of the periodic contrastive term (default 0.1)"
    )
    p.add_argument(
        "--invariance-weight",
        type=float,
        help="weight of the clip augmentation-invariance term (default 1.0; 0 for ViT towers)",
    )
    p.add_argument(
        "--no-norm-pix-loss",
        dest="norm_pix_loss",
        action="store_false",
        default=None,
        help="reconstruct raw pixels instead of per-patch normalised ones",
    )
    p.add_argument("--decoder-width", type=int)
    p.add_argument("--decoder-layers", type=int)
    p.add_argument("--image-every", type=int, help="write a reconstruction PNG every N steps (0: never)")
    add_loop_arguments(p)
    p.add_argument(
        "--probe",
        metavar="TARGET",
        nargs="?",
        const="ef",
        help="at the end, probe TARGET (default ef) on the pretrained and a random encoder",
    )
    p.add_argument("--probe-steps", type=int, default=300, help="training steps of the attentive probe")


_PRETRAIN_FLAGS = (
    "mask",
    "ratio",
    "periodic_weight",
    "invariance_weight",
    "norm_pix_loss",
    "decoder_width",
    "decoder_layers",
    "image_every",
)


def configs_from_args(args: argparse.Namespace) -> tuple[Any, Any, dict[str, Any]]:
    """The ``LoopConfig`` and ``PretrainConfig`` of the shipped ``pretrain`` recipe, the user's
    recipe and the flags; and the recipe."""
    from dataclasses import replace

    from echoclip.errors import ConfigError
    from echoclip.pretrain.objectives import PretrainConfig

    train, recipe = loop_config_from_args(args, defaults="pretrain")
    try:
        options = PretrainConfig(**recipe.get("pretrain", {}))
    except TypeError as e:
        raise ConfigError(f"{args.config}: bad [pretrain] table ({e})") from None
    options = replace(
        options, **{k: getattr(args, k) for k in _PRETRAIN_FLAGS if getattr(args, k) is not None}
    )
    return train, options, recipe


def run(args: argparse.Namespace) -> int:
    from echoclip.loop.distributed import init_distributed
    from echoclip.pretrain.pretrain import pretrain

    config, options, recipe = configs_from_args(args)
    result = pretrain(
        args.data,
        config,
        model=args.model,
        options=options,
        resume=args.resume,
        model_overrides=recipe.get("model"),
        augment=not args.no_augment,
        preload=args.preload,
        read_options=read_options(args),
    )
    if not init_distributed().is_main:
        return 0
    last = next((r for r in reversed(result.history) if r.get("loss") not in (None, "")), {})
    losses = [float(r["loss"]) for r in result.history if r.get("loss") not in (None, "")]
    summary: dict[str, Any] = {
        "steps": result.step,
        "first_loss": round(losses[0], 4) if losses else None,
        "final_loss": round(float(last.get("loss", float("nan"))), 4),
        **{f"val/{k}": round(v, 4) for k, v in result.validation.items()},
        "seconds": round(result.seconds, 1),
        "encoder": str(result.final_dir),
    }
    if args.probe:
        summary["probe"] = _probe(args, result.final_dir, config.seed)
    print("pretrain done: " + json.dumps(summary))
    return 0


def _probe(args: argparse.Namespace, encoder_dir: Any, seed: int) -> dict[str, Any]:
    """Probe figures of the pretrained and a random encoder on every clip of the data (held-out patients)."""
    from echoclip.data.transforms import PreprocessConfig, VideoTransform
    from echoclip.models.encoders import read_encoder
    from echoclip.pretrain.pretrain import open_clips
    from echoclip.pretrain.probe import probe_against_random

    _, info = read_encoder(encoder_dir)
    preprocess = PreprocessConfig.from_dict(info["preprocess"])
    dataset = open_clips(
        args.data, None, VideoTransform(preprocess), seed=seed, read_options=read_options(args)
    )
    figures = probe_against_random(
        encoder_dir, dataset, target=args.probe, seed=seed, attentive_steps=args.probe_steps
    )
    return {side: {k: round(v, 4) for k, v in f.items()} for side, f in figures.items()}
