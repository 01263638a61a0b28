"""``echoclip embed``: embed the videos and reports of a data set into two embedding stores.

Writes ``OUT/videos`` (one row per readable video) and ``OUT/reports`` (one row per
distinct report of a study), each an :class:`echoclip.retrieval.EmbeddingStore` that
records the model's name and a hash of its files, so an index built from them can
refuse a different model later.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path
from typing import Any

HELP = "embed the videos and reports of a data set with a trained model"
EXAMPLE = "echoclip embed --model runs/clip/final --data runs/sim --split test --out runs/emb"

RESULT_COLUMNS = ("query", "rank", "score", "row")  # names a search result uses itself


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


def video_metadata(dataset: Any) -> Any:
    """One row per video: its resolved path and every manifest column (reports included)."""
    table = dataset.table.copy()
    table["video_path"] = [str(dataset.video_path(i).resolve()) for i in range(len(table))]
    return table.rename(columns={c: f"manifest_{c}" for c in table.columns if c in RESULT_COLUMNS})


def report_metadata(table: Any) -> Any:
    """One row per distinct (study, report); empty reports (EchoNet-Dynamic has none) dropped."""
    keep = [c for c in ("study_id", "patient_id", "report", "split") if c in table.columns]
    reports = table.loc[table["report"].astype(str).str.strip() != "", keep]
    return reports.drop_duplicates(subset=["study_id", "report"]).reset_index(drop=True)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    import echoclip
    from echoclip.data.datasets import open_dataset, write_skip_report
    from echoclip.data.transforms import VideoTransform
    from echoclip.models.embed import embed_reports, embed_videos
    from echoclip.models.model_dir import model_identity
    from echoclip.retrieval import EmbeddingStore, RetrievalError

    start = time.perf_counter()
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        if not args.overwrite:
            raise RetrievalError(f"{out}: already exists; pass --overwrite to replace it")
        if not any((out / n / "store.json").is_file() for n in ("videos", "reports")):
            raise RetrievalError(f"{out}: exists and holds no embeddings; refusing to replace it")

    model = echoclip.load_model(args.model)
    tokenizer = echoclip.get_tokenizer(args.model)
    identity = model_identity(args.model)
    dataset = open_dataset(args.data, args.split, VideoTransform(model.preprocess_config))

    videos = embed_videos(
        model, dataset, batch_size=args.batch_size, device=args.device, num_workers=args.workers
    )
    readable = np.isfinite(videos).all(axis=1)
    video_meta = video_metadata(dataset)[readable].reset_index(drop=True)
    report_meta = report_metadata(dataset.table)
    reports = embed_reports(model, tokenizer, report_meta["report"].tolist(), device=args.device)

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    dim = videos.shape[1]
    EmbeddingStore.create(tmp / "videos", dim, args.dtype, model=identity).append(
        videos[readable], video_meta
    )
    if len(report_meta):
        EmbeddingStore.create(tmp / "reports", dim, args.dtype, model=identity).append(reports, report_meta)
    write_skip_report(dataset.skipped, tmp / "skipped.csv")
    if out.exists():
        old = out.with_name(out.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old)
    else:
        os.replace(tmp, out)

    skipped = int((~readable).sum())
    note = f" ({skipped} unreadable, listed in {out / 'skipped.csv'})" if skipped else ""
    print(
        f"embed: {int(readable.sum()):,} videos{note} and {len(report_meta):,} reports -> {out} "
        f"(dim {dim}, model {identity['name']} {identity['hash'][:12]}) in {time.perf_counter() - start:.1f} s"
    )
    return 0
