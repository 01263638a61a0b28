"""``echoclip search``: the reports that describe a video or a study, the videos (or studies)
that match a text, or the other studies of a video's patient, from an index built by
``echoclip index``.

A study query (``--study``: a folder of its files, or several files) is embedded as
``echoclip embed --level study`` embeds studies: each readable file embedded, then pooled by
the model's study pooling (views unknown). It searches a report index (study -> report) or a
study index (``--target studies``: study -> study); ``--text`` against a study index finds
studies (report -> study)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from echoclip.cli.video_options import add_video_arguments, max_videos, read_options

HELP = "search an index with a video file or a text query"
EXAMPLE = (
    'echoclip search --index runs/index --model runs/clip/final --text "SEVERE MITRAL REGURGITATION." --k 5'
)

REPORT_WIDTH = 90  # characters of report text in the printed table (--json keeps it whole)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--index", required=True, help="an index folder, or one holding videos/ and reports/ indexes"
    )
    p.add_argument("--model", required=True, help="the model directory that made the indexed embeddings")
    query = p.add_mutually_exclusive_group(required=True)
    query.add_argument("--video", help="a video file (DICOM, AVI, MP4) to search with")
    query.add_argument("--text", help="a report sentence to search with")
    query.add_argument(
        "--study",
        nargs="+",
        metavar="PATH",
        help="a study to search with: a folder of its video files, or several files; unreadable "
        "files are skipped and counted",
    )
    p.add_argument("--k", type=int, default=5, help="results to show")
    p.add_argument(
        "--same-patient",
        action="store_true",
        help="with --video: rank the videos of other studies (patient identification)",
    )
    p.add_argument(
        "--target",
        choices=["auto", "reports", "videos", "studies"],
        default="auto",
        help="which index to search (default: reports for a video or a study; videos for a text, "
        "or studies when the index holds no videos)",
    )
    p.add_argument(
        "--max-videos",
        type=int,
        default=64,
        help="with --study: videos pooled at most; more are subsampled, seeded by the study (default: 64)",
    )
    p.add_argument("--device", help="cpu, cuda ... (default: a GPU when present)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    add_video_arguments(p)


def run(args: argparse.Namespace) -> int:
    import echoclip
    from echoclip.errors import ConfigError
    from echoclip.models.embed import default_device, embed_reports, encode_videos
    from echoclip.models.model_dir import model_identity
    from echoclip.retrieval import Index, find_index_folder

    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its INFO lines say which SIMD build loaded
    start = time.perf_counter()
    if args.same_patient and not args.video:
        raise ConfigError("--same-patient needs --video")
    if args.k < 1:
        raise ConfigError(f"--k must be at least 1, not {args.k}")
    if args.study is not None:
        max_videos(args)
    target = args.target
    if target == "auto":
        target = "videos" if (args.text is not None or args.same_patient) else "reports"
        if args.text is not None and not _has_index(Path(args.index), "videos"):
            target = "studies" if _has_index(Path(args.index), "studies") else target

    identity = model_identity(args.model)
    folder = find_index_folder(Path(args.index), target)
    index = Index.load(folder, expected_model_hash=identity["hash"])
    model = echoclip.load_model(args.model)
    device = args.device or default_device()
    if args.text is not None:
        query = embed_reports(
            model, echoclip.get_tokenizer(args.model), [args.text], device=device, progress=False
        )
    elif args.study is not None:
        query, study_info = _embed_study(model, args.study, device, max_videos(args), read_options(args))
    else:
        encoded = encode_videos(
            model,
            [args.video],
            batch_size=1,
            device=device,
            on_error="raise",
            progress=False,
            read_options=read_options(args),
        )
        query, layer_stats = encoded.features, encoded.ood_features

    own = _own_rows(index, args.video) if args.video else None
    if args.same_patient:
        results = _other_studies(index, query, args.k, own)
    else:
        results = index.search(query, min(args.k, len(index)))
    results = results.drop(columns=["query"])
    if own is not None and "patient_id" in results.columns:
        results.insert(3, "same_patient", results["patient_id"].isin(own["patient_id"]))

    ood = _ood(model, layer_stats) if args.video else None
    if args.study is not None:
        ood = study_info.pop("out_of_distribution")
    if args.json:
        query_info: dict[str, Any] = {"text": args.text} if args.text is not None else {"video": args.video}
        if args.study is not None:
            query_info = {"study": args.study, **study_info}
        if args.video or args.study is not None:
            query_info["out_of_distribution"] = ood
        payload = {
            "query": query_info,
            "index": str(folder),
            "target": target,
            "results": _records(results),
        }
        json.dump(payload, sys.stdout, indent=2, default=str)
        print()
        return 0
    print(_table(results) if len(results) else "(no results)")
    if ood is not None:
        print(_ood_line(ood))
    what = "text" if args.text is not None else "video"
    if args.study is not None:
        what = f"study ({study_info['videos']} videos"
        what += f", {study_info['unreadable']} unreadable skipped)" if study_info["unreadable"] else ")"
    print(
        f"search: top {len(results)} of {len(index):,} {target} for the {what} query "
        f"({index.info.get('factory')}) in {time.perf_counter() - start:.1f} s"
    )
    return 0


def _has_index(path: Path, target: str) -> bool:
    return (path / target / "info.json").is_file()


def study_files(paths: list[str]) -> list[Path]:
    """The files of a study given as a folder (its files, sorted, hidden ones left out) or as files."""
    from echoclip.errors import DataError

    if len(paths) == 1 and Path(paths[0]).is_dir():
        folder = Path(paths[0])
        files = sorted(
            p
            for p in folder.rglob("*")
            if p.is_file() and not p.relative_to(folder).as_posix().startswith(".")
        )
        if not files:
            raise DataError(f"{folder}: the study folder holds no files")
        return files
    for p in paths:
        if not Path(p).is_file():
            raise DataError(f"{p}: no such file (give a study folder, or several files of one study)")
    return [Path(p) for p in paths]


def _embed_study(
    model: Any, paths: list[str], device: Any, limit: int, options: dict[str, Any]
) -> tuple[Any, dict[str, Any]]:
    """A study's embedding ``[1, D]``, and what was read of it (files, videos pooled, OOD)."""
    from echoclip.errors import DataError
    from echoclip.models.embed import embed_studies
    from echoclip.zeroshot.predict import study_ood

    files = study_files(paths)
    studies = embed_studies(
        model,
        [str(f) for f in files],
        study_ids=["query"] * len(files),
        max_videos=limit,
        batch_size=8,
        device=device,
        progress=False,
        read_options=options,
    )
    if not len(studies):
        where = paths[0] if len(paths) == 1 else f"{len(files)} files given"
        raise DataError(f"{where}: none of the {len(files)} files of the study is a readable video")
    score, flag = study_ood(model, studies.video_ood_features, studies.video_study_ids)
    reference = model.ood_reference
    ood = {
        "flag": None if flag[0] is None else bool(flag[0]),
        "score": None if reference is None else float(score[0]),
        "threshold": None if reference is None else reference.threshold,
    }
    info = {
        "files": len(files),
        "videos": len(studies.rows[0]),
        "unreadable": len(studies.failed),
        "out_of_distribution": ood,
    }
    return studies.features, info


def _ood(model: Any, layer_stats: Any) -> dict[str, Any]:
    """The query video's OOD score and flag (``None`` both: the model has no reference)."""
    from echoclip.models.ood import score_ood

    scores, flags = score_ood(model, layer_stats, rows=1)
    reference = model.ood_reference
    return {
        "flag": None if flags is None else bool(flags[0]),
        "score": None if reference is None else float(scores[0]),
        "threshold": None if reference is None else reference.threshold,
    }


def _ood_line(ood: dict[str, Any]) -> str:
    from echoclip.models.ood import OOD_WARNING

    if ood["flag"] is None:
        why = (
            "the model has no OOD reference" if ood["score"] is None else "its OOD reference has no threshold"
        )
        return f"out of distribution: unknown ({why}; fit one with echoclip calibrate-ood)"
    figures = f"score {ood['score']:.3f}, threshold {ood['threshold']:.3f}"
    if ood["flag"]:
        return f"out of distribution: YES ({figures}). {OOD_WARNING}"
    return f"out of distribution: no ({figures})"


def _own_rows(index: Any, video: str) -> Any:
    """The index rows of the query file itself, when it was indexed (else None): the same
    resolved path (relative paths start from the root the index records), or else the same
    file name when only one indexed video has it."""
    meta = index.metadata
    if meta is None or "video_path" not in meta.columns:
        return None
    root = Path(index.info.get("video_root") or ".")
    paths = meta["video_path"].astype(str).map(lambda p: str((root / p).resolve()))
    rows = meta[paths == str(Path(video).resolve())]
    if not len(rows):
        rows = meta[paths.map(lambda p: Path(p).name) == Path(video).name]
        if len(rows) != 1:
            return None
    return rows


def _other_studies(index: Any, query: Any, k: int, own: Any) -> Any:
    """Top ``k`` videos outside the query's own study (or outside the query file itself
    when its study is unknown), fetching deeper until ``k`` remain or the index is exhausted."""
    if own is None or "study_id" not in own.columns:
        excluded = set() if own is None else set(own.index)
        keep = lambda hits: ~hits["row"].isin(excluded)  # noqa: E731
    else:
        studies = set(own["study_id"])
        keep = lambda hits: ~hits["study_id"].isin(studies)  # noqa: E731
    depth = min(len(index), 4 * k + 16)
    while True:
        hits = index.search(query, depth)
        kept = hits[keep(hits)]
        if len(kept) >= k or depth == len(index):
            kept = kept.head(k).copy()
            kept["rank"] = range(1, len(kept) + 1)
            return kept.reset_index(drop=True)
        depth = min(len(index), depth * 4)


def _table(results: Any) -> str:
    shown = [
        c
        for c in (
            "rank",
            "score",
            "same_patient",
            "study_id",
            "patient_id",
            "view",
            "n_videos",
            "video_path",
            "report",
        )
        if c in results.columns
    ]
    table = results[shown or list(results.columns)].copy()
    if "video_path" in table.columns:
        table["video_path"] = table["video_path"].map(lambda p: Path(str(p)).name)
    if "report" in table.columns:
        table["report"] = table["report"].map(_shorten)
    table["score"] = table["score"].map(lambda s: f"{s:.4f}")
    return table.to_string(index=False)


def _shorten(text: Any) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= REPORT_WIDTH else text[: REPORT_WIDTH - 1] + "…"


def _records(results: Any) -> list[dict[str, Any]]:
    return json.loads(results.to_json(orient="records"))
