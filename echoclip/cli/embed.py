"""``echoclip embed``: embed the videos and reports of a data set into two embedding stores.

Writes ``OUT/videos`` (one row per readable video) and ``OUT/reports`` (one row per
distinct report of a study), each an :class:`echoclip.retrieval.EmbeddingStore` that
records the model's name and a hash of its files, so an index built from them can
refuse a different model later (see :func:`echoclip.models.embed.embed_dataset`).
Split across ranks (torchrun, or ``--rank/--world-size``), each rank writes
``OUT/parts/rank-R`` and the merge (rank 0 under torchrun, else ``echoclip merge OUT``)
writes the same stores.

``--level study`` writes ``OUT/studies`` instead of ``OUT/videos``: one row per study, its
videos pooled by the model's study pooling (see :func:`echoclip.models.embed.embed_study_dataset`),
which ``echoclip index`` turns into a study index for ``echoclip search --study`` and ``--text``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from echoclip.cli.rank_options import add_rank_arguments
from echoclip.cli.video_options import add_level_arguments, add_video_arguments, max_videos, read_options

HELP = "embed the videos and reports of a data set with a trained model"
EXAMPLE = (
    "echoclip embed --model runs/clip/final --data runs/sim --split test --out runs/emb"
    "\n  echoclip embed --model runs/clip/final --data runs/sim --level study --out runs/study-emb"
)


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
    p.add_argument(
        "--device", help="cpu, cuda, cuda:1 ... (default: a GPU when present; its own per torchrun rank)"
    )
    p.add_argument("--dtype", choices=["float16", "float32"], default="float16", help="storage precision")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it already holds embeddings")
    add_level_arguments(p, "one row per video (OUT/videos)")
    add_video_arguments(p)
    add_rank_arguments(p)


def run(args: argparse.Namespace) -> int:
    import echoclip
    from echoclip.cli.rank_options import after_part, ranks_of
    from echoclip.data.datasets import open_dataset
    from echoclip.data.transforms import VideoTransform
    from echoclip.models.embed import embed_dataset, merge_embeddings
    from echoclip.models.model_dir import model_identity
    from echoclip.ranks import run_parts

    start = time.perf_counter()
    ranks = ranks_of(args)
    if args.level == "study":
        return _run_studies(args, start, ranks)
    model = echoclip.load_model(args.model)
    identity = model_identity(args.model)
    dataset = open_dataset(
        args.data, args.split, VideoTransform(model.preprocess_config), read_options=read_options(args)
    )

    def write():
        return embed_dataset(
            model,
            echoclip.get_tokenizer(args.model),
            dataset,
            args.out,
            model_identity=identity,
            dtype=args.dtype,
            batch_size=args.batch_size,
            num_workers=args.workers,
            device=args.device or ranks.device(),
            overwrite=args.overwrite,
            ranks=ranks,
        )

    if not ranks.split:
        done, merged = write(), None
    else:
        done, merged = run_parts(ranks, write, lambda: merge_embeddings(args.out))
    label = f"{ranks.label()}: " if ranks.split else ""
    note = f" ({done.skipped} unreadable, listed in {done.out / 'skipped.csv'})" if done.skipped else ""
    if ranks.split:
        note = f" ({done.skipped} unreadable)" if done.skipped else ""
    print(
        f"embed: {label}{done.videos:,} videos{note} and {done.reports:,} reports -> {done.out} "
        f"(dim {done.dim}, model {identity['name']} {identity['hash'][:12]}) in {time.perf_counter() - start:.1f} s"
    )
    if merged is not None:
        print(f"embed: merged {merged.videos:,} videos and {merged.reports:,} reports -> {merged.out}")
    elif ranks.split and not ranks.can_meet:
        print(after_part(ranks, args.out))
    return 0


def _run_studies(args: argparse.Namespace, start: float, ranks: Any) -> int:
    """``--level study``: OUT/studies (one pooled embedding per study) and OUT/reports, in one process."""
    import echoclip
    from echoclip.data.datasets import open_dataset
    from echoclip.data.transforms import VideoTransform
    from echoclip.errors import ConfigError
    from echoclip.models.embed import embed_study_dataset
    from echoclip.models.model_dir import model_identity

    if ranks.split:
        raise ConfigError("--level study runs in one process; drop --rank/--world-size (and torchrun)")
    limit = max_videos(args)
    model = echoclip.load_model(args.model)
    identity = model_identity(args.model)
    dataset = open_dataset(
        args.data, args.split, VideoTransform(model.preprocess_config), read_options=read_options(args)
    )
    done = embed_study_dataset(
        model,
        echoclip.get_tokenizer(args.model),
        dataset,
        args.out,
        model_identity=identity,
        dtype=args.dtype,
        max_videos=limit,
        batch_size=args.batch_size,
        num_workers=args.workers,
        device=args.device or ranks.device(),
        overwrite=args.overwrite,
    )
    studies = done.studies
    notes = []
    if done.skipped:
        notes.append(f"{done.skipped} unreadable videos, listed in {done.out / 'skipped.csv'}")
    if studies is not None and studies.skipped:
        notes.append(
            f"{len(studies.skipped)} studies with none readable, in {done.out / 'skipped_studies.csv'}"
        )
    if studies is not None and studies.subsampled:
        notes.append(f"{len(studies.subsampled)} studies subsampled to {limit} videos")
    print(
        f"embed: {done.videos:,} studies{' (' + '; '.join(notes) + ')' if notes else ''} and "
        f"{done.reports:,} reports -> {done.out} (dim {done.dim}, model {identity['name']} "
        f"{identity['hash'][:12]}) in {time.perf_counter() - start:.1f} s"
    )
    return 0
