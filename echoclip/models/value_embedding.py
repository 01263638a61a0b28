"""Value-aware embeddings of number tokens.

With plain token embeddings every value (``EF IS 35%``, ``36%``, ...) is an unrelated
vector: prompts over EF 0-100 start unordered, and values rare in training keep
their random initial embedding. Here a value token's embedding is its learned
embedding plus ``MLP(Fourier features of its value)``, so neighbouring values start
close and unseen values fall between the seen ones.

The map token id -> value is a buffer (NaN for tokens that are not numbers), so it is
saved and loaded with the weights and cannot drift from the tokenizer it came from.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from echoclip.errors import ModelError


def fourier_features(x: torch.Tensor, frequencies: torch.Tensor) -> torch.Tensor:
    """``[...] -> [..., 2K+1]``: ``x`` itself, then its sines and cosines at the ``K`` frequencies."""
    x = x.unsqueeze(-1)
    angles = x * frequencies
    return torch.cat([x, torch.sin(angles), torch.cos(angles)], dim=-1)


class ValueEmbedding(nn.Module):
    """``forward(ids [B, L]) -> [B, L, width]``: zero for ordinary tokens, a function of the value for numbers."""

    def __init__(self, vocab_size: int, width: int, num_frequencies: int = 6, scale: float = 100.0) -> None:
        super().__init__()
        self.scale = float(scale)
        self.register_buffer("token_values", torch.full((vocab_size,), float("nan")))
        # periods from 2*scale down to 2*scale/2**(K-1) (about 6 units for K=6): coarse order, then
        # finer steps; higher frequencies would make neighbouring values look unrelated again
        self.register_buffer(
            "frequencies", math.pi * 2.0 ** torch.arange(num_frequencies).float(), persistent=False
        )
        n_features = 2 * num_frequencies + 1
        self.mlp = nn.Sequential(nn.Linear(n_features, width), nn.GELU(), nn.Linear(width, width))

    def set_values(self, values: Mapping[int, float]) -> None:
        """Record which token ids are numbers and their values (a tokenizer's ``value_token_values()``)."""
        vocab_size = self.token_values.numel()
        table = torch.full((vocab_size,), float("nan"))
        for token_id, value in values.items():
            if not 0 <= int(token_id) < vocab_size:
                raise ModelError(
                    f"value token id {token_id} is outside the text vocabulary of size {vocab_size}"
                )
            table[int(token_id)] = float(value)
        self.token_values.copy_(table)

    @property
    def num_values(self) -> int:
        return int((~torch.isnan(self.token_values)).sum())

    def features(self, values: torch.Tensor) -> torch.Tensor:
        """Fourier features ``[..., 2K+1]`` of numeric values (the linear term keeps the order global)."""
        return fourier_features(values / self.scale, self.frequencies)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        values = self.token_values[ids]
        is_value = ~torch.isnan(values)
        out = self.mlp(self.features(torch.nan_to_num(values)).to(self.mlp[0].weight.dtype))
        return out * is_value.unsqueeze(-1).to(out.dtype)
