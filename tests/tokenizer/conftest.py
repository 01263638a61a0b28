"""Shared fixtures: simulated reports and a tokenizer trained on them (built once per session)."""

from __future__ import annotations

import pytest

from echoclip.data.synthetic import simulate_reports
from echoclip.tokenizer import EchoTokenizer

TRAIN_SEED = 0
HELD_OUT_SEED = 20_240_501


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    return simulate_reports(600, seed=TRAIN_SEED)


@pytest.fixture(scope="session")
def held_out() -> list[str]:
    return simulate_reports(400, seed=HELD_OUT_SEED)


@pytest.fixture(scope="session")
def trained(corpus: list[str]) -> EchoTokenizer:
    return EchoTokenizer.train(corpus, phrase_vocab_size=2048, subword_vocab_size=512, min_frequency=3)


@pytest.fixture(scope="session")
def untrained() -> EchoTokenizer:
    return EchoTokenizer()
