"""``echoclip index``: build FAISS indexes over the embeddings ``echoclip embed`` wrote."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

HELP = "build a FAISS index over embeddings written by `echoclip embed`, or a section index of reports"
EXAMPLE = (
    "echoclip index --embeddings runs/emb --out runs/index --factory auto\n"
    "  echoclip index --sections sim/manifest.parquet --model runs/clip/final --out runs/sections"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--embeddings",
        help="an embedding store, or a folder of stores (videos/, reports/) as `echoclip embed` writes",
    )
    source.add_argument(
        "--sections",
        help="a manifest (parquet/CSV with study_id, report): index its reports section by section "
        "for `echoclip report` (needs --model)",
    )
    p.add_argument("--model", help="with --sections: the model directory that embeds the sections")
    p.add_argument(
        "--split", default="train", help="with --sections: the manifest split to index ('all': every row)"
    )
    p.add_argument(
        "--section-config", help="with --sections: a section config JSON (default: the shipped 'echo')"
    )
    p.add_argument(
        "--out", required=True, help="output folder; one index per store (IDX/videos, IDX/reports)"
    )
    p.add_argument(
        "--factory",
        default="auto",
        help="'auto' (Flat, HNSW32 or IVF-PQ by size) or any faiss factory string, e.g. 'HNSW32'",
    )
    p.add_argument(
        "--metric",
        choices=["ip", "l2"],
        default="ip",
        help="inner product (cosine on unit embeddings) or L2 distance",
    )
    p.add_argument(
        "--target-recall",
        type=float,
        default=0.95,
        help="recall@10 against exact search that approximate indexes are tuned to reach",
    )
    p.add_argument(
        "--sample-queries",
        type=int,
        default=1000,
        help="indexed vectors used as queries to measure recall at build time",
    )


def find_stores(path: Path) -> list[tuple[str | None, Path]]:
    """``[(None, path)]`` for a store, else ``[(name, sub-folder)]`` for each store inside it."""
    from echoclip.retrieval import RetrievalError

    if (path / "store.json").is_file():
        return [(None, path)]
    if path.is_dir():
        stores = [(d.name, d) for d in sorted(path.iterdir()) if (d / "store.json").is_file()]
        if stores:
            return stores
    raise RetrievalError(f"{path}: no embedding store (store.json) here or in its sub-folders")


def run(args: argparse.Namespace) -> int:
    if args.sections:
        return _run_sections(args)
    from echoclip.retrieval import EmbeddingStore, build_index

    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its INFO lines say which SIMD build loaded
    start = time.perf_counter()
    out = Path(args.out)
    parts = []
    for name, folder in find_stores(Path(args.embeddings)):
        store = EmbeddingStore(folder)
        index = build_index(
            store,
            factory=args.factory,
            metric=args.metric,
            target_recall=args.target_recall,
            sample_queries=args.sample_queries,
        )
        index.save(out / name if name else out)
        info = index.info
        recall = (
            "exact"
            if info.get("exact")
            else (
                "recall@10 n/a"
                if info.get("recall_at_10") is None
                else f"recall@10 {info['recall_at_10']:.3f}"
            )
        )
        parts.append(f"{len(store):,} {name or 'vectors'} ({info['factory']}, {recall})")
    print(f"index: {'; '.join(parts)} -> {out} in {time.perf_counter() - start:.1f} s")
    return 0


def _run_sections(args: argparse.Namespace) -> int:
    import echoclip
    from echoclip.errors import ConfigError
    from echoclip.models.model_dir import model_identity
    from echoclip.zeroshot.drafts import build_section_index, read_section_index_info

    if not args.model:
        raise ConfigError("--sections needs --model (the model that embeds the section texts)")
    start = time.perf_counter()
    out = build_section_index(
        echoclip.load_model(args.model),
        echoclip.get_tokenizer(args.model),
        args.sections,
        args.out,
        config=args.section_config,
        split=None if args.split == "all" else args.split,
        model_identity=model_identity(args.model),
        model_dir=args.model,
    )
    counts = read_section_index_info(out)["sections"]
    parts = ", ".join(f"{name} {entry['rows']:,}" for name, entry in counts.items())
    print(f"index: sections ({parts}) -> {out} in {time.perf_counter() - start:.1f} s")
    return 0
