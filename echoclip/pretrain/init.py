"""Encoder checkpoints: what pretraining writes and what initialises a CLIP video tower.

An encoder checkpoint is a folder with

- ``encoder.safetensors``: the pretrained tensors of the video tower, named as in the
  tower's ``state_dict`` (e.g. ``model.encoder.layer.0.attention...`` for ``videomae``);
- ``encoder.json``: the tower's config (``video``), ``embed_dim``, and how it was
  pretrained (``objective``, ``pretrain``).

``echoclip train --init DIR`` and :func:`load_pretrained_encoder` load it into the
video tower of a model and report which tensors matched, which the model has but the
checkpoint does not (they keep their fresh initialisation: e.g. the pooling and the
projection, which masked modelling does not train) and which the checkpoint has but
the model does not.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from echoclip.errors import ModelError
from echoclip.pretrain.features import video_tower

ENCODER_WEIGHTS = "encoder.safetensors"
ENCODER_INFO = "encoder.json"
FORMAT = "echoclip-encoder"
# tower config fields that change the shape or meaning of the weights
_ARCHITECTURE_FIELDS = ("kind", "backbone", "patch_size", "tubelet_size", "width", "layers", "heads")


@dataclass
class LoadReport:
    """Outcome of :func:`load_pretrained_encoder` (tensor names relative to the video tower)."""

    source: str
    matched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    # in the checkpoint, left out by the ``prefixes`` the caller asked for
    left_out: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: counts, and the names of missing, unexpected and left-out tensors (abridged)."""

        def names(keys: list[str]) -> str:
            shown = ", ".join(keys[:6])
            return f" ({shown}{', ...' if len(keys) > 6 else ''})" if keys else ""

        return (
            f"{len(self.matched)} tensors loaded from {self.source}; "
            f"{len(self.missing)} missing, kept as initialised{names(self.missing)}; "
            f"{len(self.unexpected)} unexpected, ignored{names(self.unexpected)}"
            + (f"; {len(self.left_out)} left out by prefix{names(self.left_out)}" if self.left_out else "")
        )


def save_encoder(
    tower: nn.Module,
    directory: str | os.PathLike[str],
    prefixes: tuple[str, ...] | None = None,
    info: dict[str, Any] | None = None,
) -> Path:
    """Write ``encoder.safetensors`` and ``encoder.json`` of ``tower`` into ``directory``.

    ``prefixes`` keeps only the tensors whose names start with one of them (what the
    pretraining trained); files are written under a temporary name and renamed.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().cpu().contiguous()
        for k, v in tower.state_dict().items()
        if prefixes is None or k.startswith(prefixes)
    }
    config = getattr(tower, "config", None)
    meta = {
        "format": FORMAT,
        "version": 1,
        "video": asdict(config) if config is not None else None,
        "embed_dim": getattr(tower, "output_dim", None),
        **(info or {}),
    }
    weights = directory / ENCODER_WEIGHTS
    save_file(state, str(weights.with_name(weights.name + ".tmp")), metadata={"format": FORMAT})
    os.replace(weights.with_name(weights.name + ".tmp"), weights)
    info_file = directory / ENCODER_INFO
    info_file.with_name(info_file.name + ".tmp").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    os.replace(info_file.with_name(info_file.name + ".tmp"), info_file)
    return directory


def resolve_encoder(path: str | os.PathLike[str]) -> Path:
    """The folder of an encoder checkpoint: the folder itself, its ``encoder.safetensors``, or a
    pretraining run folder (its ``final``)."""
    path = Path(path)
    if path.is_file() and path.name == ENCODER_WEIGHTS:
        return path.parent
    for candidate in (path, path / "final"):
        if (candidate / ENCODER_WEIGHTS).is_file():
            return candidate
    if not path.exists():
        raise ModelError(f"{path}: no such encoder checkpoint")
    raise ModelError(
        f"{path}: not an encoder checkpoint (no {ENCODER_WEIGHTS}; write one with `echoclip pretrain`)"
    )


def read_encoder(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and the ``encoder.json`` of an encoder checkpoint."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = resolve_encoder(path)
    try:
        state = load_file(str(folder / ENCODER_WEIGHTS))
    except (SafetensorError, OSError) as e:
        raise ModelError(f"{folder / ENCODER_WEIGHTS}: unreadable ({e})") from None
    info_file = folder / ENCODER_INFO
    try:
        info = json.loads(info_file.read_text()) if info_file.is_file() else {}
    except json.JSONDecodeError as e:
        raise ModelError(f"{info_file}: not valid JSON ({e})") from None
    return state, info


def _check_architecture(info: dict[str, Any], tower: nn.Module, source: Path) -> None:
    saved = info.get("video") or {}
    config = getattr(tower, "config", None)
    if config is None:
        return
    for name in _ARCHITECTURE_FIELDS:
        if name in saved and hasattr(config, name) and saved[name] != getattr(config, name):
            raise ModelError(
                f"{source}: the encoder was pretrained with video.{name}={saved[name]!r} but the model's "
                f"video tower has {name}={getattr(config, name)!r}; create the model with the same video config"
            )


def load_pretrained_encoder(
    model: nn.Module, path: str | os.PathLike[str], prefixes: Sequence[str] | None = None
) -> LoadReport:
    """Load an encoder checkpoint into the video tower of ``model`` (an ``EchoCLIP`` or a tower).

    Tensors present in both with the same shape are loaded; a shape mismatch is an
    error (the checkpoint belongs to another architecture). ``prefixes`` loads only
    the tensors whose names start with one of them (e.g. ``("backbone.",)``: the
    layers of a contrastively pretrained tower closest to its loss keep what that loss
    wanted, as SimCLR found of its projection head); the rest stay as initialised and
    are listed in :attr:`LoadReport.left_out`. Example::

        model = echoclip.create_model("echoclip-tiny")
        report = load_pretrained_encoder(model, "runs/ssl/final", prefixes=("backbone.",))
        print(report.summary())
    """
    folder = resolve_encoder(path)
    state, info = read_encoder(folder)
    left_out: list[str] = []
    if prefixes is not None:
        keep = tuple(prefixes)
        left_out = sorted(k for k in state if not k.startswith(keep))
        state = {k: v for k, v in state.items() if k.startswith(keep)}
        if not state:
            raise ModelError(f"{folder / ENCODER_WEIGHTS}: no tensor starts with {', '.join(keep)}")
    tower = video_tower(model)
    _check_architecture(info, tower, folder)
    own = tower.state_dict()
    matched = sorted(k for k in state if k in own)
    wrong = [k for k in matched if tuple(state[k].shape) != tuple(own[k].shape)]
    if wrong:
        k = wrong[0]
        raise ModelError(
            f"{folder / ENCODER_WEIGHTS}: {len(wrong)} tensors do not fit the model's video tower, e.g. {k} "
            f"is {list(state[k].shape)} in the checkpoint and {list(own[k].shape)} in the model"
        )
    if state and not matched:
        raise ModelError(
            f"{folder / ENCODER_WEIGHTS}: none of its {len(state)} tensors belong to this video tower"
        )
    with torch.no_grad():
        for k in matched:
            own[k].copy_(state[k].to(own[k].dtype))
    return LoadReport(
        source=str(folder),
        matched=matched,
        missing=sorted(k for k in own if k not in state),
        unexpected=sorted(k for k in state if k not in own),
        left_out=left_out,
    )


def build_encoder(path: str | os.PathLike[str]) -> nn.Module:
    """A video tower built from an encoder checkpoint's config, with its weights loaded."""
    from echoclip.models.config import VideoTowerConfig
    from echoclip.models.video_towers import build_video_tower

    folder = resolve_encoder(path)
    _, info = read_encoder(folder)
    video = info.get("video")
    if not isinstance(video, dict) or info.get("embed_dim") is None:
        raise ModelError(f"{folder / ENCODER_INFO}: has no video tower config; cannot rebuild the encoder")
    tower = build_video_tower(VideoTowerConfig(**video), int(info["embed_dim"]))
    load_pretrained_encoder(tower, folder)
    return tower.eval()
