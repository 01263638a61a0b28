"""``echoclip report``: a draft report for a video, section by section, from a section
index built by ``echoclip index --sections``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from echoclip.cli.video_options import add_video_arguments, read_options

HELP = "draft a report for a video from the nearest section of indexed reports"
EXAMPLE = "echoclip report --video study.avi --index runs/sections --model runs/clip/final"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--video", required=True, help="a video file (DICOM, AVI, MP4)")
    p.add_argument("--index", required=True, help="a section index folder (echoclip index --sections)")
    p.add_argument(
        "--model", help="the model directory that made the index (default: the one the index records)"
    )
    p.add_argument(
        "--sections", help="comma-separated sections to draft (default: every indexed one but comparison)"
    )
    p.add_argument(
        "--presence-k",
        type=int,
        default=None,
        help="nearest whole reports that decide which sections the draft has (default: 10)",
    )
    p.add_argument(
        "--presence-threshold",
        type=float,
        default=None,
        help="share of those reports (weighted by similarity) that must have a section for the draft "
        "to have it; 0 drafts every indexed section (default: 0.4)",
    )
    p.add_argument(
        "--method",
        choices=("consensus", "nearest"),
        default="consensus",
        help="each section's text: what the nearest reports say (consensus, default) or the "
        "section text nearest the video (nearest)",
    )
    p.add_argument("--device", help="cpu, cuda ... (default: a GPU when present)")
    p.add_argument("--json", action="store_true", help="print the draft as JSON")
    add_video_arguments(p)


def run(args: argparse.Namespace) -> int:
    import echoclip
    from echoclip.errors import ConfigError
    from echoclip.models.embed import default_device
    from echoclip.models.model_dir import model_identity
    from echoclip.zeroshot.drafts import (
        PRESENCE_K,
        PRESENCE_THRESHOLD,
        draft_report,
        read_section_index_info,
    )

    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    info = read_section_index_info(args.index)
    model_dir = args.model or info.get("model_dir")
    if not model_dir:
        raise ConfigError(f"{args.index}: the index records no model directory; pass --model")
    if not Path(args.video).is_file():
        raise ConfigError(f"{args.video}: no such video file")
    model = echoclip.load_model(model_dir)
    draft = draft_report(
        model,
        None,
        args.video,
        args.index,
        sections=None if not args.sections else [s.strip() for s in args.sections.split(",") if s.strip()],
        expected_model_hash=model_identity(model_dir)["hash"] if info.get("model") else None,
        device=args.device or default_device(),
        read_options=read_options(args),
        presence_k=PRESENCE_K if args.presence_k is None else args.presence_k,
        presence_threshold=PRESENCE_THRESHOLD if args.presence_threshold is None else args.presence_threshold,
        method=args.method,
    )
    if args.json:
        json.dump(
            {"video": args.video, "index": str(args.index), **draft.to_dict()},
            sys.stdout,
            indent=2,
            default=str,
        )
        print()
        return 0
    for s in draft.sections:
        if s.message:
            print(f"{s.heading}: -")
            print(f"    [{s.name}: {s.message}]")
            continue
        print(f"{s.heading}: {s.text}")
        print(
            f"    [{s.name}: study {s.study_id}, similarity {s.similarity:.3f}, "
            f"in {s.presence:.2f} of the {draft.presence_k} nearest reports]"
        )
    return 0
