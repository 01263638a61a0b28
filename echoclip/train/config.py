"""Run configuration: a dataclass filled from a TOML recipe plus command-line overrides."""

from __future__ import annotations

import math
import re
import sys
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from echoclip.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs besides the model and the data.

    Budgets are in optimizer steps (``steps``) or epochs (``epochs``, used when
    ``steps`` is 0): steps are what a shared, noisy machine can promise.
    """

    out: str = "runs/clip"
    seed: int = 0
    epochs: int = 1
    steps: int = 0
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    warmup_steps: int = 50
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0
    # auto: bf16 autocast on a GPU and on a CPU with bf16 units, else fp32 (echoclip.precision)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    grad_checkpointing: bool = False
    compile: bool = False
    # under torchrun: "ddp" replicates the model on every process, "fsdp" shards parameters,
    # gradients and optimizer state across them (for towers too big to replicate)
    strategy: Literal["ddp", "fsdp"] = "ddp"
    num_workers: int = 0
    checkpoint_every: int = 200
    keep_last: int = 2
    log_every: int = 10
    val_every: int = 0
    tensorboard: bool = True
    progress: bool = True
    # contrastive objective
    loss: Literal["clip", "siglip"] = "clip"
    sentence_dropout: float = 0.3
    shuffle_sentences: bool = False
    # weight of a second term in which each sentence of a batch's reports picks its videos
    # (see sentence_to_video_loss); 0 trains on whole reports only
    sentence_loss_weight: float = 0.0
    # the term's sentences per step: a random subset of the batch's distinct ones (0: all)
    max_sentences: int = 0
    # weight of a third term in which each video ranks copies of its report's numeric
    # sentences with the numbers shifted (see value_order_loss); 0 = off
    value_loss_weight: float = 0.0
    # the term's numeric sentences per step, each with 6 shifted copies
    value_sentences: int = 32
    # weight of a term in which the same sentences pick, among the batch's reports, those
    # that hold them (see sentence_to_report_loss); 0 = off
    sentence_report_weight: float = 0.0
    # concept name -> regular expression (matched without case) of what reports state in
    # many phrasings, e.g. {"tavr": "\\btav[ri]\\b|transcatheter"}: a sentence naming a
    # concept is not a negative of the videos and reports that name it otherwise, and the
    # sentences naming one are taken first into max_sentences (ContrastiveObjective); empty = off
    concept_patterns: dict[str, str] = field(default_factory=dict)
    skip_empty_reports: bool = True
    # a manifest column of per-study sampling weights (e.g. from mention_weights): an
    # epoch draws studies with replacement in proportion to them
    sample_weight_column: str | None = None
    context_length: int = 77
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"learning rate must be a positive finite number, got {self.lr!r}")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {self.batch_size}")
        if self.grad_accum < 1:
            raise ConfigError(f"grad_accum must be at least 1, got {self.grad_accum}")
        if self.steps < 0 or self.epochs < 0 or (self.steps == 0 and self.epochs == 0):
            raise ConfigError("set a positive number of steps or epochs")
        if not 0.0 <= self.sentence_dropout < 1.0:
            raise ConfigError(f"sentence_dropout must be in [0, 1), got {self.sentence_dropout}")
        if not (math.isfinite(self.sentence_loss_weight) and self.sentence_loss_weight >= 0):
            raise ConfigError(
                f"sentence_loss_weight must be a finite number >= 0, got {self.sentence_loss_weight}"
            )
        if self.max_sentences < 0:
            raise ConfigError(f"max_sentences must be >= 0 (0: all), got {self.max_sentences}")
        if not (math.isfinite(self.value_loss_weight) and self.value_loss_weight >= 0):
            raise ConfigError(f"value_loss_weight must be a finite number >= 0, got {self.value_loss_weight}")
        if not (math.isfinite(self.sentence_report_weight) and self.sentence_report_weight >= 0):
            raise ConfigError(
                f"sentence_report_weight must be a finite number >= 0, got {self.sentence_report_weight}"
            )
        for name, pattern in self.concept_patterns.items():
            try:
                re.compile(pattern)
            except (re.error, TypeError) as e:
                raise ConfigError(
                    f"concept_patterns[{name!r}]: not a regular expression ({pattern!r}: {e})"
                ) from None
        if self.value_sentences < 1:
            raise ConfigError(f"value_sentences must be at least 1, got {self.value_sentences}")
        if self.loss not in ("clip", "siglip"):
            raise ConfigError(f"unknown loss {self.loss!r}; known: ['clip', 'siglip']")
        if self.strategy not in ("ddp", "fsdp"):
            raise ConfigError(f"unknown strategy {self.strategy!r}; known: ['ddp', 'fsdp']")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"unknown precision {self.precision!r}; known: ['auto', 'bf16', 'fp32']")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def updated(self, **overrides: Any) -> TrainConfig:
        """A copy with ``overrides`` applied; ``None`` values are ignored (unset CLI flags)."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"unknown training options {unknown}")
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown training options {unknown}; known: {sorted(known)}")
        d = dict(d)
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        return cls(**d)


def load_recipe(path: str | Path) -> dict[str, Any]:
    """Read a TOML recipe: a ``[train]`` table of :class:`TrainConfig` fields, plus free tables
    (``[model]``, ``[data]``) that the command interprets."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: recipe file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
