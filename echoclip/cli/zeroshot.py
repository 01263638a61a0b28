"""``echoclip zeroshot``: predict EF, devices, findings or views from videos with prompts only."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from echoclip.cli.video_options import add_level_arguments, add_video_arguments, max_videos, read_options

HELP = "predict targets (EF, devices, findings, views) from videos with text prompts, no labelled training"
EXAMPLE = (
    "echoclip zeroshot --model runs/clip/final --data runs/sim --split test "
    "--prompts ejection_fraction,devices --method echoclip_rank --out runs/preds.parquet"
    "\n  echoclip zeroshot --model runs/clip/final --data runs/sim --level study --out runs/studies.csv"
)

TABLE_SUFFIXES = (".parquet", ".csv")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model directory (from `echoclip train`)")
    p.add_argument(
        "--data",
        required=True,
        nargs="+",
        help="manifest (parquet/CSV), a folder holding manifest.parquet, an EchoNet-Dynamic folder, "
        "or video files (DICOM, AVI, MP4)",
    )
    p.add_argument(
        "--prompts",
        default="ejection_fraction",
        help="comma-separated prompt sets: shipped names (ejection_fraction, devices, findings, views) "
        "or JSON files (default: ejection_fraction)",
    )
    p.add_argument(
        "--method",
        help="scoring method for the targets of its kind: echoclip_rank, expectation, argmax (regression); "
        "similarity, contrast, calibrated (binary); argmax (categorical); knn (with --neighbours). "
        "Default: echoclip_rank / similarity / argmax",
    )
    add_neighbour_arguments(p)
    p.add_argument(
        "--split", default="test", help="split of a manifest or folder; 'all' for every row (default: test)"
    )
    p.add_argument("--out", required=True, help="predictions file, .parquet or .csv: one row per study")
    p.add_argument("--batch-size", type=int, default=16, help="videos per forward pass")
    p.add_argument("--workers", type=int, default=0, help="data loading processes")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: a GPU when present)")
    add_level_arguments(p, "predictions")
    add_video_arguments(p)


def add_neighbour_arguments(p: argparse.ArgumentParser) -> None:
    """``--neighbours`` and ``--neighbours-k``: the reference reports of ``--method knn``."""
    p.add_argument(
        "--neighbours",
        help="for --method knn: reference reports with labels (the folder `echoclip embed` wrote "
        "for the training split, or an embedding store whose metadata holds the labels)",
    )
    p.add_argument("--neighbours-k", type=int, help="nearest reports averaged by knn (default 50)")


def open_data(paths: list[str], split: str | None, transform: Any, options: dict[str, Any]) -> Any:
    """A dataset for ``--data``, or the video files given (each its own study, named by its path)."""
    from echoclip.data.datasets import open_dataset

    if len(paths) == 1 and (Path(paths[0]).is_dir() or Path(paths[0]).suffix.lower() in TABLE_SUFFIXES):
        return open_dataset(paths[0], split, transform, read_options=options)
    return list(paths)


def run(args: argparse.Namespace) -> int:
    import torch

    from echoclip.data.transforms import VideoTransform
    from echoclip.errors import ConfigError
    from echoclip.models.factory import get_tokenizer, load_model
    from echoclip.zeroshot.predict import video_embeddings, zero_shot
    from echoclip.zeroshot.prompts import load_prompt_set

    out = Path(args.out)
    if out.suffix.lower() not in TABLE_SUFFIXES:
        raise ConfigError(f"{out}: the predictions file must end in .parquet or .csv")
    prompt_sets = [load_prompt_set(p.strip()) for p in args.prompts.split(",") if p.strip()]
    if not prompt_sets:
        raise ConfigError("--prompts names no prompt set")
    set_methods = [_method_for(ps, args.method) for ps in prompt_sets]
    if args.method and not any(set_methods):
        names = ", ".join(ps.name for ps in prompt_sets)
        raise ConfigError(f"--method {args.method} scores none of the targets of {names}")

    max_videos(args)  # a bad flag fails before the model loads
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(args.model, device=device)
    tokenizer = get_tokenizer(args.model)
    split = None if args.split.lower() == "all" else args.split
    data = open_data(args.data, split, VideoTransform(model.preprocess_config), read_options(args))
    if args.level == "study":
        return _run_studies(args, model, tokenizer, data, prompt_sets, set_methods, out)
    video_emb, study_ids, ood_features = video_embeddings(
        model,
        data,
        batch_size=args.batch_size,
        num_workers=args.workers,
        read_options=read_options(args),
        per_frame=model.embeds_frames,
    )
    if isinstance(data, list):  # video files: a row's id is its position; the study is the file
        study_ids = [data[i] for i in study_ids]
    table = None
    methods: dict[str, str] = {}
    for prompt_set, method in zip(prompt_sets, set_methods, strict=True):
        df = zero_shot(
            model,
            tokenizer,
            video_emb,
            prompts=prompt_set,
            method=method,
            study_ids=study_ids,
            ood_features=ood_features,
            neighbours=args.neighbours,
            k=args.neighbours_k,
        )
        methods.update(df.attrs["methods"])
        shared = ["n_clips", "ood_score", "out_of_distribution"]  # the same in every set's table
        table = df if table is None else table.merge(df.drop(columns=shared), on="study_id", how="outer")
    assert table is not None
    table.attrs = {"prompt_sets": [ps.name for ps in prompt_sets], "methods": methods}
    _write_table(table, out)
    skipped = (
        len(data) - len(video_emb) if isinstance(data, list) else len(getattr(data, "skipped", ()) or ())
    )
    flagged = int((table["out_of_distribution"] == True).sum())  # noqa: E712 (None: no reference)
    print(
        f"zero-shot: {len(table)} studies x {len(methods)} targets -> {out}"
        + (f" ({skipped} unreadable videos skipped)" if skipped else "")
        + (f"; {flagged} studies out of distribution (column out_of_distribution)" if flagged else "")
    )
    return 0


def _run_studies(
    args: argparse.Namespace,
    model: Any,
    tokenizer: Any,
    data: Any,
    prompt_sets: list,
    set_methods: list,
    out: Path,
) -> int:
    """``--level study``: one row per study from its pooled embedding; video files given are one study."""
    from echoclip.cli.video_options import study_name
    from echoclip.zeroshot.predict import study_embeddings, zero_shot

    study_ids = [study_name(data)] * len(data) if isinstance(data, list) else None
    studies = study_embeddings(
        model,
        data,
        study_ids=study_ids,
        max_videos=max_videos(args),
        batch_size=args.batch_size,
        num_workers=args.workers,
        read_options=read_options(args),
    )
    table = None
    methods: dict[str, str] = {}
    for prompt_set, method in zip(prompt_sets, set_methods, strict=True):
        df = zero_shot(
            model,
            tokenizer,
            studies,
            prompts=prompt_set,
            method=method,
            level="study",
            neighbours=args.neighbours,
            k=args.neighbours_k,
        )
        methods.update(df.attrs["methods"])
        shared = ["n_videos", "ood_score", "out_of_distribution"]
        table = df if table is None else table.merge(df.drop(columns=shared), on="study_id", how="outer")
    assert table is not None
    table.attrs = {"prompt_sets": [ps.name for ps in prompt_sets], "methods": methods, "level": "study"}
    _write_table(table, out)
    notes = []
    if studies.failed:
        notes.append(f"{len(studies.failed)} unreadable videos skipped")
    if studies.skipped:
        shown = ", ".join(map(str, studies.skipped[:5])) + (" ..." if len(studies.skipped) > 5 else "")
        notes.append(f"{len(studies.skipped)} studies with no readable video left out: {shown}")
    if studies.subsampled:
        notes.append(f"{len(studies.subsampled)} studies subsampled to {max_videos(args)} videos")
    print(
        f"zero-shot: {len(table)} studies x {len(methods)} targets at study level -> {out}"
        + (f" ({'; '.join(notes)})" if notes else "")
    )
    return 0


def _method_for(prompt_set: Any, method: str | None) -> str | None:
    """``--method`` for a set that has targets of its kind; the defaults for the other sets."""
    if method is None:
        return None
    from echoclip.zeroshot.scoring import require_method

    kinds = require_method(method)
    have = {t.kind for t in prompt_set.targets.values()}
    return method if have & set(kinds) else None


def _write_table(table: Any, path: Path) -> None:
    from echoclip import atomic

    with atomic.writing(path) as tmp:
        if path.suffix.lower() == ".parquet":
            table.to_parquet(tmp, index=False)
        else:
            table.to_csv(tmp, index=False)
