"""``echoclip views``: write each video's predicted view and its probability into a manifest."""

from __future__ import annotations

import argparse
from pathlib import Path

from echoclip.cli.video_options import add_video_arguments, read_options

HELP = "predict each video's view (fine-tuned view classifier or zero-shot prompts) into a manifest"
EXAMPLE = "echoclip views --data runs/sim --model runs/views/final --out runs/sim-views.parquet"

TABLE_SUFFIXES = (".parquet", ".csv")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        required=True,
        nargs="+",
        help="manifest (parquet/CSV), a folder holding manifest.parquet, a data set folder, "
        "or video files (DICOM, AVI, MP4)",
    )
    p.add_argument(
        "--model",
        required=True,
        help="a view classifier (echoclip finetune --task view) or a CLIP model directory (zero-shot)",
    )
    p.add_argument(
        "--out",
        required=True,
        help="the manifest with view_pred and view_prob added, .parquet or .csv (one row per video)",
    )
    p.add_argument(
        "--split", default="all", help="split of a manifest or folder; 'all' (default) for every row"
    )
    p.add_argument(
        "--prompts", default="views", help="zero-shot: prompt set with a categorical target (default: views)"
    )
    p.add_argument("--method", help="zero-shot: scoring method of the view target (default: argmax)")
    p.add_argument("--batch-size", type=int, default=16, help="videos per forward pass")
    p.add_argument("--workers", type=int, default=0, help="data loading processes")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: a GPU when present)")
    add_video_arguments(p)


def run(args: argparse.Namespace) -> int:
    import torch

    from echoclip import atomic
    from echoclip.errors import ConfigError, DataError
    from echoclip.views import load_view_model, predict_views, view_accuracy

    out = Path(args.out)
    if out.suffix.lower() not in TABLE_SUFFIXES:
        raise ConfigError(f"{out}: the output manifest must end in .parquet or .csv")
    missing = [p for p in args.data if not Path(p).exists()]
    if missing:
        raise DataError(f"{missing[0]}: no such manifest, folder or video file")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer = load_view_model(args.model, device=device)
    data = args.data[0] if len(args.data) == 1 else list(args.data)
    table = predict_views(
        model,
        data,
        tokenizer=tokenizer,
        prompts=args.prompts,
        method=args.method,
        split=None if args.split.lower() == "all" else args.split,
        batch_size=args.batch_size,
        num_workers=args.workers,
        read_options=read_options(args),
    )
    with atomic.writing(out) as tmp:
        if out.suffix.lower() == ".parquet":
            table.to_parquet(tmp, index=False)
        else:
            table.to_csv(tmp, index=False)
    line = (
        f"views: {len(table)} videos -> {out} ({table.attrs['method']}: {'/'.join(table.attrs['classes'])})"
    )
    if table.attrs["unreadable"]:
        line += f"; {table.attrs['unreadable']} unreadable (view_pred empty)"
    scored = view_accuracy(table)
    if scored is not None:
        line += f"; accuracy {scored['accuracy']:.3f} on {scored['n']} videos with a view"
        if scored.get("outside_classes"):
            line += f" ({scored['outside_classes']} of views the model does not know, counted wrong)"
    print(line)
    return 0
