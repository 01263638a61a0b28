"""Tests of tokenizer/cleaning.py: what cleaning changes, what it keeps, and that it is idempotent."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from echoclip.tokenizer import Cleaner, CleaningConfig, clean
from echoclip.tokenizer.cleaning import WHITESPACE


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("lv ejection fraction is 55 %", "LV EJECTION FRACTION IS 55 %"),
        ("  two\tspaces\n\nand  lines  ", "TWO SPACES AND LINES"),
        ("Study date 03/14/2023.", "STUDY DATE <DATE>."),
        ("seen 14.03.23 and 2023-03-14", "SEEN <DATE> AND <DATE>"),
        ("on 14 Mar 2023 and March 14, 2023", "ON <DATE> AND <DATE>"),
        ("MRN: 12345678, accession # AB1234", "MRN: <ID>, ACCESSION # <ID>"),
        ("dx I50.9 and I25.10", "DX <ID> AND <ID>"),
        ("uid 1.2.840.10008.5.1 phone 310-555-0123", "UID <ID> PHONE <ID>"),
        ("full-width ５５％ and ﬁ ligature", "FULL-WIDTH 55% AND FI LIGATURE"),
        ("zero\u200bwidth and\x00control", "ZEROWIDTH ANDCONTROL"),
    ],
)
def test_cleaning_examples(raw: str, expected: str) -> None:
    assert clean(raw) == expected


@pytest.mark.parametrize(
    "kept",
    [
        "EF 50-55%.",
        "LVIDD 4.5 CM, LVEDV 122 ML.",
        "AVA 0.85 CM2, E/E' 12.",
        "HR 72 BPM. BP 120/80.",
        "A4C VIEW. LVEF 1000 IS NOT A DATE",
    ],
)
def test_clinical_values_are_not_masked(kept: str) -> None:
    assert clean(kept) == kept


def test_switches_turn_steps_off() -> None:
    raw = "Echo  on 03/14/2023, MRN 12345678"
    assert clean(raw, CleaningConfig(uppercase=False)) == "Echo on <DATE>, MRN <ID>"
    assert clean(raw, CleaningConfig(collapse_whitespace=False)) == "ECHO  ON <DATE>, MRN <ID>"
    assert (
        clean(raw, CleaningConfig(mask_dates=False, mask_identifiers=False))
        == "ECHO ON 03/14/2023, MRN 12345678"
    )
    assert clean("ﬁ", CleaningConfig(unicode_form=None)) == "ﬁ".upper()


@pytest.mark.parametrize("bad", [None, b"bytes", 42, ["a list"]])
def test_non_text_is_a_type_error(bad: object) -> None:
    with pytest.raises(TypeError, match="must be str"):
        clean(bad)  # type: ignore[arg-type]


def test_config_round_trip_and_unknown_options() -> None:
    config = CleaningConfig(uppercase=False, mask_dates=False)
    assert CleaningConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown cleaning options"):
        CleaningConfig.from_dict({"lowercase": True})
    with pytest.raises(ValueError, match="unicode_form"):
        CleaningConfig(unicode_form="NFD")  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_cleaning_is_idempotent_on_any_text(text: str) -> None:
    cleaner = Cleaner()
    once = cleaner(text)
    assert cleaner(once) == once
    assert "  " not in once and once == once.strip()


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="0123456789/.-: ABCIMRN#", max_size=40))
def test_masking_is_idempotent_on_number_soup(text: str) -> None:
    once = clean(text)
    assert clean(once) == once


@settings(max_examples=100, deadline=None)
@given(st.text())
def test_cleaning_without_upper_casing_is_idempotent(text: str) -> None:
    cleaner = Cleaner(CleaningConfig(uppercase=False))
    once = cleaner(text)
    assert cleaner(once) == once


# ---------------------------------------------------------------- the normalizer in tokenizer.json

CONFIGS = st.builds(
    CleaningConfig,
    unicode_form=st.sampled_from(["NFKC", "NFC", None]),
    remove_control=st.booleans(),
    uppercase=st.booleans(),
    collapse_whitespace=st.booleans(),
    mask_dates=st.booleans(),
    mask_identifiers=st.booleans(),
)
# the characters of dates, identifiers, labels and whitespace, so that the patterns fire often
REPORTISH = st.text(
    alphabet=st.sampled_from(list("0123456789/.-:# ,()ABCDEIMNRSTUJYabcdmnrst\t\n\r\x0b\x0c\x1c\x01\x7f")),
    max_size=60,
) | st.sampled_from(
    [
        "Study date 03/14/2023, MRN: 12345678, acc # AB1234",
        "seen 14.03.23 and 2023-03-14, on 14 Mar 2023 and March 14th, 2023",
        "dx I50.9 and I25.10; uid 1.2.840.10008.5.1 phone (310) 555-0123",
        "Medical record no. 00123456; patient id: 1234-56",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=127)) | REPORTISH, CONFIGS)
def test_the_normalizer_cleans_ascii_text_as_python_does(text: str, config: CleaningConfig) -> None:
    # non-ASCII text is cleaned by the normalizer itself; ASCII text by Python, the same steps
    cleaner = Cleaner(config)
    assert cleaner.normalizer().normalize_str(text) == cleaner(text)


def test_the_normalizer_cleans_simulated_reports_as_python_does(held_out: list[str]) -> None:
    cleaner = Cleaner()
    normalizer = cleaner.normalizer()
    assert all(report.isascii() for report in held_out)
    assert [normalizer.normalize_str(r) for r in held_out] == [cleaner(r) for r in held_out]


def test_non_ascii_text_is_cleaned_by_the_normalizer() -> None:
    cleaner = Cleaner()
    text = "né le 03/14/2023\u00a0: ＭＲＮ １２３４５６７８ \u0430\u0301 \ud800ǰ"
    assert cleaner(text) == "NÉ LE <DATE> : MRN <ID> \u0410\u0301 J\u030c"
    assert cleaner.normalizer().normalize_str(text.replace("\ud800", "")) == cleaner(text)


def test_whitespace_is_what_python_splits_on() -> None:
    import re
    import sys

    everything = "".join(chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF)
    assert re.findall(f"[{WHITESPACE}]", everything) == [c for c in everything if c.isspace()]
