"""The README's commands as written: each one parses, the fast ones run, and (slow) the whole
command-line walk-through runs in a fresh folder. Its Python block runs too."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from echoclip.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, re.S)


def _commands(language: str = "bash") -> list[str]:
    """Every command of the README's shell blocks, continuation lines joined."""
    commands = []
    for lang, body in BLOCKS:
        if lang == language:
            joined = re.sub(r"\\\n\s*", " ", body)
            commands += [line.split("  #")[0].strip() for line in joined.splitlines() if line.strip()]
    return commands


ECHOCLIP = [c for c in _commands() if c.startswith("echoclip ")]


def test_the_readme_has_commands_and_fits_on_a_page():
    assert len(README.splitlines()) <= 250
    assert "make demo" in _commands() and "make test" in _commands()
    assert len(ECHOCLIP) >= 12


@pytest.mark.parametrize("command", ECHOCLIP)
def test_every_echoclip_command_parses(command):
    argv = shlex.split(command.replace('"$(ls runs/sim/Videos/*.avi | head -1)"', "video.avi"))
    args = build_parser().parse_args(argv[1:])
    assert getattr(args, "_run", None) is not None


def test_every_torchrun_command_parses():
    for command in _commands():
        if command.startswith("torchrun "):
            argv = shlex.split(command)
            build_parser().parse_args(argv[argv.index("echoclip.cli.main") + 1 :])


def _run_shell(commands: list[str], cwd: Path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for command in commands:
        done = subprocess.run(
            ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, f"{command}\n{done.stderr[-2000:]}"


def test_the_fast_commands_run_as_written(tmp_path):
    walk = [c for c in ECHOCLIP if "runs/demo" not in c and "/data/" not in c]
    fast = [c for c in walk if c.split()[1] in ("simulate", "tokenizer")]
    assert len(fast) >= 3
    _run_shell(fast, tmp_path)
    assert (tmp_path / "runs" / "tok" / "tokenizer.json").is_file()


@pytest.mark.slow
def test_the_walk_through_runs_as_written(tmp_path):
    walk = [c for c in ECHOCLIP if "runs/demo" not in c and "/data/" not in c]
    _run_shell(walk, tmp_path)
    assert (tmp_path / "runs" / "preds.csv").is_file() and (tmp_path / "runs" / "ft").is_dir()


@pytest.mark.slow
def test_the_python_block_runs_on_the_walk_throughs_model(tmp_path):
    """The API block against the walk-through's model, with two of its videos in place of
    the example file names."""
    walk = [c for c in ECHOCLIP if "runs/demo" not in c and "/data/" not in c][:4]
    _run_shell(walk, tmp_path)
    videos = sorted((tmp_path / "runs" / "sim" / "Videos").glob("*.avi"))
    code = next(body for lang, body in BLOCKS if lang == "python")
    code = code.replace("runs/demo/clip/final", "runs/clip/final")
    for name, video in (("study.dcm", videos[0]), ("a.dcm", videos[1]), ("b.avi", videos[2])):
        code = code.replace(f'"{name}"', f'"{video}"')
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
