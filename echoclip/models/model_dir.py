"""The model directory, echoclip's unit of exchange::

    config.json         the ModelConfig, and "format": "echoclip-model"
    model.safetensors   the weights (never a pickle)
    preprocess.json     the PreprocessConfig of the inputs
    tokenizer.json      the tokenizer the model reads (loadable by transformers'
                        PreTrainedTokenizerFast); models using open_clip's CLIP
                        tokenizer need none
    ood.safetensors     optional: training video embeddings and a threshold that say
                        when an input is unlike the training data (models.ood)

A directory is written next to its destination and renamed into place, so a reader
never sees half a model; an existing directory is replaced only once the new one is
complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from echoclip import atomic, formats
from echoclip.data.transforms import PreprocessConfig
from echoclip.errors import ModelError
from echoclip.models.config import ModelConfig

if TYPE_CHECKING:
    from echoclip.models.clip_model import EchoCLIP

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PREPROCESS_FILE = "preprocess.json"
TOKENIZER_FILE = "tokenizer.json"
VOCAB_FILE = "vocab.txt"  # a BERT WordPiece vocabulary (EchoPrime's text tower)


def portable_config(model: EchoCLIP) -> ModelConfig:
    """The config to save: an ``hf`` text tower loaded from a folder is recorded by its
    architecture, so the directory does not depend on that folder any more."""
    cfg = model.config
    if cfg.text.kind == "hf" and cfg.text.hf_path is not None:
        arch = model.text_tower.model.config.to_dict()
        cfg = replace(cfg, text=replace(cfg.text, hf_path=None, hf_config=arch))
    return cfg


def save_model_dir(model: EchoCLIP, path: str | os.PathLike[str], tokenizer: Any = None) -> Path:
    """Write ``model`` and its tokenizer as a model directory at ``path``, atomically.

    ``tokenizer`` defaults to the one the model was created or loaded with
    (``model.tokenizer``); a model whose config reads a trained tokenizer (``echo``)
    and has none is a :class:`ModelError`, never a directory that cannot be loaded.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ModelError(f"{path}: exists and is not a directory")
    if tokenizer is None:
        tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None and model.config.tokenizer != "clip":
        raise ModelError(
            f"{path}: model {model.config.name!r} reads a {model.config.tokenizer!r} tokenizer but has none to "
            "save; pass save_pretrained(dir, tokenizer=...) or create the model with tokenizer="
        )
    with atomic.writing_dir(path, unique=True) as tmp:
        _write_json(tmp / CONFIG_FILE, {"format": formats.MODEL, **portable_config(model).to_dict()})
        _write_json(tmp / PREPROCESS_FILE, model.preprocess_config.to_dict())
        _save_weights(model.state_dict(), tmp / WEIGHTS_FILE)
        if tokenizer is not None:
            _save_tokenizer(tokenizer, tmp, model.config)
        _save_ood(model, tmp)
    return path


def read_config(path: str | os.PathLike[str]) -> ModelConfig:
    """The :class:`ModelConfig` of a model directory."""
    data = _read_json(Path(path) / CONFIG_FILE)
    fmt = data.pop("format", formats.MODEL)
    if fmt != formats.MODEL:
        raise ModelError(f"{Path(path) / CONFIG_FILE}: format {fmt!r} is not {formats.MODEL!r}")
    return ModelConfig.from_dict(data)


def load_model_dir(path: str | os.PathLike[str]) -> EchoCLIP:
    """Build the model a directory describes and load its weights (in eval mode)."""
    from echoclip.models.clip_model import EchoCLIP

    path = Path(path)
    if not path.is_dir():
        raise ModelError(f"{path}: no such model directory")
    for name in (CONFIG_FILE, WEIGHTS_FILE, PREPROCESS_FILE):
        if not (path / name).is_file():
            raise ModelError(f"{path}: model directory has no {name}")
    try:
        config = read_config(path)
        preprocess = PreprocessConfig.from_dict(_read_json(path / PREPROCESS_FILE))
    except (TypeError, ValueError) as e:
        raise ModelError(f"{path}: {e}") from None
    model = EchoCLIP(config, preprocess)
    load_weights_checked(model, load_safetensors(path / WEIGHTS_FILE), source=str(path / WEIGHTS_FILE))
    saved = read_tokenizer(path, config)
    if saved is not None:
        model.tokenizer = saved
    from echoclip.models.ood import load_ood

    model.ood_reference = load_ood(path, model)
    return model.eval()


def read_tokenizer(path: Path, config: ModelConfig | None) -> Any | None:
    """The tokenizer saved in a model directory (or a tokenizer folder, ``config`` ``None``),
    or ``None`` when none is: a BERT vocabulary (``vocab.txt``) for a ``bert`` config, else
    the echo tokenizer's ``tokenizer.json``."""
    if config is not None and config.tokenizer == "bert" and (path / VOCAB_FILE).is_file():
        from echoclip.models.echoprime_compat import WordPieceTokenizer

        return WordPieceTokenizer(path, context_length=config.text.context_length)
    if (path / TOKENIZER_FILE).is_file():
        from echoclip.tokenizer import EchoTokenizer

        return EchoTokenizer.load(path / TOKENIZER_FILE)
    return None


def load_safetensors(file: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(file), device="cpu")
    except (SafetensorError, OSError) as e:
        raise ModelError(f"{file}: cannot read weights ({e})") from None


def load_torch_weights(file: Path) -> Mapping[str, Any]:
    """What ``torch.save`` wrote (a state dict, or a training checkpoint holding one), read with
    ``weights_only=True``: tensors and plain containers only, never arbitrary pickled objects."""
    try:
        state_dict = torch.load(file, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelError(f"{file}: no such weights file") from None
    except Exception as e:  # a corrupt file, or one holding more than tensors
        cause = (str(e).strip().splitlines() or [""])[0]
        raise ModelError(f"{file}: cannot read weights safely ({type(e).__name__}: {cause})") from None
    if not isinstance(state_dict, Mapping):
        raise ModelError(f"{file}: holds a {type(state_dict).__name__}, not a state dict")
    return state_dict


def load_weights_checked(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """``model.load_state_dict(state_dict)``, failing with every missing, unexpected and mis-shaped key named."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k} {list(state_dict[k].shape)} vs {list(expected[k].shape)}"
        for k in expected
        if k in state_dict and state_dict[k].shape != expected[k].shape
    ]
    problems = [
        f"{label} ({len(keys)}): {_preview(keys)}"
        for label, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches (checkpoint vs model)", mismatched),
        )
        if keys
    ]
    if problems:
        name = getattr(getattr(model, "config", None), "name", type(model).__name__)
        raise ModelError(f"{source}: weights do not match the model {name!r}: " + "; ".join(problems))
    model.load_state_dict(state_dict, strict=True)


def _preview(keys: list[str], n: int = 8) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", ... and {len(keys) - n} more" if len(keys) > n else "")


def _save_weights(state_dict: Mapping[str, torch.Tensor], file: Path) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    save_file(tensors, str(file), metadata={"format": "pt"})


def _save_tokenizer(tokenizer: Any, folder: Path, config: ModelConfig) -> None:
    save = getattr(tokenizer, "save", None)
    if callable(save):
        save(folder)
        if not (folder / TOKENIZER_FILE).is_file():
            raise ModelError(f"{type(tokenizer).__name__}.save did not write {TOKENIZER_FILE}")
    elif config.tokenizer != "clip":
        # open_clip's tokenizer is fixed and named by the config; anything else must be saved
        raise ModelError(f"cannot save a tokenizer of type {type(tokenizer).__name__} (it has no save(dir))")


def _save_ood(model: EchoCLIP, folder: Path) -> None:
    """The model's OOD reference, when it has one fitted on these very weights (training
    after fitting makes it stale: it is then left out, not saved to mislead)."""
    reference = getattr(model, "ood_reference", None)
    if reference is None:
        return
    from echoclip.models.ood import OOD_FILE, weights_fingerprint

    if reference.fingerprint != weights_fingerprint(model):
        log.warning("the model's OOD reference was fitted on other weights; not saved (refit it)")
        return
    reference.save(folder / OOD_FILE)


def _write_json(file: Path, data: Any) -> None:
    file.write_text(json.dumps(data, indent=2) + "\n")


def _read_json(file: Path) -> Any:
    try:
        return json.loads(file.read_text())
    except FileNotFoundError:
        raise ModelError(f"{file.parent}: model directory has no {file.name}") from None
    except json.JSONDecodeError as e:
        raise ModelError(f"{file}: not valid JSON ({e})") from None


# the files of a model directory that decide its embeddings
IDENTITY_FILES = ("config.json", "model.safetensors", "tokenizer.json", "preprocess.json")


def model_identity(model_dir: str | os.PathLike[str]) -> dict[str, str]:
    """``{"name", "hash"}`` of a model directory: the config's name and a SHA-256 over the
    files that decide its embeddings (config, weights, tokenizer, preprocessing). Indexes
    record it so that they refuse queries embedded by another model."""
    folder = Path(model_dir)
    if not folder.is_dir():
        raise ModelError(f"{folder}: no such model directory")
    digest = hashlib.sha256()
    for name in IDENTITY_FILES:
        file = folder / name
        if not file.is_file():
            continue
        digest.update(name.encode())
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"{folder}: cannot read config.json ({e})") from None
    return {"name": str(config.get("name") or folder.name), "hash": digest.hexdigest()}
