"""Named model configs and the open_clip-style entry points.

::

    echoclip.list_models()                                   # built-in and added configs
    model, preprocess = echoclip.create_model_and_transforms("echoclip-tiny")
    tokenizer = echoclip.get_tokenizer("echoclip-tiny")      # or a model directory
    model.save_pretrained("runs/mine", tokenizer=tokenizer)
    model = echoclip.load_model("runs/mine")

Built-in configs are the JSON files of ``echoclip.configs/models``; users register
theirs with :func:`add_model_config`. Nothing here downloads anything: models are
created with random weights or loaded from local files.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch

from echoclip.errors import ModelError
from echoclip.models.clip_model import EchoCLIP
from echoclip.models.config import ModelConfig, load_config_file
from echoclip.models.model_dir import (
    CONFIG_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    load_model_dir,
    load_safetensors,
    load_weights_checked,
    read_config,
    read_tokenizer,
)
from echoclip.registry import Registry

# configs added by add_model_config; they take precedence over built-in ones
_ADDED: Registry[ModelConfig] = Registry("model config", ModelError)


@functools.cache
def _builtin_files() -> dict[str, Any]:
    folder = files("echoclip.configs") / "models"
    return {f.name[: -len(".json")]: f for f in folder.iterdir() if f.name.endswith(".json")}


def list_models() -> list[str]:
    """Names of every known model config (built-in and added), sorted."""
    return sorted(set(_builtin_files()) | set(_ADDED))


def add_model_config(path: str | os.PathLike[str]) -> list[str]:
    """Register a JSON model config, or every ``*.json`` in a folder; returns the names added."""
    path = Path(path)
    paths = sorted(path.glob("*.json")) if path.is_dir() else [path]
    if not paths:
        raise ModelError(f"{path}: no *.json model configs in this folder")
    configs = [load_config_file(p) for p in paths]
    for cfg in configs:
        _ADDED[cfg.name] = cfg
    return [cfg.name for cfg in configs]


def get_model_config(name: str) -> ModelConfig:
    """The config registered under ``name``."""
    if name in _ADDED:
        return _ADDED[name]
    builtin = _builtin_files().get(name)
    if builtin is None:
        raise ModelError(f"unknown model {name!r}; known: {', '.join(list_models())}")
    with builtin.open() as f:
        try:
            return ModelConfig.from_dict(json.load(f), name=name)
        except (ModelError, TypeError) as e:
            raise ModelError(f"model config {name!r}: {e}") from None


def _resolve_config(name_or_config: str | os.PathLike[str] | ModelConfig | dict[str, Any]) -> ModelConfig:
    if isinstance(name_or_config, ModelConfig):
        return name_or_config
    if isinstance(name_or_config, dict):
        return ModelConfig.from_dict(name_or_config, name=name_or_config.get("name", "custom"))
    text = os.fspath(name_or_config)
    if text.endswith(".json"):
        return load_config_file(text)
    return get_model_config(text)


def _special_ids(tokenizer: Any) -> dict[str, int]:
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        eos = getattr(tokenizer, "eot_token_id", None)  # open_clip's name
    ids = {"pad_token_id": int(getattr(tokenizer, "pad_token_id", 0) or 0)}
    if eos is not None:
        ids["eos_token_id"] = int(eos)
    return ids


def create_model(
    name_or_config: str | os.PathLike[str] | ModelConfig | dict[str, Any],
    pretrained: str | os.PathLike[str] | None = None,
    *,
    tokenizer: Any = None,
    vocab_size: int | None = None,
    device: str | torch.device | None = None,
    **overrides: Any,
) -> EchoCLIP:
    """Build a model from a config name, JSON path, dict or :class:`ModelConfig`.

    Args:
        pretrained: ``None`` for random weights, or a model directory (or a
            ``.safetensors`` file) whose weights must match the config exactly.
        tokenizer: the tokenizer the model will read: the text tower takes its
            vocabulary size, special ids and number tokens (for value-aware embeddings).
            By default, the config's tokenizer kind untrained (``echo``) or open_clip's (``clip``).
        vocab_size: size the text vocabulary explicitly instead.
        overrides: config fields to change, e.g. ``embed_dim=256`` or ``video={"num_frames": 32}``.

    Example::

        model = create_model("echoclip-tiny", tokenizer=EchoTokenizer.load("runs/tok"))
    """
    cfg = _resolve_config(name_or_config)
    if overrides:
        cfg = cfg.replace(**overrides)
    # without a tokenizer, the text tower still needs the default one's special ids and numbers
    default = (
        tokenizer is None
        and cfg.tokenizer != "clip"
        and (cfg.text.eos_token_id is None or cfg.text.value_embeddings)
    )
    if default:
        tokenizer = _default_tokenizer(cfg)
    text_changes: dict[str, Any] = {}
    if tokenizer is not None:
        text_changes.update(_special_ids(tokenizer))
        if vocab_size is None:
            vocab_size = cfg.text.vocab_size if default else int(tokenizer.vocab_size)
        if vocab_size < tokenizer.vocab_size:
            raise ModelError(
                f"{cfg.name}: text vocab_size {vocab_size} is smaller than the tokenizer's {tokenizer.vocab_size}"
            )
    if vocab_size is not None:
        text_changes["vocab_size"] = int(vocab_size)
    if text_changes:
        cfg = cfg.replace(text=text_changes)

    model = EchoCLIP(cfg)
    model.tokenizer = tokenizer  # what save_pretrained writes as tokenizer.json
    if cfg.text.value_embeddings:
        values = getattr(tokenizer, "value_token_values", None)
        if values is None:
            raise ModelError(f"{cfg.name}: value-aware embeddings need a tokenizer with value_token_values()")
        model.set_token_values(values())
    if pretrained is not None:
        weights = Path(pretrained)
        if weights.is_dir():
            weights = weights / WEIGHTS_FILE
        if not weights.is_file():
            raise ModelError(f"{weights}: no such weights file")
        load_weights_checked(model, load_safetensors(weights), source=str(weights))
    if device is not None:
        model.to(device)
    return model


def create_model_and_transforms(
    name_or_config: str | os.PathLike[str] | ModelConfig | dict[str, Any],
    pretrained: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> tuple[EchoCLIP, Callable[[Any], torch.Tensor]]:
    """``(model, preprocess)``: ``preprocess(video)`` gives the ``[3, T, H, W]`` clip the model takes."""
    from echoclip.data.transforms import VideoTransform

    model = create_model(name_or_config, pretrained, **kwargs)
    return model, VideoTransform(model.preprocess_config)


def load_model(path: str | os.PathLike[str], device: str | torch.device | None = None) -> EchoCLIP:
    """Load a model directory written by ``save_pretrained`` (in eval mode)."""
    model = load_model_dir(path)
    return model.to(device) if device is not None else model


def get_tokenizer(name_or_dir: str | os.PathLike[str]) -> Any:
    """The tokenizer of a model directory (its ``tokenizer.json``) or of a named config.

    A named config gives its tokenizer kind: an untrained ``EchoTokenizer`` (lossless
    byte-level with value tokens) for ``echo``, open_clip's BPE tokenizer for ``clip``.
    """
    path = Path(name_or_dir)
    if path.is_dir():
        cfg = read_config(path) if (path / CONFIG_FILE).is_file() else None
        saved = read_tokenizer(path, cfg)
        if saved is not None:
            return saved
        if cfg is None:
            raise ModelError(f"{path}: not a model directory (no {CONFIG_FILE})")
        if cfg.tokenizer == "echo":
            raise ModelError(
                f"{path}: model directory has no {TOKENIZER_FILE} "
                "(save the model with save_pretrained(dir, tokenizer=...))"
            )
        return _default_tokenizer(cfg)
    return _default_tokenizer(get_model_config(os.fspath(name_or_dir)))


def _echo_tokenizer(cfg: ModelConfig) -> Any:
    from echoclip.tokenizer import EchoTokenizer

    return EchoTokenizer()


def _clip_tokenizer(cfg: ModelConfig) -> Any:
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=cfg.text.context_length)


def _echoclip_r_tokenizer(cfg: ModelConfig) -> Any:
    raise ModelError(
        f"{cfg.name}: the EchoCLIP-R tokenizer is built from its phrase file: "
        "echoclip.tokenizer.EchoClipRTokenizer(phrase_file)"
    )


def _bert_tokenizer(cfg: ModelConfig) -> Any:
    raise ModelError(
        f"{cfg.name}: a BERT tokenizer is built from its vocabulary: "
        "echoclip.models.echoprime_compat.WordPieceTokenizer(folder with vocab.txt)"
    )


# tokenizer kind -> the tokenizer a config of that kind reads before any training
TOKENIZERS: Registry[Callable[[ModelConfig], Any]] = Registry("tokenizer kind", ModelError)
TOKENIZERS["echo"] = _echo_tokenizer
TOKENIZERS["clip"] = _clip_tokenizer
TOKENIZERS["echoclip-r"] = _echoclip_r_tokenizer
TOKENIZERS["bert"] = _bert_tokenizer


def _default_tokenizer(cfg: ModelConfig) -> Any:
    return TOKENIZERS.get(cfg.tokenizer)(cfg)
