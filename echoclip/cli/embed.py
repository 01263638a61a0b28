"""``echoclip embed``: embed the videos and reports of a data set into two embedding stores.

Writes ``OUT/videos`` (one row per readable video) and ``OUT/reports`` (one row per
distinct report of a study), each an :class:`echoclip.retrieval.EmbeddingStore` that
records the model's name and a hash of its files, so an index built from them can
refuse a different model later (see :func:`echoclip.models.embed.embed_dataset`).
"""

from __future__ import annotations

import argparse
import time

from echoclip.cli.video_options import add_video_arguments, read_options

HELP = "embed the videos and reports of a data set with a trained model"
EXAMPLE = "echoclip embed --model runs/clip/final --data runs/sim --split test --out runs/emb"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model directory (from `echoclip train`)")
    p.add_argument(
        "--data",
        required=True,
        help="manifest (parquet/CSV), a folder holding manifest.parquet, or an EchoNet-Dynamic folder",
    )
    p.add_argument("--out", required=True, help="output folder: OUT/videos and OUT/reports")
    p.add_argument("--split", help="only this split (train, val, test); default: every row")
    p.add_argument("--batch-size", type=int, default=16, help="videos per forward pass")
    p.add_argument("--workers", type=int, default=0, help="data loading processes")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: a GPU when present)")
    p.add_argument("--dtype", choices=["float16", "float32"], default="float16", help="storage precision")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it already holds embeddings")
    add_video_arguments(p)


def run(args: argparse.Namespace) -> int:
    import echoclip
    from echoclip.data.datasets import open_dataset
    from echoclip.data.transforms import VideoTransform
    from echoclip.models.embed import default_device, embed_dataset
    from echoclip.models.model_dir import model_identity

    start = time.perf_counter()
    model = echoclip.load_model(args.model)
    identity = model_identity(args.model)
    dataset = open_dataset(
        args.data, args.split, VideoTransform(model.preprocess_config), read_options=read_options(args)
    )
    done = embed_dataset(
        model,
        echoclip.get_tokenizer(args.model),
        dataset,
        args.out,
        model_identity=identity,
        dtype=args.dtype,
        batch_size=args.batch_size,
        num_workers=args.workers,
        device=args.device or default_device(),
        overwrite=args.overwrite,
    )
    note = f" ({done.skipped} unreadable, listed in {done.out / 'skipped.csv'})" if done.skipped else ""
    print(
        f"embed: {done.videos:,} videos{note} and {done.reports:,} reports -> {done.out} "
        f"(dim {done.dim}, model {identity['name']} {identity['hash'][:12]}) in {time.perf_counter() - start:.1f} s"
    )
    return 0
