"""The fine-tuning model - a video tower whose tokens a head reads - and the directory it is
saved in (its encoder comes from :func:`echoclip.models.encoders.load_video_encoder`).

A fine-tuned model directory holds ``model.safetensors`` (encoder and head) and
``finetune.json`` (the tower config, the head, the targets and their scaling, the
preprocessing), which is all :func:`load_finetuned` needs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from echoclip import atomic, formats
from echoclip.data.transforms import PreprocessConfig
from echoclip.errors import ModelError
from echoclip.finetune.heads import Grid, create_head, token_grid
from echoclip.loop.optim import NO_DECAY_NAMES
from echoclip.models.features import tokens

FINETUNE_INFO = formats.FORMAT_FILES[formats.FINETUNED]
WEIGHTS = "model.safetensors"
FORMAT = formats.FINETUNED
KINDS = ("regression", "binary", "categorical")


# ---------------------------------------------------------------------------------------
# the model


def _probe_tower(encoder: nn.Module) -> tuple[int, Grid, set[str]]:
    """Token width, token grid and the names of the parameters the tokens depend on.

    One clip of zeros goes forward and backward in eval mode: towers compute more
    than their tokens (pooling, projection), and those parts must not be trained
    (they get no gradient, which distributed training does not allow).
    """
    cfg = encoder.config  # type: ignore[attr-defined]
    was_training = encoder.training
    encoder.eval()
    x = torch.zeros(1, 3, cfg.num_frames, cfg.image_size, cfg.image_size, device=_device(encoder))
    with torch.enable_grad():
        out = tokens(encoder, x)
        out.float().sum().backward()
    used = {n for n, p in encoder.named_parameters() if p.grad is not None}
    encoder.zero_grad(set_to_none=True)
    encoder.train(was_training)
    return int(out.shape[-1]), token_grid(encoder, int(out.shape[1])), used


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def layer_depths(module: nn.Module, names: Iterable[str]) -> dict[str, int]:
    """Depth of each named parameter in blocks from the input: ``0`` for the first block.

    A block is the part of the name up to its first number (``model.encoder.layer.3``,
    ``backbone.blocks.4``), else the module holding the parameter; a block of only
    1-d tensors (a norm after a convolution) belongs to the block before it.
    """
    params = dict(module.named_parameters())
    wanted = [n for n in params if n in set(names)]

    def block(name: str) -> str:
        parts = name.split(".")
        first = next((i for i, p in enumerate(parts[:-1]) if p.isdigit()), None)
        return ".".join(parts[: first + 1] if first is not None else parts[:-1])

    has_matrix: dict[str, bool] = {}
    for n in wanted:
        has_matrix[block(n)] = has_matrix.get(block(n), False) or params[n].ndim >= 2
    depths: dict[str, int] = {}
    depth, last = -1, None
    for n in wanted:
        b = block(n)
        if b != last and (has_matrix[b] or depth < 0):
            depth += 1
        last = b
        depths[n] = depth
    return depths


class FineTuneModel(nn.Module):
    """A video tower and a head: ``[B, 3, T, H, W] -> [B, outputs]``.

    ``forward`` gives what the loss reads (standardised values for regression, logits
    for binary and categorical targets); :meth:`predict` gives values in the targets'
    units or probabilities (categorical: one per class, summing to 1). A frozen encoder stays in eval mode (its batch norm statistics do
    not drift) and runs without gradients.

    Args:
        encoder: a video tower (``forward_features`` gives tokens or frame features).
        head: a name of :data:`echoclip.finetune.heads.HEADS`.
        targets: names of the outputs (``("ef", "esv", "edv")``, finding columns, or the
            classes of a categorical target: ``("A2C", "A4C", "PLAX", "PSAX")``).
        kind: ``regression``, ``binary`` or ``categorical``.
        freeze: keep the encoder's weights fixed.
        layer_decay: learning rate of an encoder block ``d`` blocks below the head is
            ``lr * layer_decay**d`` (unfrozen encoder only; ``None``: the same everywhere).
        target_mean, target_std: scaling of regression targets.
    """

    def __init__(
        self,
        encoder: nn.Module,
        head: str = "stfnet",
        targets: Sequence[str] = ("ef",),
        kind: str = "regression",
        *,
        head_options: Mapping[str, Any] | None = None,
        freeze: bool = False,
        layer_decay: float | None = None,
        target_mean: Sequence[float] | None = None,
        target_std: Sequence[float] | None = None,
        preprocess: PreprocessConfig | None = None,
        grid: Grid | None = None,
        width: int | None = None,
    ) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ModelError(f"unknown output kind {kind!r}; known: {list(KINDS)}")
        if layer_decay is not None and not 0 < layer_decay <= 1:
            raise ModelError(f"layer_decay must be in (0, 1], got {layer_decay}")
        self.encoder = encoder
        if grid is None or width is None:
            width, grid, used = _probe_tower(encoder)
        else:
            used = {n for n, _ in encoder.named_parameters()}
        self.width, self.grid = int(width), tuple(int(g) for g in grid)
        self.head_name, self.head_options = head, dict(head_options or {})
        self.head = create_head(head, self.width, self.grid, len(targets), **self.head_options)
        self.targets, self.kind = tuple(targets), kind
        self.frozen, self.layer_decay = bool(freeze), layer_decay
        self.preprocess_config = preprocess or PreprocessConfig(
            image_size=encoder.config.image_size,  # type: ignore[attr-defined]
            num_frames=encoder.config.num_frames,  # type: ignore[attr-defined]
        )
        k = len(self.targets)
        mean = torch.tensor(list(target_mean) if target_mean is not None else [0.0] * k, dtype=torch.float32)
        std = torch.tensor(list(target_std) if target_std is not None else [1.0] * k, dtype=torch.float32)
        self.register_buffer("target_mean", mean)
        self.register_buffer("target_std", std)
        for name, p in encoder.named_parameters():
            p.requires_grad_(not self.frozen and name in used)
        self.train()

    def train(self, mode: bool = True) -> FineTuneModel:
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's tokens ``[B, N, C]``."""
        if self.frozen:
            with torch.no_grad():
                return tokens(self.encoder, x)
        return tokens(self.encoder, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def to_outputs(self, raw: torch.Tensor) -> torch.Tensor:
        """Head outputs in the targets' units (regression) or as probabilities (binary, categorical)."""
        raw = raw.float()
        if self.kind == "binary":
            return torch.sigmoid(raw)
        if self.kind == "categorical":
            return raw.softmax(dim=-1)
        return raw * self.target_std + self.target_mean

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, outputs]`` in the targets' units, or probabilities."""
        return self.to_outputs(self(x))

    def optimizer_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW parameter groups: no decay on norms and biases, and layer-wise learning rates.

        Each group's ``lr_scale`` multiplies the run's learning rate; the head's
        groups come first, so the logged learning rate is the head's.
        """
        depths = layer_depths(
            self.encoder, [n for n, p in self.encoder.named_parameters() if p.requires_grad]
        )
        top = max(depths.values(), default=-1) + 1
        groups: dict[tuple[float, float], list[nn.Parameter]] = {}
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            scale = 1.0
            if name.startswith("encoder.") and self.layer_decay is not None:
                scale = self.layer_decay ** (top - depths[name.removeprefix("encoder.")])
            decay = 0.0 if p.ndim < 2 or any(key in name for key in NO_DECAY_NAMES) else weight_decay
            groups.setdefault((scale, decay), []).append(p)
        ordered = sorted(groups.items(), key=lambda item: -item[0][0])
        return [{"params": ps, "weight_decay": wd, "lr_scale": s} for (s, wd), ps in ordered]

    def info(self) -> dict[str, Any]:
        """What :func:`load_finetuned` needs besides the weights (``finetune.json``)."""
        config = getattr(self.encoder, "config", None)
        return {
            "format": FORMAT,
            "version": 1,
            "head": self.head_name,
            "head_options": self.head_options,
            "targets": list(self.targets),
            "kind": self.kind,
            "freeze": self.frozen,
            "layer_decay": self.layer_decay,
            "grid": list(self.grid),
            "width": self.width,
            "video": asdict(config) if config is not None else None,
            "embed_dim": getattr(self.encoder, "output_dim", None),
            "preprocess": self.preprocess_config.to_dict(),
        }


# ---------------------------------------------------------------------------------------
# the directory


def save_finetuned(model: FineTuneModel, directory: str | os.PathLike[str], **extra: Any) -> Path:
    """Write ``model.safetensors`` and ``finetune.json`` (plus ``extra`` fields) into ``directory``."""
    from safetensors.torch import save_model

    directory = Path(directory)
    with atomic.writing(directory / WEIGHTS) as tmp:
        save_model(model, str(tmp))
    atomic.write_text(
        directory / FINETUNE_INFO, json.dumps({**model.info(), **extra}, indent=2, default=str) + "\n"
    )
    return directory


def read_finetune_info(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``finetune.json`` of a fine-tuned model directory."""
    file = Path(directory) / FINETUNE_INFO
    if not file.is_file():
        raise ModelError(f"{directory}: not a fine-tuned model (no {FINETUNE_INFO})")
    try:
        info = json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise ModelError(f"{file}: not valid JSON ({e})") from None
    if info.get("format") != FORMAT:
        raise ModelError(f"{file}: format {info.get('format')!r} is not {FORMAT!r}")
    return info


def load_finetuned(directory: str | os.PathLike[str]) -> FineTuneModel:
    """A fine-tuned model from its directory (the ``final/`` of a run), in eval mode.

    Example::

        model = load_finetuned("runs/ft/final")
        ef = model.predict(VideoTransform(model.preprocess_config)(video)[None])   # [1, 1]
    """
    from echoclip.models.config import VideoTowerConfig
    from echoclip.models.model_dir import load_safetensors, load_weights_checked
    from echoclip.models.video_towers import build_video_tower

    directory = Path(directory)
    info = read_finetune_info(directory)
    try:
        encoder = build_video_tower(VideoTowerConfig(**info["video"]), int(info["embed_dim"]))
        model = FineTuneModel(
            encoder,
            info["head"],
            info["targets"],
            info["kind"],
            head_options=info.get("head_options"),
            freeze=bool(info.get("freeze")),
            layer_decay=info.get("layer_decay"),
            preprocess=PreprocessConfig.from_dict(info["preprocess"]),
            grid=tuple(info["grid"]),
            width=int(info["width"]),
        )
    except (KeyError, TypeError) as e:
        raise ModelError(f"{directory / FINETUNE_INFO}: incomplete ({e})") from None
    load_weights_checked(model, load_safetensors(directory / WEIGHTS), source=str(directory / WEIGHTS))
    return model.eval()


__all__ = [
    "FineTuneModel",
    "layer_depths",
    "load_finetuned",
    "read_finetune_info",
    "save_finetuned",
]
