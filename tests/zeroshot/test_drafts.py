"""Section indexes and draft reports: round trip, lookup by name, which sections a draft has,
the ``echoclip report`` command."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest

from echoclip.errors import ConfigError
from echoclip.zeroshot.drafts import SectionIndex, build_section_index, draft_report, read_section_index_info
from echoclip.zeroshot.sections import split_sections


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from echoclip.models.factory import create_model, get_tokenizer

    folder = tmp_path_factory.mktemp("model")
    model = create_model("echoclip-tiny")
    model.save_pretrained(folder / "model", tokenizer=get_tokenizer("echoclip-tiny"))
    return model, get_tokenizer("echoclip-tiny"), folder / "model"


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    from echoclip.data.synthetic import simulate_study
    from echoclip.data.video import save_video

    path = tmp_path_factory.mktemp("video") / "study.avi"
    save_video(simulate_study(7, size=64, frames=24).video, path, codec="mjpeg")
    return path


def _corpus(n: int = 24) -> pd.DataFrame:
    from echoclip.data.synthetic import simulate_reports

    reports = simulate_reports(n, seed=3)
    return pd.DataFrame(
        {
            "study_id": [f"s{i}" for i in range(n)],
            "patient_id": [f"p{i}" for i in range(n)],
            "report": reports,
            "split": ["train"] * (n - 2) + ["test"] * 2,
        }
    )


def _reshuffled(table: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The same reports with their sections written in another order, under headings."""
    from echoclip.zeroshot.sections import load_section_config

    cfg = load_section_config()
    rng = np.random.default_rng(seed)
    texts = []
    for report in table["report"]:
        parts = list(split_sections(report).items())
        order = rng.permutation(len(parts))
        texts.append("\n".join(f"{cfg.section(parts[i][0]).headings[0]}: {parts[i][1]}" for i in order))
    return table.assign(report=texts)


def test_section_index_round_trip(tiny, tmp_path) -> None:
    model, tokenizer, _ = tiny
    table = _corpus()
    out = build_section_index(
        model, tokenizer, table, tmp_path / "idx", model_identity={"name": "t", "hash": "h"}
    )
    info = read_section_index_info(out)
    train = table[table["split"] == "train"]
    expected_rows = {}
    for report in train["report"]:
        for name in split_sections(report):
            expected_rows[name] = expected_rows.get(name, 0) + 1
    assert {n: e["rows"] for n, e in info["sections"].items()} == expected_rows
    assert list(info["sections"])[:2] == ["lv", "rv"] and info["split"] == "train"
    from echoclip.retrieval import Index

    lv = Index.load(out / "lv", expected_model_hash="h")
    assert set(lv.metadata["study_id"]) <= set(train["study_id"]) and (lv.metadata["section"] == "lv").all()
    # the whole reports, each with the sections it has, decide which sections a draft has
    whole = Index.load(out / "whole_reports", expected_model_hash="h")
    assert list(whole.metadata["study_id"]) == list(train["study_id"]) and info["whole_reports"] == len(train)
    for sid, has in zip(whole.metadata["study_id"], whole.metadata["sections"], strict=True):
        report = train.set_index("study_id").loc[sid, "report"]
        assert set(has.split(";")) == set(split_sections(report))


def test_a_draft_takes_each_section_by_name_whatever_the_order_in_the_corpus(tiny, video, tmp_path) -> None:
    model, tokenizer, _ = tiny
    table = _corpus()
    by_study = dict(zip(table["study_id"], table["report"], strict=True))
    drafts = []
    for i, corpus in enumerate([table, _reshuffled(table, 1), _reshuffled(table, 2)]):
        out = build_section_index(model, tokenizer, corpus, tmp_path / f"idx{i}")
        # every indexed section (the reshuffled whole reports may vote otherwise)
        # by "nearest": the reshuffled whole reports embed apart, so their consensus may differ
        drafts.append(draft_report(model, tokenizer, str(video), out, presence_threshold=0, method="nearest"))
    first = drafts[0]
    assert "comparison" not in [s.name for s in first.sections]  # another patient's comparison is no use
    for s in first.sections:
        assert s.text == split_sections(by_study[s.study_id])[s.name]  # the section of that name
        assert -1.0 <= s.similarity <= 1.0001
    for other in drafts[1:]:
        assert [(s.name, s.text, s.study_id) for s in other.sections] == [
            (s.name, s.text, s.study_id) for s in first.sections
        ]
        assert [s.similarity for s in other.sections] == pytest.approx(
            [s.similarity for s in first.sections], abs=1e-4
        )
    assert list(split_sections(first.text)) == [s.name for s in first.sections]  # all drafted
    assert all(0 <= s.presence <= 1 for s in first.sections) and first.presence_k == 10
    only = draft_report(model, tokenizer, str(video), tmp_path / "idx0", sections=["valves", "lv"])
    assert [s.name for s in only.sections] == ["valves", "lv"]


def _minority_corpus() -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Ten reports, three with a devices section; each text's embedding chosen: the whole
    reports with a device lie along axis 0, those without along axis 1."""
    from .toy import axis

    reports, vectors = [], {}
    for i in range(10):
        device = i < 3
        text = f"LEFT VENTRICLE: LVEF {50 + i}%." + ("\nDEVICES: Pacemaker lead in the RV." if device else "")
        reports.append(text)
        v = axis(0 if device else 1) + 0.05 * i * axis(2)
        vectors[text] = v / np.linalg.norm(v)
        for part in split_sections(text).values():
            vectors.setdefault(part, axis(3) + 0.01 * len(vectors) * axis(4))
    table = pd.DataFrame({"study_id": [f"s{i}" for i in range(10)], "report": reports})
    assert sum("devices" in split_sections(r) for r in reports) == 3
    return table, vectors


def test_a_section_only_a_minority_of_reports_has_is_drafted_only_where_the_nearest_have_it(tmp_path) -> None:
    from .toy import axis, toy_model

    table, vectors = _minority_corpus()
    model, tokenizer = toy_model(vectors)
    out = build_section_index(model, tokenizer, table, tmp_path / "idx", split=None)
    plain, with_device = axis(1), axis(0)

    # all ten reports vote, weighted by similarity: the three with a device hardly count for a plain video
    draft = draft_report(model, tokenizer, plain, out)
    devices = draft["devices"]
    assert devices.text == "" and devices.study_id is None and devices.presence < 0.1
    assert devices.message.startswith("not drafted: ") and "'devices' section, under 0.4" in devices.message
    assert draft["lv"].text and draft["lv"].presence == 1.0 and draft.presence_k == 10
    assert "Pacemaker" not in draft.text and "DEVICES" not in draft.text

    draft = draft_report(model, tokenizer, with_device, out)
    assert draft["devices"].text == "Pacemaker lead in the RV." and draft["devices"].presence > 0.9
    assert draft["devices"].study_id in {"s0", "s1", "s2"} and draft["devices"].message is None

    # unweighted the three would be 0.3 of ten; among the three nearest they are all
    draft = draft_report(model, tokenizer, with_device, out, presence_k=3)
    assert draft["devices"].presence == 1.0 and draft.presence_k == 3
    # a threshold of 0 drafts every indexed section, as before the vote
    assert draft_report(model, tokenizer, plain, out, presence_threshold=0)["devices"].text

    # a study's own report never votes: s0's own embedding, s0 excluded, ranks s1 and s2 first
    own = vectors[table["report"][0]]
    draft = draft_report(model, tokenizer, own, out, presence_k=2, exclude_study="s0")
    assert draft["devices"].presence == 1.0 and draft["devices"].study_id != "s0"


def test_consensus_drafts_what_most_nearest_reports_say_where_nearest_takes_a_hub(tmp_path) -> None:

    from .toy import axis, ef_vector, toy_model

    # (lv section, whole-report vector, section vector): four near reports state 35 %, one 60 %;
    # a far report's section text lies along the video itself (a hub), another far one states 20 %
    rows = [
        (f"LVEF 35%, reader {i}.", axis(0) + 0.1 * i * axis(2), ef_vector(35) + 0.01 * i * axis(5))
        for i in range(4)
    ]
    rows += [
        ("LVEF 60%.", axis(0) + 0.3 * axis(2), ef_vector(60)),
        ("LVEF 70%, hub.", axis(1), axis(0)),
        ("LVEF 20%.", axis(1) + axis(3), ef_vector(20)),
    ]
    vectors, reports = {}, []
    for section, whole, part in rows:
        reports.append(f"LEFT VENTRICLE: {section}")
        vectors[reports[-1]] = whole / np.linalg.norm(whole)
        vectors[section] = part / np.linalg.norm(part)
    table = pd.DataFrame({"study_id": [f"s{i}" for i in range(len(rows))], "report": reports})
    model, tokenizer = toy_model(vectors)
    out = build_section_index(model, tokenizer, table, tmp_path / "idx", split=None)

    nearest = draft_report(model, tokenizer, axis(0), out, method="nearest")["lv"]
    assert nearest.text == "LVEF 70%, hub." and nearest.similarity == pytest.approx(1.0, abs=1e-5)
    consensus = draft_report(model, tokenizer, axis(0), out)["lv"]
    assert consensus.text.startswith("LVEF 35%") and consensus.study_id in {"s0", "s1", "s2", "s3"}
    assert consensus.similarity == pytest.approx(float(ef_vector(35)[0]), abs=0.01)  # to the video
    # its own study excluded, a query drafts from the others' consensus
    own = draft_report(model, tokenizer, vectors[reports[0]], out, exclude_study="s0")["lv"]
    assert own.text.startswith("LVEF 35%") and own.study_id != "s0"
    with pytest.raises(ConfigError, match="draft method must be one of"):
        draft_report(model, tokenizer, axis(0), out, method="medoid")

    # the model's temperature by default (the toy's logit scale is 100); a sharp one weighs the
    # nearest report almost alone, still among the nearest reports' texts
    from echoclip.zeroshot.drafts import _softmax_weights, model_temperature

    assert model_temperature(model) == pytest.approx(0.01)
    sharp = draft_report(model, tokenizer, axis(0), out, temperature=1e-4)["lv"]
    assert sharp.text == "LVEF 35%, reader 0." and sharp.study_id == "s0"
    with pytest.raises(ConfigError, match="temperature must be positive"):
        draft_report(model, tokenizer, axis(0), out, temperature=0.0)
    weights = _softmax_weights(
        np.array([[3, 1, -1], [-1, -1, -1]]), np.array([[0.9, 0.8, 0.0], [0, 0, 0]]), 0.1
    )
    np.testing.assert_allclose(weights, [[1.0, np.exp(-1.0), 0.0], [0.0, 0.0, 0.0]])


def _lv_corpus(tmp_path, dilated_efs: tuple[int, ...]) -> tuple[Any, Any, Any]:
    """Four normal LV paragraphs and one dilated one per EF, every report equally near ``axis(0)``;
    the texts' embedding medoid is a normal one."""
    from .toy import axis, toy_model

    sections = [f"Normal LV size, reader {i}. LVEF 55%." for i in range(4)]
    sections += [f"The left ventricle is dilated. LVEF {ef}%." for ef in dilated_efs]
    vectors, reports = {}, []
    for i, section in enumerate(sections):
        reports.append(f"LEFT VENTRICLE: {section}")
        vectors[reports[-1]] = axis(0)
        part = axis(1) + 0.01 * i * axis(2) if i < 4 else axis(3) + 0.3 * i * axis(4)
        vectors[section] = part / np.linalg.norm(part)
    table = pd.DataFrame({"study_id": [f"s{i}" for i in range(len(sections))], "report": reports})
    model, tokenizer = toy_model(vectors)
    return model, tokenizer, build_section_index(model, tokenizer, table, tmp_path / "idx", split=None)


def test_consensus_states_what_enough_nearest_reports_state_with_the_ef_nearest_theirs(tmp_path) -> None:
    from echoclip.zeroshot.judge import report_facts

    from .toy import axis

    # seven equally near reports: four say the LV is normal, three (3/7 = 0.43) that it is dilated
    model, tokenizer, out = _lv_corpus(tmp_path, (35, 50, 40))
    lv = draft_report(model, tokenizer, axis(0), out)["lv"]
    # 0.43 of the weight states the dilation, over the threshold: the draft states it, with
    # the EF of those texts nearest the seven reports' mean (49.3 %)
    assert lv.presence == 1.0 and lv.text == "The left ventricle is dilated. LVEF 50%."
    assert report_facts(lv.text).findings == {"lv_dilation"}
    # a majority rule leaves the dilation out, and the normal texts say it as most of them do
    index = SectionIndex.load(out)
    majority = index.draft(axis(0)[None], fact_threshold=0.5)[0]["lv"]
    assert majority.text.startswith("Normal LV size") and not report_facts(majority.text).findings
    # drafting every section (presence 0) does not make the text state every fact any report states
    assert draft_report(model, tokenizer, axis(0), out, presence_threshold=0)["lv"].text == lv.text
    with pytest.raises(ConfigError, match="fact_threshold must be in"):
        index.draft(axis(0)[None], fact_threshold=0)


def test_consensus_states_a_finding_a_third_of_the_nearest_reports_state(tmp_path) -> None:
    from echoclip.zeroshot.drafts import FACT_THRESHOLD
    from echoclip.zeroshot.judge import report_facts

    from .toy import axis

    # two of six (0.33) nearest reports say the LV is dilated: the default threshold (0.2, half
    # the F1 a finding reaches) states it, with the EF nearest the six's mean (50.8 %); one of
    # 0.4, as sections are read, does not
    model, tokenizer, out = _lv_corpus(tmp_path, (40, 45))
    assert FACT_THRESHOLD == 0.2
    lv = draft_report(model, tokenizer, axis(0), out)["lv"]
    assert lv.text == "The left ventricle is dilated. LVEF 45%." and lv.study_id == "s5"
    stricter = SectionIndex.load(out).draft(axis(0)[None], fact_threshold=0.4)[0]["lv"]
    assert stricter.text.startswith("Normal LV size") and not report_facts(stricter.text).findings


def test_an_index_from_before_the_whole_reports_asks_to_be_rebuilt(tmp_path) -> None:
    from echoclip.errors import DataError

    table, vectors = _minority_corpus()
    from .toy import axis, toy_model

    model, tokenizer = toy_model(vectors)
    out = build_section_index(model, tokenizer, table, tmp_path / "idx", split=None)
    info = json.loads((out / "sections.json").read_text())
    del info["version"], info["whole_reports"]
    (out / "sections.json").write_text(json.dumps(info))
    with pytest.raises(DataError, match="older echoclip.*rebuild it with `echoclip index --sections`"):
        draft_report(model, tokenizer, axis(0), out)


def test_cli_report_prints_the_draft_and_one_line_for_a_missing_index(tiny, video, tmp_path, capsys) -> None:
    from echoclip.cli.main import main

    _, _, model_dir = tiny
    manifest = tmp_path / "manifest.parquet"
    _corpus().to_parquet(manifest)
    idx = tmp_path / "sections"
    assert main(["index", "--sections", str(manifest), "--model", str(model_dir), "--out", str(idx)]) == 0
    assert capsys.readouterr().out.startswith("index: sections (lv ")
    assert main(["report", "--video", str(video), "--index", str(idx)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("LEFT VENTRICLE: ") and "similarity" in out
    assert (
        main(["report", "--video", str(video), "--index", str(idx), "--model", str(model_dir), "--json"]) == 0
    )
    payload = json.loads(capsys.readouterr().out)
    assert payload["sections"][0]["name"] == "lv" and {"text", "study_id", "similarity"} <= set(
        payload["sections"][0]
    )

    assert main(["report", "--video", str(video), "--index", str(tmp_path / "nothing")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing" in err[0] and "echoclip index --sections" in err[0]

    # a section no indexed report has: the draft says so in its place; a name no config knows: one line
    from echoclip.data.synthetic.reports import mentioned_devices

    table = _corpus()
    plain = table[[not mentioned_devices(r) for r in table["report"]]]
    plain_idx = build_section_index(tiny[0], tiny[1], plain, tmp_path / "plain", model_dir=model_dir)
    assert main(["report", "--video", str(video), "--index", str(plain_idx), "--sections", "lv,devices"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2:] == [
        "DEVICES: -",
        f"    [devices: not drafted: no report of the index ({(plain['split'] == 'train').sum()} reports) "
        "has a 'devices' section]",
    ]
    assert main(["report", "--video", str(video), "--index", str(plain_idx), "--sections", "lv,devise"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no section 'devise'" in err[0]
