"""Tests of tokenizer/stretches.py: the Python split path gives the ids of the Rust pipeline."""

from __future__ import annotations

import functools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import normalizers, pre_tokenizers

from echoclip.tokenizer import CleaningConfig, EchoTokenizer
from echoclip.tokenizer.stretches import StretchEncoder, trie_pattern
from echoclip.tokenizer.values import SEVERITIES

# pieces that exercise the added vocabulary: values, their neighbours and the placeholders
_PIECES = [
    *(str(i) for i in (0, 1, 5, 9, 10, 55, 99, 100, 101, 1000)),
    "0.5", "9.9", "10.5", ".5", ".55", "3.5.5", "05",
    *SEVERITIES, "mild", "Moderate", "MILDER", "XMILD",
    "<DATE>", "<ID>", "<bos>", "<eos>", "<pad>", "<#>",
    " ", ". ", "%", "-", "/", "_", "X", "CM", " TO ", "LVEF ",
]  # fmt: skip
_ASCII = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=4)
_TEXT = st.lists(st.sampled_from(_PIECES) | _ASCII, max_size=12).map("".join)


def _rust_ids(tok: EchoTokenizer, text: str) -> list[int]:
    return tok.backend.encode(text, add_special_tokens=False).ids


def _fast(tok: EchoTokenizer) -> StretchEncoder:
    fast = StretchEncoder.for_backend(tok.backend, cache_capacity=1000)
    assert fast is not None
    return fast


def test_same_ids_as_the_pipeline_on_reports(trained: EchoTokenizer, held_out: list[str]) -> None:
    fast = _fast(trained)
    for report in held_out:
        text = trained.clean(report)
        assert fast.encode(text) == _rust_ids(trained, text)


@pytest.mark.parametrize(
    "text",
    ["1.5X2.0 CM", "MILD TO MODERATEX MILD", "1000", ".55", "<DATE>5", "3.5.5", "", "55%", "A55 55A 55"],
)
def test_same_ids_on_edge_cases(trained: EchoTokenizer, text: str) -> None:
    assert _fast(trained).encode(text) == _rust_ids(trained, text)


@settings(max_examples=400, deadline=None)
@given(_TEXT)
def test_same_ids_under_fuzzing(text: str) -> None:
    for tok in _tokenizers():
        assert _fast(tok).encode(text) == _rust_ids(tok, text), (tok.cleaning.uppercase, text)


def test_a_full_cache_is_emptied_not_grown(trained: EchoTokenizer, held_out: list[str]) -> None:
    fast = StretchEncoder.for_backend(trained.backend, cache_capacity=5)
    assert fast is not None
    for report in held_out[:20]:
        text = trained.clean(report)
        assert fast.encode(text) == _rust_ids(trained, text)
        assert len(fast._cache) <= 5


def test_declines_pipelines_it_does_not_reproduce(untrained: EchoTokenizer) -> None:
    with_normalizer = type(untrained.backend).from_str(untrained.backend.to_str())
    with_normalizer.normalizer = normalizers.Lowercase()
    with_pre_tokenizer = type(untrained.backend).from_str(untrained.backend.to_str())
    with_pre_tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    keeps_specials = type(untrained.backend).from_str(untrained.backend.to_str())
    keeps_specials.encode_special_tokens = False
    for backend in (with_normalizer, with_pre_tokenizer, keeps_specials):
        assert StretchEncoder.for_backend(backend, cache_capacity=10) is None
    assert StretchEncoder.for_backend(untrained.backend, cache_capacity=10) is not None


def test_non_ascii_text_takes_the_pipeline_with_the_same_result(trained: EchoTokenizer) -> None:
    text = "LVEF 55 % ÉCHO 東 MILD"
    assert trained.encode(text) == _rust_ids(trained, trained.clean(text))


def test_trie_pattern_matches_the_longest_word() -> None:
    pattern = re.compile(trie_pattern(["1", "10", "100", ".5", "MILD", "MILD TO MODERATE"]))
    assert [m.group() for m in pattern.finditer("100 10 1 MILD TO MODERATE MILD TO .5")] == [
        "100", "10", "1", "MILD TO MODERATE", "MILD", ".5",
    ]  # fmt: skip


@functools.cache
def _tokenizers() -> list[EchoTokenizer]:
    # hypothesis tests cannot take function-scoped fixtures: built once, on first use
    from echoclip.data.synthetic import simulate_reports

    reports = simulate_reports(150, seed=5)
    upper = EchoTokenizer.train(reports, phrase_vocab_size=256, subword_vocab_size=256)
    lower = EchoTokenizer.train(
        reports, phrase_vocab_size=256, subword_vocab_size=256, cleaning=CleaningConfig(uppercase=False)
    )
    return [upper, lower]
