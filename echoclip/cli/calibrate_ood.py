"""``echoclip calibrate-ood``: give a trained model the reference that says when a video is
unlike its training data (``ood.safetensors`` in the model directory).

``echoclip train`` writes it at the end of a run with a validation split; this command
fits it for a model trained without one, or again on other data (see
:mod:`echoclip.models.ood`).
"""

from __future__ import annotations

import argparse
import time

from echoclip.cli.video_options import add_video_arguments, read_options

HELP = "fit a model's out-of-distribution reference on its training and held-out videos"
EXAMPLE = "echoclip calibrate-ood --model runs/clip/final --data runs/sim"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from echoclip.models.ood import DEFAULT_QUANTILE, MAX_CALIBRATION, MAX_REFERENCE

    p.add_argument("--model", required=True, help="model directory; its ood.safetensors is (re)written")
    p.add_argument(
        "--data",
        required=True,
        help="the training data: manifest (parquet/CSV), a folder holding manifest.parquet, or a public data set",
    )
    p.add_argument("--train-split", default="train", help="the videos the model was trained on")
    p.add_argument(
        "--val-split", default="val", help="held-out videos of the same kind, to place the threshold"
    )
    p.add_argument(
        "--quantile",
        type=float,
        default=DEFAULT_QUANTILE,
        help="share of held-out videos allowed above the threshold (flagged by chance)",
    )
    p.add_argument("--max-reference", type=int, default=MAX_REFERENCE, help="training videos read, at most")
    p.add_argument(
        "--max-calibration", type=int, default=MAX_CALIBRATION, help="held-out videos used, at most"
    )
    p.add_argument("--seed", type=int, default=0, help="draws the videos kept when there are more")
    p.add_argument("--batch-size", type=int, default=16, help="videos per forward pass")
    p.add_argument("--workers", type=int, default=0, help="data loading processes")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: a GPU when present)")
    add_video_arguments(p)


def run(args: argparse.Namespace) -> int:
    import echoclip
    from echoclip.data.datasets import open_dataset
    from echoclip.data.transforms import VideoTransform
    from echoclip.errors import ConfigError
    from echoclip.models.embed import default_device
    from echoclip.models.ood import fit_ood, save_ood

    if args.max_reference < 2 or args.max_calibration < 1:
        raise ConfigError("--max-reference must be at least 2 and --max-calibration at least 1")
    start = time.perf_counter()
    model = echoclip.load_model(args.model)
    transform = VideoTransform(model.preprocess_config)
    options = read_options(args)
    train = open_dataset(args.data, args.train_split, transform, read_options=options)
    val = open_dataset(args.data, args.val_split, transform, read_options=options)
    reference = fit_ood(
        model,
        train,
        val,
        quantile=args.quantile,
        max_reference=args.max_reference,
        max_calibration=args.max_calibration,
        seed=args.seed,
        batch_size=args.batch_size,
        num_workers=args.workers,
        device=args.device or default_device(),
        progress=True,
    )
    path = save_ood(reference, args.model)
    c = reference.calibration
    print(
        f"calibrate-ood: {c['train_videos']:,} training videos, {c['dim']} layer statistics; threshold "
        f"{reference.threshold:.4f} ({c['held_out_above']} of {c['held_out_videos']:,} held-out videos above it, "
        f"quantile {c['quantile']}) -> {path} in {time.perf_counter() - start:.1f} s"
    )
    return 0
