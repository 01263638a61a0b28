"""Tests of echoclip/cli/tokenizer.py: train from .parquet/.csv/.txt, encode, and one-line errors."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import pytest

from echoclip.cli import tokenizer as command
from echoclip.errors import DataError
from echoclip.tokenizer import EchoTokenizer


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="echoclip tokenizer")
    command.add_arguments(parser)
    return command.run(parser.parse_args(argv))


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".txt"])
def test_train_then_encode(
    suffix: str, corpus: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reports = corpus[:200]
    path = tmp_path / f"reports{suffix}"
    if suffix == ".txt":
        path.write_text("\n".join(r.replace("\n", " ") for r in reports) + "\n", encoding="utf-8")
    elif suffix == ".csv":
        pd.DataFrame({"text": reports}).to_csv(path, index=False)
    else:
        pd.DataFrame({"report": reports}).to_parquet(path)
    column = ["--column", "text"] if suffix == ".csv" else []
    out = tmp_path / "tok"
    assert (
        _run(["train", "--corpus", str(path), "--out", str(out), *column, "--phrase-vocab-size", "256"]) == 0
    )
    assert "tokens per report" in capsys.readouterr().out
    tok = EchoTokenizer.load(out)
    assert tok.decode(tok.encode(reports[0])) == tok.clean(reports[0])

    assert _run(["encode", "--tokenizer", str(out), "lv ejection fraction is 55 %"]) == 0
    shown = capsys.readouterr().out
    assert "cleaned: LV EJECTION FRACTION IS 55 %" in shown and "'55'" in shown and "fits" in shown


def test_train_phrase_min_frequency(corpus: list[str], tmp_path: Path) -> None:
    path = tmp_path / "reports.txt"
    path.write_text("\n".join(r.replace("\n", " ") for r in corpus[:200]) + "\n", encoding="utf-8")
    # no phrase is held by 1000 of 200 reports: every token stays within a word
    argv = ["train", "--corpus", str(path), "--out", str(tmp_path / "tok"), "--phrase-min-frequency", "1000"]
    assert _run(argv) == 0
    tok = EchoTokenizer.load(tmp_path / "tok")
    assert max(len(t.split()) for t in tok.tokens(corpus[0])) == 1


def test_encode_untrained_and_template_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["encode", "EF 55%"]) == 0
    assert "'55'" in capsys.readouterr().out
    phrases = tmp_path / "phrases.txt"
    phrases.write_text("LV EJECTION FRACTION IS <#>%. \n", encoding="utf-8")
    assert _run(["encode", "--phrase-file", str(phrases), "LV EJECTION FRACTION IS 55%. UNKNOWN."]) == 0
    shown = capsys.readouterr().out
    assert "<55>" in shown and "dropped 8 of" in shown


def test_corpus_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such corpus"):
        command.read_corpus(tmp_path / "missing.parquet")
    table = tmp_path / "t.csv"
    pd.DataFrame({"findings": ["a"]}).to_csv(table, index=False)
    with pytest.raises(DataError, match="no column 'report'; columns: findings"):
        command.read_corpus(table)
    other = tmp_path / "t.json"
    other.write_text("{}")
    with pytest.raises(DataError, match=".parquet, .csv or .txt"):
        command.read_corpus(other)


def test_errors_end_as_one_line_through_the_console_script(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from echoclip.cli.main import main

    code = main(["tokenizer", "train", "--corpus", str(tmp_path / "none.txt"), "--out", str(tmp_path / "o")])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such corpus file" in err[0]
