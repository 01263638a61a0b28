"""Loading open_clip checkpoints in the published EchoCLIP format.

EchoCLIP and EchoCLIP-R are distributed as open_clip hub folders::

    open_clip_config.json          {"model_cfg": {embed_dim, vision_cfg, text_cfg}, "preprocess_cfg": {mean, std}}
    open_clip_model.safetensors    and/or
    open_clip_pytorch_model.bin    a plain state dict

:func:`load_open_clip_checkpoint` turns such a folder into an :class:`EchoCLIP` with
a ``frames`` video tower (the open_clip image tower on every frame, mean over frames)
and a ``clip`` text tower, whose embeddings equal open_clip's ``encode_image`` /
``encode_text`` for the same weights. Only local files are read; the ``.bin`` is
read with ``torch.load(weights_only=True)``, never unpickled freely.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from echoclip.errors import ModelError
from echoclip.models.clip_model import EchoCLIP
from echoclip.models.config import ModelConfig, TextTowerConfig, VideoTowerConfig
from echoclip.models.model_dir import load_safetensors, load_torch_weights, load_weights_checked

CONFIG_FILE = "open_clip_config.json"
SAFETENSORS_FILE = "open_clip_model.safetensors"
PICKLE_FILE = "open_clip_pytorch_model.bin"

# open_clip text_cfg keys the ``clip`` text tower reproduces; any other key must keep its default
_TEXT_KEYS = {
    "context_length",
    "vocab_size",
    "width",
    "heads",
    "layers",
    "mlp_ratio",
    "proj_bias",
    "pool_type",
    "eos_id",
    "pad_id",
}
# keys that describe the tokenizer, not the tower: a checkpoint setting them needs its own tokenizer
_TOKENIZER_KEYS = {"hf_tokenizer_name", "tokenizer_mode", "tokenizer_kwargs"}
# text attributes of open_clip's CLIP class, which keeps the text tower at the top level
_CLIP_TEXT_PREFIXES = (
    "token_embedding.",
    "positional_embedding",
    "transformer.",
    "ln_final.",
    "text_projection",
)
CLIP_VOCAB_SIZE = 49408


def load_open_clip_checkpoint(
    folder: str | os.PathLike[str],
    *,
    num_frames: int = 16,
    fps: float | None = None,
    phrase_file: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
) -> tuple[EchoCLIP, Any]:
    """``(model, tokenizer)`` from a local open_clip folder (the published EchoCLIP format).

    Args:
        num_frames, fps: the clips the video tower will average over (EchoCLIP's video
            embedding is the mean of its frame embeddings, for any number of frames).
        phrase_file: EchoCLIP-R's template phrase file; the tokenizer is then
            :class:`echoclip.tokenizer.EchoClipRTokenizer` instead of open_clip's CLIP tokenizer.

    Example::

        model, tokenizer = load_open_clip_checkpoint("echo-clip")
        model, tokenizer = load_open_clip_checkpoint("echo-clip-r", phrase_file="template_vocab.txt")
        v = model.encode_video(clip[None], normalize=True)
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"{folder}: no such open_clip checkpoint folder")
    config_path = folder / CONFIG_FILE
    try:
        raw = json.loads(config_path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{folder}: open_clip checkpoint folder has no {CONFIG_FILE}") from None
    except json.JSONDecodeError as e:
        raise ModelError(f"{config_path}: not valid JSON ({e})") from None
    kind = "clip" if phrase_file is None else "echoclip-r"
    config = config_from_open_clip(
        raw,
        name=f"open_clip:{folder.name}",
        num_frames=num_frames,
        fps=fps,
        tokenizer=kind,
        source=str(config_path),
    )
    if phrase_file is None:
        from open_clip.tokenizer import SimpleTokenizer

        tokenizer: Any = SimpleTokenizer(context_length=config.text.context_length)
    else:
        from echoclip.tokenizer import EchoClipRTokenizer

        tokenizer = EchoClipRTokenizer(phrase_file)
        if tokenizer.vocab_size > config.text.vocab_size:
            raise ModelError(
                f"{phrase_file}: the phrase file gives {tokenizer.vocab_size} token ids but the checkpoint's "
                f"text vocabulary has {config.text.vocab_size}: not the phrase file of these weights"
            )
    model = EchoCLIP(config)
    weights_file, state_dict = _read_weights(folder)
    load_weights_checked(model, convert_state_dict(state_dict), source=str(weights_file))
    if device is not None:
        model.to(device)
    return model.eval(), tokenizer


def config_from_open_clip(
    raw: Mapping[str, Any],
    name: str,
    num_frames: int = 16,
    fps: float | None = None,
    tokenizer: str = "clip",
    source: str = CONFIG_FILE,
) -> ModelConfig:
    """The :class:`ModelConfig` equivalent to an open_clip hub config (``model_cfg`` + ``preprocess_cfg``)."""
    from open_clip.model import CLIPTextCfg

    model_cfg = dict(raw.get("model_cfg", raw))
    preprocess_cfg = dict(raw.get("preprocess_cfg", {}))
    for key in ("embed_dim", "vision_cfg", "text_cfg"):
        if key not in model_cfg:
            raise ModelError(f"{source}: model_cfg has no {key!r}")
    if model_cfg.get("custom_text") and model_cfg["text_cfg"].get("hf_model_name"):
        raise ModelError(f"{source}: transformers text towers of open_clip are not supported")
    quick_gelu = bool(model_cfg.get("quick_gelu", False))

    vision_cfg = dict(model_cfg["vision_cfg"])
    image_size = vision_cfg.get("image_size", 224)
    if isinstance(image_size, (list, tuple)):
        if len(set(image_size)) != 1:
            raise ModelError(f"{source}: only square images are supported, got image_size {image_size}")
        image_size = int(image_size[0])
    vision_cfg["image_size"] = int(image_size)

    text_cfg = dict(model_cfg["text_cfg"])
    defaults = asdict(CLIPTextCfg())
    unsupported = sorted(
        k
        for k, v in text_cfg.items()
        if k not in _TEXT_KEYS | _TOKENIZER_KEYS and v != defaults.get(k, object())
    )
    if unsupported:
        raise ModelError(f"{source}: text_cfg settings not supported by the clip text tower: {unsupported}")
    pool = text_cfg.get("pool_type", "argmax")
    if pool not in ("argmax", "eos"):
        raise ModelError(f"{source}: text pool_type {pool!r} is not supported (argmax or eos)")
    vocab_size = int(text_cfg.get("vocab_size", defaults["vocab_size"]))
    if tokenizer == "clip" and (
        vocab_size != CLIP_VOCAB_SIZE or any(text_cfg.get(k) for k in _TOKENIZER_KEYS)
    ):
        raise ModelError(
            f"{source}: the text tower does not read open_clip's CLIP tokenizer (vocab size {vocab_size}); "
            "for EchoCLIP-R pass its template phrase file (phrase_file=)"
        )

    mean = preprocess_cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))
    std = preprocess_cfg.get("std", (0.26862954, 0.26130258, 0.27577711))
    bias = model_cfg.get("init_logit_bias")
    return ModelConfig(
        name=name,
        embed_dim=int(model_cfg["embed_dim"]),
        tokenizer=tokenizer,
        logit_scale_init=math.log(1 / 0.07),
        learn_logit_scale=True,
        logit_bias_init=None if bias is None else float(bias),
        preprocess={"fps": fps, "mean": [float(v) for v in mean], "std": [float(v) for v in std]},
        video=VideoTowerConfig(
            kind="frames",
            image_size=vision_cfg["image_size"],
            num_frames=num_frames,
            backbone="open_clip",
            backbone_kwargs={"vision_cfg": vision_cfg, "quick_gelu": quick_gelu},
            aggregation="mean",
            projection=False,
        ),
        text=TextTowerConfig(
            kind="clip",
            context_length=int(text_cfg.get("context_length", defaults["context_length"])),
            vocab_size=vocab_size,
            width=int(text_cfg.get("width", defaults["width"])),
            heads=int(text_cfg.get("heads", defaults["heads"])),
            layers=int(text_cfg.get("layers", defaults["layers"])),
            mlp_ratio=float(text_cfg.get("mlp_ratio", defaults["mlp_ratio"])),
            quick_gelu=quick_gelu,
            proj_bias=bool(text_cfg.get("proj_bias", False)),
            pool=pool,
            eos_token_id=int(text_cfg.get("eos_id", defaults["eos_id"])) if pool == "eos" else None,
            pad_token_id=int(text_cfg.get("pad_id", defaults["pad_id"])),
        ),
    )


def convert_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename open_clip ``CLIP`` / ``CustomTextCLIP`` keys to ``EchoCLIP`` keys."""
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], Mapping):
        state_dict = state_dict["state_dict"]  # a training checkpoint of open_clip
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        if key == "attn_mask" or key.endswith(".attn_mask"):
            continue  # a constant causal mask, rebuilt by the tower
        if key.startswith("visual."):
            out["video_tower.backbone." + key.removeprefix("visual.")] = value
        elif key.startswith("text."):
            out["text_tower.clip." + key.removeprefix("text.")] = value
        elif key.startswith(_CLIP_TEXT_PREFIXES):
            out["text_tower.clip." + key] = value
        else:
            out[key] = value  # logit_scale, logit_bias; anything else is reported as unexpected
    return out


def _read_weights(folder: Path) -> tuple[Path, Mapping[str, torch.Tensor]]:
    safe = folder / SAFETENSORS_FILE
    if safe.is_file():
        return safe, load_safetensors(safe)
    pickle = folder / PICKLE_FILE
    if pickle.is_file():
        return pickle, load_torch_weights(pickle)
    raise ModelError(
        f"{folder}: open_clip checkpoint folder has neither {SAFETENSORS_FILE} nor {PICKLE_FILE}"
    )
