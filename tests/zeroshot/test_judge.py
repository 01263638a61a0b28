"""Draft reports judged against the truth: what a text states, F1 and EF MAE by hand, the
nearest whole report beside the draft, and the ``echoclip evaluate --drafts`` keys."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from echoclip.zeroshot.judge import judge_drafts, judge_reports, report_facts

TRUTH = pd.DataFrame(
    {
        "device_pacemaker": [True, True, False],
        "device_tavr": [False, False, True],
        "finding_lv_dilation": [True, False, False],
        "finding_pericardial_effusion": [False, False, False],
        "ef": [35.0, 60.0, 52.0],
    },
    index=pd.Index(["s0", "s1", "s2"], name="study_id"),
)
EXACT = [
    "LVEF 35%. The left ventricle is moderately dilated. A pacemaker lead is seen in the right heart. "
    "No pericardial effusion.",
    "LEFT VENTRICLE: The LV ejection fraction is 60%. Normal left ventricular size.\n"
    "DEVICES: PPM lead in the RV apex.",
    "EF: 50-55%. TAVR in situ with normal function. There is no pericardial effusion.",
]


def test_report_facts_reads_devices_findings_and_ef() -> None:
    facts = report_facts(EXACT[0])
    assert facts.devices == {"pacemaker"} and facts.findings == {"lv_dilation"} and facts.ef == 35.0
    assert report_facts(EXACT[2]).ef == 52.5  # a range is read as its middle
    assert report_facts("LVEF >70%. No LVH.").ef == 70.0  # an open range as its bound
    assert report_facts("Normal study.") == report_facts("")
    assert report_facts("").ef is None and not report_facts("").devices


def test_a_report_stating_exactly_the_truth_scores_f1_1_and_ef_mae_0() -> None:
    truth = TRUTH.assign(ef=[35.0, 60.0, 52.5])
    j = judge_reports(EXACT, truth, reference_ef=50.0)
    assert j["devices"]["pacemaker"] == {
        "n": 3,
        "n_true": 2,
        "n_stated": 2,
        "tp": 2,
        "fp": 0,
        "fn": 0,
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
    }
    assert j["devices"]["tavr"]["f1"] == 1.0 and j["findings"]["lv_dilation"]["f1"] == 1.0
    # true nowhere and stated nowhere: F1 is undefined, not 0 or 1, and leaves the macro mean alone
    assert j["findings"]["pericardial_effusion"]["f1"] is None
    assert j["macro_f1"] == 1.0 and j["device_macro_f1"] == 1.0 and j["finding_macro_f1"] == 1.0
    assert set(j["devices"]) == {"pacemaker", "tavr"}  # labels without a truth column are not scored
    assert j["ef_mae"] == 0.0 and j["ef_n"] == 3 and j["ef_unstated"] == 0
    assert j["mean_predictor_ef"] == 50.0
    assert j["mean_predictor_ef_mae"] == pytest.approx((15 + 10 + 2.5) / 3)


def test_a_missing_device_lowers_its_f1_as_by_hand() -> None:
    texts = [EXACT[0], "LVEF 55%. Normal left ventricular size.", EXACT[2]]  # s1's pacemaker left out
    j = judge_reports(texts, TRUTH)
    pacemaker = j["devices"]["pacemaker"]
    assert (pacemaker["tp"], pacemaker["fp"], pacemaker["fn"]) == (1, 0, 1)
    assert pacemaker["precision"] == 1.0 and pacemaker["recall"] == 0.5
    assert pacemaker["f1"] == pytest.approx(2 * 1 / (2 * 1 + 0 + 1))
    assert j["devices"]["tavr"]["f1"] == 1.0
    assert j["device_macro_f1"] == pytest.approx((2 / 3 + 1) / 2)
    assert j["macro_f1"] == pytest.approx((2 / 3 + 1 + 1) / 3)
    assert j["ef_mae"] == pytest.approx((0 + 5 + 0.5) / 3)
    assert "mean_predictor_ef_mae" not in j  # no reference EF given

    # a device stated where there is none costs precision; a text without an EF is counted apart
    texts = [EXACT[0], EXACT[1], "TAVR in situ. Pacemaker lead in the RV."]
    j = judge_reports(texts, TRUTH)
    assert j["devices"]["pacemaker"]["precision"] == pytest.approx(2 / 3)
    assert j["devices"]["pacemaker"]["f1"] == pytest.approx(4 / 5)
    assert j["ef_n"] == 2 and j["ef_unstated"] == 1 and j["ef_mae"] == 0.0


def test_judge_reports_skips_unknown_truths() -> None:
    truth = TRUTH.assign(device_pacemaker=[1.0, np.nan, 0.0])
    j = judge_reports(EXACT, truth)
    assert j["devices"]["pacemaker"]["n"] == 2 and j["devices"]["pacemaker"]["tp"] == 1


@pytest.fixture(scope="module")
def tiny():
    import torch

    from echoclip.models.factory import create_model, get_tokenizer

    torch.manual_seed(0)
    return create_model("echoclip-tiny"), get_tokenizer("echoclip-tiny")


def _corpus(n: int) -> pd.DataFrame:
    from echoclip.data.synthetic import simulate_reports
    from echoclip.data.synthetic.reports import mentioned_devices, mentioned_findings, report_ef

    reports = simulate_reports(n, seed=5)
    table = pd.DataFrame({"study_id": [f"s{i}" for i in range(n)], "report": reports})
    for d in ("pacemaker", "tavr"):
        table[f"device_{d}"] = [d in mentioned_devices(r) for r in reports]
    table["finding_lv_dilation"] = ["lv_dilation" in mentioned_findings(r) for r in reports]
    table["ef"] = [report_ef(r) for r in reports]
    table["any_device"] = [bool(mentioned_devices(r)) for r in reports]
    return table


def test_judge_drafts_never_drafts_a_study_from_its_own_report(tiny, tmp_path) -> None:
    """An index built on every report, the evaluated studies included: each study's draft
    and nearest report still come from other studies."""
    from echoclip.zeroshot.drafts import build_section_index

    model, tokenizer = tiny
    table = _corpus(30)
    index = build_section_index(model, tokenizer, table, tmp_path / "idx", split=None)
    from echoclip.models.embed import embed_reports

    # the studies' own reports as queries: without the exclusion every draft would be its own report
    evaluated = table.iloc[:6].set_index("study_id")
    queries = embed_reports(model, tokenizer, evaluated["report"].tolist(), progress=False)
    metrics, per_study = judge_drafts(model, tokenizer, queries, evaluated, index, table)
    assert (per_study["nearest_study_id"] != per_study["study_id"]).all()
    assert metrics["draft"]["n"] == metrics["nearest_report"]["n"] == 6
    assert metrics["nearest_report"]["reference_reports"] == 30
    assert metrics["draft"]["mean_predictor_ef"] == pytest.approx(table["ef"].mean())
    assert "comparison" not in metrics["draft"]["sections"] and "lv" in metrics["draft"]["sections"]
    rates = metrics["draft"]["section_rates"]
    assert metrics["draft"]["presence_k"] == 10 and metrics["draft"]["presence_threshold"] == 0.4
    assert rates["lv"] == 1.0 and set(rates) == set(metrics["draft"]["sections"])
    assert set(per_study.columns) >= {"draft_devices", "nearest_devices", "true_devices", "draft"}

    from echoclip.zeroshot.drafts import draft_reports

    drafts = draft_reports(model, tokenizer, queries, index, exclude_studies=list(evaluated.index))
    for sid, draft in zip(evaluated.index, drafts, strict=True):
        assert all(s.study_id != sid for s in draft.sections)
    assert rates["devices"] == np.mean([bool(d["devices"].text) for d in drafts])
    # the judged draft is what the drafted sections state
    j = judge_reports([d.body for d in drafts], evaluated)
    assert j["macro_f1"] == metrics["draft"]["macro_f1"] and j["ef_mae"] == metrics["draft"]["ef_mae"]


def test_a_section_the_index_never_saw_is_a_message_in_the_draft(tiny, tmp_path) -> None:
    from echoclip.errors import DataError
    from echoclip.zeroshot.drafts import build_section_index, draft_report

    model, tokenizer = tiny
    table = _corpus(40)
    without_devices = table[~table["any_device"]]
    index = build_section_index(model, tokenizer, without_devices, tmp_path / "idx", split=None)
    assert "devices" not in json.loads((index / "sections.json").read_text())["sections"]
    from echoclip.models.embed import embed_reports

    query = embed_reports(model, tokenizer, ["LVEF 40%."], progress=False)[0]
    draft = draft_report(model, tokenizer, query, index, sections=["lv", "devices"])
    lv, devices = draft.sections
    assert lv.text and lv.message is None
    assert devices.text == "" and devices.study_id is None and devices.similarity is None
    assert devices.message == (
        f"not drafted: no report of the index ({len(without_devices)} reports) has a 'devices' section"
    )
    assert draft.text.startswith("LEFT VENTRICLE: ") and "DEVICES" not in draft.text
    assert draft.to_dict()["sections"][1]["message"] == devices.message
    with pytest.raises(DataError, match="no section 'devise' in this index's config"):
        draft_report(model, tokenizer, query, index, sections=["devise"])


def test_cli_evaluate_with_drafts_writes_the_judged_keys(tmp_path, capsys) -> None:
    import torch

    from echoclip.cli.main import main
    from echoclip.data.synthetic import simulate_dataset
    from echoclip.models.factory import create_model, get_tokenizer

    torch.manual_seed(0)
    sim = simulate_dataset(tmp_path / "sim", n=16, seed=0, size=32, frames=32, progress=False)
    model = tmp_path / "model"
    create_model("echoclip-tiny", tokenizer=get_tokenizer("echoclip-tiny")).save_pretrained(
        model, tokenizer=get_tokenizer("echoclip-tiny")
    )
    sections = tmp_path / "sections"
    args = ["--model", str(model)]
    assert main(["index", "--sections", str(sim / "manifest.parquet"), *args, "--out", str(sections)]) == 0
    out = tmp_path / "eval"
    evaluate = ["evaluate", *args, "--data", str(sim), "--prompts", "devices", "--out", str(out)]
    assert main([*evaluate, "--drafts", str(sections)]) == 0
    assert "draft macro F1" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    draft, nearest = metrics["draft"], metrics["nearest_report"]
    for entry in (draft, nearest):
        assert {"macro_f1", "device_macro_f1", "finding_macro_f1", "ef_mae", "mean_predictor_ef_mae"} <= set(
            entry
        )
        assert set(entry["devices"]) == {"pacemaker", "tavr", "surgical_valve", "mitraclip", "impella"}
        assert entry["ef_mae"] >= 0 and entry["n"] == metrics["data"]["studies"]
    assert draft["index_split"] == "train" and nearest["reference_reports"] > 0
    assert {"mcmrr", "median_rank"} <= set(metrics["retrieval"])
    per_study = pd.read_csv(out / "drafts.csv")
    assert len(per_study) == metrics["data"]["studies"]
    summary = (out / "summary.md").read_text()
    assert "## Draft reports judged against the truth" in summary and "| nearest whole report |" in summary
    assert "share of drafts with each section: lv 1.00" in summary

    # a folder that is not a section index: one line, before any video is embedded
    assert main([*evaluate, "--drafts", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a section index" in err[0]
