"""``echoclip tokenizer``: train a report tokenizer on a corpus, or show how a text is tokenized."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "train the echo report tokenizer on a corpus, or show the tokens of a text"
EXAMPLE = (
    "echoclip tokenizer train --corpus manifest.parquet --out runs/tokenizer\n"
    '  echoclip tokenizer encode --tokenizer runs/tokenizer "LV EJECTION FRACTION IS 55%."'
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    train = sub.add_parser(
        "train",
        help="learn phrases and subwords from a corpus of reports",
        description="Learn a tokenizer from reports and write DIR/tokenizer.json (+ tokenizer_config.json).",
        epilog="example:\n  echoclip tokenizer train --corpus manifest.parquet --out runs/tokenizer",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument(
        "--corpus", required=True, type=Path, help="reports: .parquet or .csv (a column), .txt (one per line)"
    )
    train.add_argument("--out", required=True, type=Path, help="directory to write the tokenizer into")
    train.add_argument(
        "--column", default="report", help="column of the reports in a .parquet/.csv (default: report)"
    )
    train.add_argument("--phrase-vocab-size", type=int, default=8192, help="at most this many phrase tokens")
    train.add_argument("--subword-vocab-size", type=int, default=2048, help="about this many subword tokens")
    train.add_argument(
        "--min-frequency", type=int, default=3, help="a phrase or subword must occur this often"
    )
    train.add_argument(
        "--phrase-min-frequency",
        type=int,
        default=None,
        help="a phrase must occur this often (default: --min-frequency); on a small corpus a "
        "higher value keeps rare sentences as their words",
    )
    train.add_argument("--keep-case", action="store_true", help="do not upper-case reports when cleaning")

    encode = sub.add_parser(
        "encode",
        help="show the cleaned text, tokens and ids of a text",
        description="Show how a text is cleaned and tokenized.",
        epilog='example:\n  echoclip tokenizer encode --tokenizer runs/tokenizer "LV EJECTION FRACTION IS 55%."',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    encode.add_argument("text", help="the text to tokenize ('-' reads it from standard input)")
    source = encode.add_mutually_exclusive_group()
    source.add_argument(
        "--tokenizer", type=Path, help="a tokenizer directory or tokenizer.json (default: untrained)"
    )
    source.add_argument(
        "--phrase-file", type=Path, help="use the EchoCLIP-R-compatible template mode with this phrase file"
    )
    encode.add_argument(
        "--context-length", type=int, default=77, help="context length of the ids (default: 77)"
    )


def run(args: argparse.Namespace) -> int:
    if args.action == "train":
        return _train(args)
    return _encode(args)


def read_corpus(path: Path, column: str = "report") -> list[str]:
    """Reports from a .parquet or .csv file (one column) or a .txt file (one report per line)."""
    from echoclip.errors import DataError

    if not path.is_file():
        raise DataError(f"{path}: no such corpus file")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        reports = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    elif suffix in (".parquet", ".csv"):
        import pandas as pd

        table = pd.read_parquet(path) if suffix == ".parquet" else pd.read_csv(path)
        if column not in table.columns:
            raise DataError(f"{path}: no column {column!r}; columns: {', '.join(map(str, table.columns))}")
        reports = [r for r in table[column].dropna().astype(str) if r.strip()]
    else:
        raise DataError(f"{path}: a corpus must be .parquet, .csv or .txt, not {suffix or 'no extension'}")
    if not reports:
        raise DataError(f"{path}: no reports in the corpus")
    return reports


def _train(args: argparse.Namespace) -> int:
    import numpy as np

    from echoclip.tokenizer import CleaningConfig, EchoTokenizer

    reports = read_corpus(args.corpus, args.column)
    print(f"training on {len(reports)} reports from {args.corpus}", file=sys.stderr)
    tokenizer = EchoTokenizer.train(
        reports,
        phrase_vocab_size=args.phrase_vocab_size,
        subword_vocab_size=args.subword_vocab_size,
        min_frequency=args.min_frequency,
        phrase_min_frequency=args.phrase_min_frequency,
        cleaning=CleaningConfig(uppercase=not args.keep_case),
    )
    path = tokenizer.save(args.out)
    lengths = np.array([len(ids) + 2 for ids in tokenizer.encode_batch(reports)])
    print(
        f"tokenizer: vocabulary {tokenizer.vocab_size}, {lengths.mean():.1f} tokens per report "
        f"(95th percentile {np.percentile(lengths, 95):.0f}, {np.mean(lengths <= 77):.0%} fit in 77) -> {path}"
    )
    return 0


def _encode(args: argparse.Namespace) -> int:
    from echoclip.tokenizer import EchoClipRTokenizer, EchoTokenizer

    text = sys.stdin.read() if args.text == "-" else args.text
    if args.phrase_file is not None:
        template = EchoClipRTokenizer(args.phrase_file)
        ids, dropped, total = template.encode_with_stats(text)
        print(f"cleaned: {template.clean(text)}")
        print(" ".join(f"{template.id_to_token(i)}:{i}" for i in ids))
        kept = ids[: args.context_length]
        print(
            f"{len(ids)} tokens ({len(kept)} kept of context {args.context_length}); dropped {dropped} of {total} characters"
        )
        return 0
    tokenizer = EchoTokenizer.load(args.tokenizer) if args.tokenizer else EchoTokenizer()
    ids = tokenizer.encode(text)
    print(f"cleaned: {tokenizer.clean(text)}")
    print(" | ".join(f"{token!r}:{i}" for token, i in zip(tokenizer.tokens(text), ids, strict=True)))
    total = len(ids) + 2
    print(
        f"{total} tokens with <bos>/<eos> (context {args.context_length}: {'fits' if total <= args.context_length else 'truncated'})"
    )
    return 0
