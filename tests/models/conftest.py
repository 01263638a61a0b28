"""Fixtures of the model tests: a small tokenizer with value tokens."""

from __future__ import annotations

import re

import pytest
import torch


class ByteTokenizer:
    """A minimal stand-in with the echo tokenizer's surface: bytes, special ids, value tokens 0-100."""

    pad_token_id, bos_token_id, eos_token_id = 0, 1, 2
    first_value, first_byte = 3, 104  # ids 3..103 are the numbers 0..100, then the 256 bytes
    vocab_size = 104 + 256

    def value_token_values(self) -> dict[int, float]:
        return {self.first_value + v: float(v) for v in range(101)}

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for piece in re.split(r"(\d+)", text):
            if piece.isdigit() and int(piece) <= 100:
                ids.append(self.first_value + int(piece))
            else:
                ids += [self.first_byte + b for b in piece.encode()]
        return ids

    def __call__(self, texts: str | list[str], context_length: int = 77) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = torch.full((len(texts), context_length), self.pad_token_id, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.bos_token_id, *self.encode(text)[: context_length - 2], self.eos_token_id]
            out[row, : len(ids)] = torch.tensor(ids)
        return out


@pytest.fixture(autouse=True)
def _one_thread():
    """Small models run fastest on one thread, and the test machine is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tokenizer():
    """The echo tokenizer when it is installed, else the stand-in."""
    try:
        from echoclip.tokenizer import EchoTokenizer
    except ImportError:
        return ByteTokenizer()
    return EchoTokenizer()


@pytest.fixture
def stand_in_tokenizer() -> ByteTokenizer:
    return ByteTokenizer()
