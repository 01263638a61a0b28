"""Tests of tokenizer/cleaning.py: what cleaning changes, what it keeps, and that it is idempotent."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from echoclip.tokenizer import Cleaner, CleaningConfig, clean


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
