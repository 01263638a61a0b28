"""Settings of the generic training loop, filled from a TOML recipe plus command-line overrides."""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar

from echoclip.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

C = TypeVar("C", bound="LoopConfig")


@dataclass(frozen=True)
class LoopConfig:
    """Everything the :class:`~echoclip.loop.Trainer` needs besides the model, the objective and the data.

    Budgets are in optimizer steps (``steps``) or epochs (``epochs``, used when
    ``steps`` is 0): steps are what a shared, noisy machine can promise. Objectives
    with settings of their own subclass this (``echoclip.train.TrainConfig``).
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
        if self.strategy not in ("ddp", "fsdp"):
            raise ConfigError(f"unknown strategy {self.strategy!r}; known: ['ddp', 'fsdp']")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"unknown precision {self.precision!r}; known: ['auto', 'bf16', 'fp32']")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def updated(self: C, **overrides: Any) -> C:
        """A copy with ``overrides`` applied; ``None`` values are ignored (unset CLI flags)."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"unknown training options {unknown}")
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})

    @classmethod
    def from_dict(cls: type[C], d: dict[str, Any]) -> C:
        """The config of a plain dict (a recipe's ``[train]`` table); unknown keys are an error."""
        return cls(**config_kwargs(cls, d, "training options"))


def config_kwargs(cls: type, d: dict[str, Any], what: str) -> dict[str, Any]:
    """``d`` checked against the fields of dataclass ``cls``, with tuples and nested configs rebuilt."""
    by_name = {f.name: f for f in fields(cls)}
    unknown = sorted(set(d) - set(by_name))
    if unknown:
        raise ConfigError(f"unknown {what} {unknown}; known: {sorted(by_name)}")
    out = dict(d)
    for name, value in d.items():
        default = by_name[name].default
        nested = by_name[name].default_factory
        if isinstance(default, tuple) and isinstance(value, list):
            out[name] = tuple(value)
        elif (
            nested is not dataclasses.MISSING and dataclasses.is_dataclass(nested) and isinstance(value, dict)
        ):
            out[name] = nested.from_dict(value)  # type: ignore[attr-defined]
    return out


def load_recipe(path: str | Path) -> dict[str, Any]:
    """Read a TOML recipe: a ``[train]`` table of config fields, plus free tables
    (``[model]``, ``[demo]``, ``[pretrain]``) that the command interprets.

    ``path`` is a file, or the name of a recipe shipped in ``configs/recipes/``
    (``"demo-small"`` reads ``demo-small.toml``): ``list_recipes()`` names them. A
    recipe with ``extends = "other"`` holds only what it changes in ``other`` (a shipped
    name, or a file next to it), table by table.
    """
    file = Path(path)
    shipped = not file.is_file() and file.suffix != ".toml" and len(file.parts) == 1
    recipe = _read_shipped(str(path)) if shipped else _read_file(file)
    base = recipe.pop("extends", None)
    if base is None:
        return recipe
    sibling = file.parent / f"{base}.toml"
    return merge_recipes(load_recipe(sibling if not shipped and sibling.is_file() else str(base)), recipe)


def _read_shipped(name: str) -> dict[str, Any]:
    shipped = _shipped_recipes().get(name)
    if shipped is None:
        raise ConfigError(f"{name}: no such recipe file or shipped recipe; shipped: {list_recipes()}")
    return tomllib.loads(shipped.read_text(encoding="utf-8"))


def _read_file(file: Path) -> dict[str, Any]:
    try:
        with open(file, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{file}: recipe file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{file}: not valid TOML ({e})") from None


def list_recipes() -> list[str]:
    """Names of the recipes shipped in ``configs/recipes/``."""
    return sorted(_shipped_recipes())


def _shipped_recipes() -> dict[str, Any]:
    from importlib.resources import files

    folder = files("echoclip.configs") / "recipes"
    return {f.name.removesuffix(".toml"): f for f in folder.iterdir() if f.name.endswith(".toml")}


def merge_recipes(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``, table by table (a key of ``top`` wins; nested tables merge)."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_recipes(out[key], value)
        else:
            out[key] = value
    return out
