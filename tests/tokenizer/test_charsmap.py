"""Tests of tokenizer/charsmap.py: the Precompiled tables and upper-casing as str.upper does."""

from __future__ import annotations

import sys
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import normalizers

from echoclip.tokenizer.charsmap import (
    SEPARATOR,
    joining_characters,
    precompiled_charsmap,
    uppercase_map,
    uppercase_steps,
)

ALL_CHARACTERS = [chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF]


NO_NUL = st.characters(exclude_categories=["Cs"], exclude_characters="\0")


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(NO_NUL, st.text(NO_NUL, max_size=3), min_size=1, max_size=40))
def test_a_charsmap_maps_each_key_and_keeps_other_characters(mapping: dict[str, str]) -> None:
    table = normalizers.Precompiled(precompiled_charsmap(mapping))
    for key, value in mapping.items():
        assert table.normalize_str(key) == value
    assert table.normalize_str("\x02") == mapping.get("\x02", "\x02")


def test_upper_casing_is_str_upper_on_every_character() -> None:
    upper = normalizers.Sequence(uppercase_steps())
    assert len(uppercase_map()) > 1000
    wrong = [c for c in ALL_CHARACTERS if upper.normalize_str(c) != c.upper()]
    assert wrong == [SEPARATOR]  # removed: the cleaning removes C0 controls before


def test_nul_cannot_be_in_a_charsmap() -> None:
    with pytest.raises(ValueError, match="NUL"):
        precompiled_charsmap({"\0": "x"})
    with pytest.raises(ValueError, match="NUL"):
        precompiled_charsmap({"x": "\0"})


def test_upper_casing_keeps_the_marks_after_a_letter() -> None:
    # Precompiled alone maps a whole grapheme by its first character and drops the marks
    upper = normalizers.Sequence(uppercase_steps())
    marks = ["\u0301", "\u0303\u0308", "\u0345", "\u200d", "\U0001f3fb"]
    letters = sorted(uppercase_map())
    wrong = [
        (letter, mark)
        for letter in letters
        for mark in marks
        if upper.normalize_str(letter + mark + "x") != (letter + mark + "x").upper()
    ]
    assert wrong == []
    # at the start of the text too
    assert upper.normalize_str("\u0301\u0302a\u0301") == "\u0301\u0302A\u0301"


def test_joining_characters_are_the_combining_ones() -> None:
    joining = set(joining_characters())
    categories = {unicodedata.category(c) for c in joining}
    assert {"Mn", "Mc", "Me"} <= categories and "Ll" not in categories and "Lu" not in categories
    assert "\u0301" in joining and "\u200d" in joining and "a" not in joining and " " not in joining
