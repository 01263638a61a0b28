"""Saved video encoders: the encoder checkpoint pretraining writes, and one loader for every format.

Every folder echoclip saves names its format in a JSON file (:mod:`echoclip.formats`):

- ``echoclip-model``: a model directory (``config.json``; ``echoclip.load_model``);
- ``echoclip-encoder``: an encoder checkpoint of ``echoclip pretrain`` (``encoder.json``);
- ``echoclip-finetuned``: a fine-tuned model directory (``finetune.json``);
- ``echoclip-checkpoint``: a training checkpoint (``checkpoint.json``), whose ``model/``
  holds one of the formats above.

:func:`load_video_encoder` reads the video tower of any of them (or builds a fresh
one from a config name) by that field; :func:`load_pretrained_encoder` loads an encoder
checkpoint into the tower of an existing model (``echoclip train --init``).

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
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import nn

from echoclip import atomic, formats
from echoclip.errors import ModelError
from echoclip.models.features import video_tower

if TYPE_CHECKING:
    from echoclip.data.transforms import PreprocessConfig
    from echoclip.models.config import ModelConfig

ENCODER_WEIGHTS = "encoder.safetensors"
ENCODER_INFO = formats.FORMAT_FILES[formats.ENCODER]
FORMAT = formats.ENCODER
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
    with atomic.writing(directory / ENCODER_WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT})
    atomic.write_text(directory / ENCODER_INFO, json.dumps(meta, indent=2, default=str) + "\n")
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


# ---------------------------------------------------------------------------------------
# every saved format


def read_format(path: str | os.PathLike[str]) -> tuple[str, Path, dict[str, Any]]:
    """``(format, folder, descriptor)`` of a folder echoclip saved, from its ``format`` field.

    A run folder stands for its ``final/``. A ``config.json`` without the field is a
    model directory written before the field existed.
    """
    path = Path(path)
    if path.is_file():
        path = path.parent
    if not path.is_dir():
        raise ModelError(f"{path}: no such model, encoder or checkpoint folder")
    for folder in (path, path / "final"):
        for fmt, name in formats.FORMAT_FILES.items():
            file = folder / name
            if not file.is_file():
                continue
            try:
                descriptor = json.loads(file.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise ModelError(f"{file}: not valid JSON ({e})") from None
            found = descriptor.get("format", formats.MODEL if fmt == formats.MODEL else None)
            if found == fmt:
                return fmt, folder, descriptor
            raise ModelError(f"{file}: format {found!r} is not {fmt!r}")
    raise ModelError(
        f"{path}: not a saved model, encoder, fine-tuned model or checkpoint "
        f"(none of {', '.join(sorted(set(formats.FORMAT_FILES.values())))})"
    )


def model_config(model: str | os.PathLike[str], overrides: Mapping[str, Any] | None = None) -> ModelConfig:
    """The :class:`ModelConfig` of a config name, a JSON file or a model directory."""
    from echoclip.models.config import load_config_file
    from echoclip.models.factory import get_model_config
    from echoclip.models.model_dir import read_config

    path = Path(model)
    if path.is_dir():
        cfg = read_config(path)
    elif str(model).endswith(".json"):
        cfg = load_config_file(path)
    else:
        cfg = get_model_config(str(model))
    return cfg.replace(**dict(overrides)) if overrides else cfg


def build_tower(
    model: str | os.PathLike[str], overrides: Mapping[str, Any] | None = None
) -> tuple[nn.Module, ModelConfig]:
    """A freshly initialised video tower of a model config, and that config."""
    from echoclip.models.video_towers import build_video_tower

    cfg = model_config(model, overrides)
    return build_video_tower(cfg.video, cfg.embed_dim), cfg


class LoadedEncoder(NamedTuple):
    """What :func:`load_video_encoder` found: the tower, its preprocessing and where it came from."""

    tower: nn.Module
    preprocess: PreprocessConfig
    # "model", "encoder", "finetuned" (the saved format it came from) or "random"
    kind: str


def load_video_encoder(
    source: str | os.PathLike[str],
    model: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> LoadedEncoder:
    """The video tower of any saved format, or a fresh one of a config name.

    ``source`` is a model directory, an encoder checkpoint (or its run folder), a
    fine-tuned model directory, a training checkpoint, or a model config name or JSON
    file (a freshly initialised tower). ``model``, when given, is the architecture the
    caller expects (a config name, JSON file or model directory): weights of another
    architecture are a :class:`ModelError`. ``overrides`` change fields of a named
    config (``{"video": {"image_size": 32}}``). Example::

        tower, preprocess, kind = load_video_encoder("runs/ssl/final")
    """
    from echoclip.models.clip_model import default_preprocess

    path = Path(source)
    expected = build_tower(model, overrides) if model is not None else None
    if not path.exists():
        return _fresh_tower(source, model, overrides, expected)
    fmt, folder, descriptor = read_format(path)
    if fmt == formats.CHECKPOINT:
        return load_video_encoder(folder / str(descriptor.get("model", "model")), model, overrides)
    if fmt == FORMAT:
        if expected is None:
            tower = build_encoder(folder)
            return LoadedEncoder(tower, _with_shape(descriptor.get("preprocess"), tower), "encoder")
        tower, cfg = expected
        load_pretrained_encoder(tower, folder)
        return LoadedEncoder(tower, default_preprocess(cfg), "encoder")
    source_tower, preprocess, kind = _saved_tower(fmt, folder, descriptor)
    if expected is None:
        return LoadedEncoder(source_tower, preprocess, kind)
    from echoclip.models.model_dir import load_weights_checked

    tower, cfg = expected
    load_weights_checked(tower, source_tower.state_dict(), source=f"{folder} (video tower)")
    return LoadedEncoder(tower, _with_shape(preprocess.to_dict(), tower), kind)


def _saved_tower(
    fmt: str, folder: Path, descriptor: dict[str, Any]
) -> tuple[nn.Module, PreprocessConfig, str]:
    """The video tower of a model directory or a fine-tuned model directory, with its weights."""
    from echoclip.data.transforms import PreprocessConfig

    if fmt == formats.MODEL:
        from echoclip.models.factory import load_model

        clip_model = load_model(folder)
        return clip_model.video_tower, clip_model.preprocess_config, "model"
    from echoclip.models.config import VideoTowerConfig
    from echoclip.models.model_dir import load_safetensors, load_weights_checked
    from echoclip.models.video_towers import build_video_tower

    file = folder / "model.safetensors"
    try:
        tower = build_video_tower(VideoTowerConfig(**descriptor["video"]), int(descriptor["embed_dim"]))
        preprocess = PreprocessConfig.from_dict(descriptor["preprocess"])
    except (KeyError, TypeError, ValueError) as e:
        raise ModelError(f"{folder / formats.FORMAT_FILES[fmt]}: incomplete ({e})") from None
    state = {
        k.removeprefix("encoder."): v for k, v in load_safetensors(file).items() if k.startswith("encoder.")
    }
    load_weights_checked(tower, state, source=f"{file} (encoder)")
    return tower.eval(), preprocess, "finetuned"


def _with_shape(preprocess: dict[str, Any] | None, tower: nn.Module) -> PreprocessConfig:
    """``preprocess`` with the clip shape the tower takes."""
    from echoclip.data.transforms import PreprocessConfig

    video = tower.config  # type: ignore[attr-defined]
    return PreprocessConfig.from_dict(
        {**(preprocess or {}), "image_size": video.image_size, "num_frames": video.num_frames}
    )


def _fresh_tower(
    name: str | os.PathLike[str],
    model: str | os.PathLike[str] | None,
    overrides: Mapping[str, Any] | None,
    expected: tuple[nn.Module, ModelConfig] | None,
) -> LoadedEncoder:
    from echoclip.models.clip_model import default_preprocess

    try:
        named = model_config(name, overrides)
    except ModelError as e:
        raise ModelError(
            f"{name}: not a model directory, an encoder checkpoint or a model config ({e})"
        ) from None
    if expected is None:
        expected = build_tower(name, overrides)
    tower, cfg = expected
    if named.video != cfg.video:
        raise ModelError(
            f"{name}: its video tower ({named.video.kind}, {named.video.backbone}) is not the one of "
            f"{model} ({cfg.video.kind}, {cfg.video.backbone}); name one architecture"
        )
    return LoadedEncoder(tower, default_preprocess(cfg), "random")
