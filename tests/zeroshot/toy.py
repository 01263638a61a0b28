"""Test helpers: a hand-built CLIP-like model whose embeddings the tests choose, and its tokenizer.

``ToyClip`` has the interface zero-shot code relies on (``encode_text``,
``encode_video``, ``logit_scale`` in log space) and nothing else: the text tower is a
fixed table (one row per known text, picked by the first token), the video tower
reads the first ``dim`` numbers of the clip. So a test writes the embedding it wants
into a clip and knows the answer every scoring method must give.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

DIM = 8
THETA = math.pi / 200  # EF 0..100 % spans a quarter circle


def ef_vector(value: float, dim: int = DIM) -> np.ndarray:
    """Unit vector for an EF value: similarity falls strictly with the distance in EF."""
    v = np.zeros(dim)
    v[0], v[1] = math.cos(THETA * value), math.sin(THETA * value)
    return v


def axis(i: int, dim: int = DIM) -> np.ndarray:
    v = np.zeros(dim)
    v[i] = 1.0
    return v


class TableTokenizer:
    """Maps each known text to one id (1-based; 0 pads), like a tokenizer with one token per prompt."""

    def __init__(self, texts: list[str]) -> None:
        self.ids = {t: i + 1 for i, t in enumerate(dict.fromkeys(texts))}

    def __call__(self, texts: list[str], context_length: int = 77) -> torch.Tensor:
        out = torch.zeros(len(texts), context_length, dtype=torch.long)
        out[:, 0] = torch.tensor([self.ids[t] for t in texts])
        return out


class ToyClip(nn.Module):
    """Text embedding = a fixed row per text; video embedding = the clip's first ``dim`` values."""

    def __init__(self, table: np.ndarray, logit_scale: float = 100.0) -> None:
        super().__init__()
        dim = table.shape[1]
        rows = np.concatenate([np.zeros((1, dim)), table]).astype(np.float32)
        self.text = nn.Embedding.from_pretrained(torch.from_numpy(rows), freeze=True)
        self.video = nn.Linear(dim, dim, bias=False)
        with torch.no_grad():
            self.video.weight.copy_(torch.eye(dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(logit_scale)))
        self.dim = dim
        self.text_calls = 0

    def encode_text(self, ids: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        self.text_calls += 1
        x = self.text(ids[:, 0])
        return nn.functional.normalize(x, dim=-1) if normalize else x

    def encode_video(self, x: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        v = self.video(x.flatten(1)[:, : self.dim])
        return nn.functional.normalize(v, dim=-1) if normalize else v


def toy_model(
    text_vectors: dict[str, np.ndarray], logit_scale: float = 100.0
) -> tuple[ToyClip, TableTokenizer]:
    tokenizer = TableTokenizer(list(text_vectors))
    table = np.stack([text_vectors[t] for t in tokenizer.ids])
    return ToyClip(table, logit_scale), tokenizer


def clip_with(embedding: np.ndarray, shape: tuple[int, ...] = (3, 2, 4, 4)) -> torch.Tensor:
    """A clip ``[3,T,H,W]`` whose first values are ``embedding`` (what ToyClip reads)."""
    x = torch.zeros(int(np.prod(shape)))
    x[: len(embedding)] = torch.as_tensor(embedding, dtype=torch.float32)
    return x.reshape(shape)


def ef_prompts() -> dict:
    """An EF prompt set with two templates over 0..100 % in steps of 4 (26 candidates per template)."""
    return {
        "name": "toy_ef",
        "targets": {
            "ef": {
                "type": "regression",
                "label": "ef",
                "unit": "%",
                "templates": ["LV EJECTION FRACTION IS <#>%.", "LVEF <#>%."],
                "range": [0, 100],
                "step": 4,
            }
        },
    }
