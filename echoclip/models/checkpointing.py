"""Switching activation (gradient) checkpointing of transformers models across versions."""

from __future__ import annotations

from typing import Any


def set_hf_checkpointing(model: Any, enable: bool) -> None:
    """transformers 5 renamed ``gradient_checkpointing_*`` to ``activation_checkpointing_*``; use what exists."""
    prefix = "activation" if hasattr(model, "activation_checkpointing_enable") else "gradient"
    getattr(model, f"{prefix}_checkpointing_{'enable' if enable else 'disable'}")()
