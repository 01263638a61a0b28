"""The option of every command that reads video files: the frame rate of files that record none."""

from __future__ import annotations

import argparse
from typing import Any


def add_video_arguments(p: argparse.ArgumentParser) -> None:
    """``--fps``: some DICOM cines and containers carry no frame timing; without it such a
    file cannot be resampled, so it is skipped (and listed) like any unreadable file."""
    p.add_argument(
        "--fps",
        type=float,
        help="frame rate of video files that record none (DICOMs without frame timing); "
        "without it such files are skipped and listed as unreadable",
    )


def read_options(args: argparse.Namespace) -> dict[str, Any]:
    """What ``load_video`` needs of the flags."""
    return {"fps": args.fps} if getattr(args, "fps", None) else {}


def add_level_arguments(p: argparse.ArgumentParser, what: str) -> None:
    """``--level`` and ``--max-videos``: answer per clip (a study's clips scored together) or
    per study (a study's videos pooled into one embedding by the model's study pooling)."""
    p.add_argument(
        "--level",
        choices=("clip", "study"),
        default="clip",
        help=f"clip: {what} from each study's clips scored together; study: from one embedding per "
        "study, its videos pooled by the model's study pooling (the mean without one), views from "
        "a view_pred or view column (default: clip)",
    )
    p.add_argument(
        "--max-videos",
        type=int,
        default=64,
        help="with --level study: videos pooled per study at most; a larger study keeps a subsample "
        "seeded by its id, the same on every run (default: 64)",
    )


def max_videos(args: argparse.Namespace) -> int:
    """``--max-videos``, checked."""
    from echoclip.errors import ConfigError

    if args.max_videos < 1:
        raise ConfigError(f"--max-videos must be at least 1, not {args.max_videos}")
    return int(args.max_videos)


def study_name(paths: list[str]) -> str:
    """The study id of video files given as one study: the name of the folder that holds them."""
    import os
    from pathlib import Path

    folder = Path(os.path.commonpath([str(Path(p).resolve().parent) for p in paths]))
    return folder.name or "study"
