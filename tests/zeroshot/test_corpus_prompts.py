"""Prompts read from a report corpus: each finding's stating and denying sentences."""

from __future__ import annotations

import pytest

from echoclip.data.synthetic import simulate_reports
from echoclip.errors import DataError
from echoclip.zeroshot.corpus_prompts import corpus_sentences, finding_sentences, prompt_set_from_reports
from echoclip.zeroshot.prompts import BinaryTarget, load_prompt_set, save_prompt_set

REPORTS = [
    "LEFT VENTRICLE: The left ventricle is severely dilated. Normal right ventricular size.",
    "The left ventricle is severely dilated. No pericardial effusion.",
    "The left ventricle is normal in size. LV cavity size is normal. No pericardial effusion.",
    "Normal RV function. The left ventricle is normal in size. Small pericardial effusion.",
]


def test_sentences_are_counted_without_their_headings():
    counts = corpus_sentences([*REPORTS, "", None])
    assert counts["The left ventricle is severely dilated."] == 2
    assert counts["The left ventricle is normal in size."] == 2
    assert not any(s.startswith("LEFT VENTRICLE") for s in counts)


def test_a_finding_takes_what_states_it_and_what_denies_it_about_its_structure():
    positive, negative = finding_sentences(corpus_sentences(REPORTS), "lv_dilation")
    assert positive == ["The left ventricle is severely dilated."]
    # most frequent first; "Normal RV function." denies nothing about the left ventricle
    assert negative == ["The left ventricle is normal in size.", "LV cavity size is normal."]
    positive, negative = finding_sentences(corpus_sentences(REPORTS), "pericardial_effusion", max_prompts=1)
    assert positive == ["Small pericardial effusion."] and negative == ["No pericardial effusion."]


def test_the_set_replaces_the_readable_findings_and_keeps_the_rest():
    base = load_prompt_set("findings")
    derived = prompt_set_from_reports(REPORTS, base)
    lv = derived.targets["lv_dilation"]
    assert isinstance(lv, BinaryTarget) and lv.label == base.targets["lv_dilation"].label
    assert lv.positive == ("The left ventricle is severely dilated.",)
    assert lv.texts() == [*lv.positive, *lv.negative]  # no contexts around a report's own sentence
    # never stated in these reports: the shipped prompts stay
    assert derived.targets["rv_dilation"].positive == base.targets["rv_dilation"].positive
    assert derived.targets["reduced_lv_function"].positive == base.targets["reduced_lv_function"].positive
    assert set(derived.targets) == set(base.targets) and derived.name == base.name
    assert "lv_dilation" in derived.description and "rv_dilation" not in derived.description


def test_the_set_round_trips_through_json(tmp_path):
    derived = prompt_set_from_reports(simulate_reports(60, seed=3), "findings", max_prompts=8)
    again = load_prompt_set(save_prompt_set(derived, tmp_path / "findings.json"))
    assert again.targets == derived.targets
    assert 1 <= len(again.targets["lv_dilation"].positive) <= 8


def test_reports_without_a_sentence_are_refused():
    with pytest.raises(DataError, match="every report is empty"):
        prompt_set_from_reports(["", "  "])
    with pytest.raises(DataError, match="max_prompts"):
        prompt_set_from_reports(REPORTS, max_prompts=0)


def test_a_manifest_gives_each_study_of_its_split_once(tmp_path):
    import pandas as pd

    from echoclip.zeroshot.corpus_prompts import manifest_reports

    rows = [("s1", "train", "A."), ("s1", "train", "A."), ("s2", "train", "B."), ("s3", "test", "C.")]
    path = tmp_path / "manifest.csv"
    pd.DataFrame(rows, columns=["study_id", "split", "report"]).to_csv(path, index=False)
    assert manifest_reports(path) == ["A.", "B."]
    assert manifest_reports(path, None) == ["A.", "B.", "C."]
    with pytest.raises(DataError, match="no reports in split 'val'"):
        manifest_reports(path, "val")
    with pytest.raises(DataError, match="no column 'text'"):
        manifest_reports(path, column="text")


def test_with_corpus_findings_puts_the_corpus_set_in_place_of_findings(tmp_path):
    import pandas as pd

    from echoclip.zeroshot.corpus_prompts import with_corpus_findings

    rows = [(f"s{i}", "train", r) for i, r in enumerate(REPORTS)] + [
        ("t", "test", "Huge pericardial effusion.")
    ]
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame(rows, columns=["study_id", "split", "report"]).to_csv(manifest, index=False)
    out = tmp_path / "prompts" / "findings.json"
    sets = with_corpus_findings(["ejection_fraction", "findings", "devices"], manifest, "train", out)
    assert sets == ["ejection_fraction", str(out), "devices"]
    effusion = load_prompt_set(out).targets["pericardial_effusion"]
    assert effusion.positive == ("Small pericardial effusion.",)  # the train split's, not the test's
