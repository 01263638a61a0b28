"""``echoclip prompts``: write a prompt set whose findings are asked in a report corpus's own sentences."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "write a findings prompt set from the sentences a report corpus states and denies each finding in"
EXAMPLE = (
    "echoclip prompts --corpus runs/sim/manifest.parquet --split train --out runs/findings.json\n"
    "  echoclip zeroshot --model runs/clip/final --data runs/sim --prompts runs/findings.json --out runs/preds.csv"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--corpus",
        required=True,
        type=Path,
        help="reports: a manifest (.parquet or .csv, a report column) or .txt (one report per line)",
    )
    p.add_argument("--out", required=True, type=Path, help="the prompt set to write (.json)")
    p.add_argument(
        "--split",
        help="the manifest rows to read (e.g. train; default: all); keep the reports of the studies "
        "you will score out of the prompts",
    )
    p.add_argument("--column", default="report", help="the manifest's report column (default: report)")
    p.add_argument(
        "--base",
        default="findings",
        help="the prompt set whose findings are replaced: a shipped name or a JSON file (default: findings)",
    )
    p.add_argument(
        "--max-prompts", type=int, default=256, help="sentences per side of a finding (default: 256)"
    )


def run(args: argparse.Namespace) -> int:
    from echoclip.errors import ConfigError
    from echoclip.zeroshot.corpus_prompts import prompt_set_from_reports
    from echoclip.zeroshot.prompts import save_prompt_set

    if args.out.suffix.lower() != ".json":
        raise ConfigError(f"{args.out}: a prompt set is written as .json")
    reports = _reports(args.corpus, args.column, args.split)
    prompts = prompt_set_from_reports(reports, args.base, max_prompts=args.max_prompts)
    save_prompt_set(prompts, args.out)
    print(f"prompts: {prompts.description} -> {args.out}", file=sys.stderr)
    return 0


def _reports(path: Path, column: str, split: str | None) -> list[str]:
    """A text file's reports, or a manifest's (each study's once)."""
    from echoclip.cli.tokenizer import read_corpus
    from echoclip.errors import DataError
    from echoclip.zeroshot.corpus_prompts import manifest_reports

    if path.suffix.lower() in (".parquet", ".csv"):
        return manifest_reports(path, split, column)
    if split is not None:
        raise DataError(f"{path}: --split needs a manifest with a split column, not a text file")
    return read_corpus(path, column)
