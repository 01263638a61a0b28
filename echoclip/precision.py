"""Which number format to compute in: ``fp32``, ``bf16`` autocast, or ``auto``.

``auto`` picks bf16 where the hardware computes it natively: on a GPU, and on a CPU
with AVX-512 BF16 or AMX units, where bf16 autocast makes the tiny tower's training step
markedly faster (docs/experiments.md). Elsewhere the CPU emulates bf16 and its
convolutions run many times slower than fp32, so ``auto`` stays in fp32 there.
"""

from __future__ import annotations

import contextlib
from typing import Literal

import torch

PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX tiles)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def resolve_precision(precision: str, device: torch.device | str = "cpu") -> Literal["fp32", "bf16"]:
    """``auto`` made concrete for ``device``; ``fp32`` and ``bf16`` pass through."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; known: {sorted(PRECISIONS)}")
    if precision != "auto":
        return precision  # type: ignore[return-value]
    kind = torch.device(device).type
    if kind == "cuda" or (kind == "cpu" and cpu_has_bf16()):
        return "bf16"
    return "fp32"


def autocast(precision: str, device: torch.device | str = "cpu") -> contextlib.AbstractContextManager:
    """The autocast context for ``precision`` on ``device`` (a no-op for fp32)."""
    if resolve_precision(precision, device) == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
