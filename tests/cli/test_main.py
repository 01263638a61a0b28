"""The command line's first screen: help for every command, and one line for a missing input."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from echoclip.cli.main import COMMANDS, build_parser, main


def _subcommand_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and nested sub-command (``tokenizer train``) the parser knows."""
    paths = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths.append((*prefix, name))
                paths += _subcommand_paths(sub, (*prefix, name))
    return paths


COMMAND_PATHS = _subcommand_paths(build_parser())


def test_every_command_is_listed():
    assert {p[0] for p in COMMAND_PATHS} == set(COMMANDS)
    assert ("tokenizer", "train") in COMMAND_PATHS


def test_bare_echoclip_shows_the_commands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS) and "echoclip demo" in out


@pytest.mark.parametrize("path", [(), *COMMAND_PATHS], ids=lambda p: " ".join(p) or "echoclip")
def test_help_of_every_command(path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*path, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: echoclip")
    if len(path) == 1 and path[0] != "tokenizer":  # a command with sub-commands shows theirs
        assert "example:\n  echoclip " in out


def test_the_installed_script_answers_help():
    """The console script itself, in a fresh process (as a new user first meets it)."""
    script = [sys.executable, "-m", "echoclip.cli.main", "--help"]
    done = subprocess.run(script, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "finetune" in done.stdout and not done.stderr


def _missing_input(tmp_path) -> dict[str, list[str]]:
    gone = str(tmp_path / "no-such-thing")
    out = str(tmp_path / "out")
    return {
        "demo": ["demo", "--recipe", gone + ".toml", "--out", out],
        "simulate": ["simulate", "--out", str(tmp_path / "a-file" / "sim"), "--n", "2"],
        "ingest": ["ingest", gone, "--reports", gone + ".csv", "--out", out],
        "preprocess": ["preprocess", "--manifest", gone, "--out", out],
        "tokenizer train": ["tokenizer", "train", "--corpus", gone, "--out", out],
        "tokenizer encode": ["tokenizer", "encode", "--tokenizer", gone, "LVEF 55%."],
        "pretrain": ["pretrain", "--data", gone, "--out", out, "--steps", "1"],
        "train": ["train", "--data", gone, "--out", out, "--steps", "1"],
        "calibrate-ood": ["calibrate-ood", "--model", gone, "--data", gone],
        "finetune": ["finetune", "--data", gone, "--init", "echoclip-tiny", "--out", out, "--steps", "1"],
        "embed": ["embed", "--model", gone, "--data", gone, "--out", out],
        "merge": ["merge", gone],
        "index": ["index", "--embeddings", gone, "--out", out],
        "search": ["search", "--index", gone, "--model", gone, "--text", "EF 40%."],
        "report": ["report", "--video", gone, "--index", gone],
        "prompts": ["prompts", "--corpus", gone + ".parquet", "--out", out + ".json"],
        "zeroshot": ["zeroshot", "--model", gone, "--data", gone, "--out", out + ".csv"],
        "views": ["views", "--model", gone, "--data", gone, "--out", out + ".parquet"],
        "evaluate": ["evaluate", "--model", gone, "--data", gone, "--out", out],
        "serve": ["serve", "--model", gone, "--index", gone],
    }


def test_every_leaf_command_has_a_missing_input_case(tmp_path):
    leaves = {
        " ".join(p) for p in COMMAND_PATHS if not any(q[: len(p)] == p and q != p for q in COMMAND_PATHS)
    }
    assert leaves == set(_missing_input(tmp_path))


@pytest.mark.parametrize("name", sorted(_missing_input(__import__("pathlib").Path("/x"))))
def test_a_missing_input_is_one_line_and_exit_1(name, tmp_path, capsys):
    (tmp_path / "a-file").write_text("not a folder")
    assert main(_missing_input(tmp_path)[name]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"echoclip {name.split()[0]}: error: ") and "Traceback" not in err
