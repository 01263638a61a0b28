"""Atomic training checkpoints and exact resume.

A checkpoint is a folder ``<out>/checkpoints/step_XXXXXXXX/`` holding ``model/`` (what
the objective saves: a model directory users can load, or an encoder checkpoint),
``train_state.pt`` (optimizer, scheduler, step, data position), ``rng_rank<R>.pt``
per rank and ``checkpoint.json`` (its format and step). It is written as
``step_XXXXXXXX.tmp`` and swapped in when complete, so a run killed while writing
leaves a ``.tmp`` folder that :func:`latest_checkpoint` ignores.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from echoclip import atomic, formats

_STEP_DIR = re.compile(r"^step_(\d{8})$")
CHECKPOINT_INFO = formats.FORMAT_FILES[formats.CHECKPOINT]


def checkpoint_dir(out: str | Path, step: int) -> Path:
    return Path(out) / "checkpoints" / f"step_{step:08d}"


def list_checkpoints(out: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(out) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _STEP_DIR.match(p.name) and (p / "train_state.pt").is_file()]
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))  # type: ignore[union-attr]


def latest_checkpoint(out: str | Path) -> Path | None:
    found = list_checkpoints(out)
    return found[-1] if found else None


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def default_save_model(model: nn.Module, directory: Path) -> None:
    """Write a model directory when the model can (``save_pretrained``), else bare weights."""
    if hasattr(model, "save_pretrained"):
        model.save_pretrained(directory)
    else:
        from safetensors.torch import save_model

        directory.mkdir(parents=True, exist_ok=True)
        save_model(model, str(directory / "model.safetensors"))


def load_weights(model: nn.Module, directory: Path) -> None:
    """Load ``model.safetensors`` of a checkpoint's model directory into ``model`` (strict)."""
    from safetensors.torch import load_model

    load_model(model, str(directory / "model.safetensors"), strict=True)


def save_checkpoint(
    out: str | Path,
    step: int,
    model: nn.Module,
    train_state: dict[str, Any],
    rank_states: list[dict[str, Any]],
    save_model: Callable[[nn.Module, Path], None] = default_save_model,
    keep_last: int = 2,
) -> Path:
    """Write checkpoint ``step`` atomically; keep only the newest ``keep_last``."""
    final = checkpoint_dir(out, step)
    with atomic.writing_dir(final) as tmp:
        save_model(model, tmp / "model")
        for r, state in enumerate(rank_states):
            torch.save(state, tmp / f"rng_rank{r}.pt")
        torch.save(train_state, tmp / "train_state.pt")
        (tmp / CHECKPOINT_INFO).write_text(
            json.dumps({"format": formats.CHECKPOINT, "step": int(step), "model": "model"}, indent=2) + "\n"
        )
    for old in list_checkpoints(out)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_train_state(directory: Path, rank: int = 0) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The run state and this rank's RNG state (``None`` if the world size changed)."""
    state = torch.load(directory / "train_state.pt", map_location="cpu", weights_only=True)
    rng_file = directory / f"rng_rank{rank}.pt"
    rng = torch.load(rng_file, map_location="cpu", weights_only=True) if rng_file.exists() else None
    return state, rng
