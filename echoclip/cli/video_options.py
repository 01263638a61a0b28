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
