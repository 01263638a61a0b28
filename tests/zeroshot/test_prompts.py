"""Prompt sets: the shipped ones are complete and fit the tokenizers; bad ones fail with one clear error."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import numpy as np
import pytest

from echoclip.errors import ConfigError
from echoclip.zeroshot.prompts import (
    BinaryTarget,
    CategoricalTarget,
    RegressionTarget,
    expand_template,
    format_value,
    list_prompt_sets,
    load_prompt_set,
    save_prompt_set,
)

DEVICES = ["pacemaker", "tavr", "surgical_valve", "mitraclip", "impella"]
FINDINGS = [
    "lv_dilation",
    "rv_dilation",
    "la_enlargement",
    "pericardial_effusion",
    "lv_hypertrophy",
    "reduced_lv_function",
]
CONTEXT_LENGTH = 77


def all_shipped_texts() -> list[str]:
    return [text for name in list_prompt_sets() for text in load_prompt_set(name).texts()]


def test_the_four_shipped_sets_load() -> None:
    assert set(list_prompt_sets()) >= {"ejection_fraction", "devices", "findings", "views"}
    ef = load_prompt_set("ejection_fraction").targets["ejection_fraction"]
    assert isinstance(ef, RegressionTarget) and ef.unit == "%" and ef.label.column == "ef"
    assert ef.start == 0 and ef.stop == 100 and ef.step == 1
    np.testing.assert_array_equal(ef.values(), np.arange(5, 86))  # the values reports state
    assert "LV EJECTION FRACTION IS 40%." in ef.texts()


def test_device_and_finding_sets_use_the_data_set_names() -> None:
    devices = load_prompt_set("devices").targets
    assert list(devices) == DEVICES
    for name, target in devices.items():
        assert isinstance(target, BinaryTarget) and target.label.column == f"device_{name}"
        assert target.positive and target.negative
    findings = load_prompt_set("findings").targets
    assert list(findings) == FINDINGS
    for name in FINDINGS[:-1]:
        assert findings[name].label.column == f"finding_{name}"
    assert (
        findings["reduced_lv_function"].label.column == "ef"
        and findings["reduced_lv_function"].label.below == 50
    )
    views = load_prompt_set("views").targets["view"]
    assert isinstance(views, CategoricalTarget) and list(views.classes) == ["A4C", "A2C", "PLAX", "PSAX"]


def test_shipped_prompts_read_like_reports() -> None:
    for text in all_shipped_texts():
        assert text == text.upper(), text
        assert text.endswith("."), text
        assert "<#>" not in text


def test_shipped_prompts_fit_the_clip_tokenizer() -> None:
    from open_clip.tokenizer import SimpleTokenizer

    tokenizer = SimpleTokenizer()
    texts = all_shipped_texts()
    for text in texts:
        assert len(tokenizer.encode(text)) + 2 <= CONTEXT_LENGTH, text  # + start and end tokens
    ids = tokenizer(texts, context_length=CONTEXT_LENGTH)
    assert (ids[:, -1] == 0).all()  # nothing truncated: the last position is padding


def _echo_tokenizer_class():
    try:
        from echoclip.tokenizer import EchoTokenizer
    except ImportError as e:
        pytest.skip(f"the echo tokenizer cannot be imported yet ({e})")
    return EchoTokenizer


def shipped_prompts_alone() -> list[str]:
    """The prompts as written, outside the contexts of their set."""
    texts = []
    for name in list_prompt_sets():
        for target in load_prompt_set(name).targets.values():
            if isinstance(target, RegressionTarget):
                texts += [t for row in replace(target, contexts=()).prompts() for t in row]
            else:
                texts += replace(target, contexts=()).texts()
    return texts


def test_shipped_prompts_fit_the_untrained_echo_tokenizer() -> None:
    """The untrained tokenizer is byte-level: the most tokens any prompt can take (a context adds ~150)."""
    tokenizer = _echo_tokenizer_class()()
    for text in shipped_prompts_alone():
        ids = tokenizer.encode(text)
        assert len(ids) + 2 <= CONTEXT_LENGTH, text  # + <bos> and <eos>
        assert tokenizer.decode(ids) == tokenizer.clean(text)


def test_shipped_prompts_fit_an_echo_tokenizer_trained_on_simulated_reports() -> None:
    echo_tokenizer = _echo_tokenizer_class()
    try:
        from echoclip.data.synthetic import simulate_reports
    except ImportError as e:
        pytest.skip(f"the simulator's reports are not available yet ({e})")
    tokenizer = echo_tokenizer.train(simulate_reports(200, seed=0))
    texts = all_shipped_texts()
    ids = tokenizer(texts, context_length=CONTEXT_LENGTH)
    for text, row in zip(texts, ids.tolist(), strict=True):
        assert row[-1] == tokenizer.pad_token_id, f"{text!r} fills the whole context"
        assert len(tokenizer.encode(text)) + 2 <= CONTEXT_LENGTH


def test_expand_template_and_value_format() -> None:
    assert expand_template("LVEF <#>%.", [35, 42.5]) == ["LVEF 35%.", "LVEF 42.5%."]
    assert format_value(40.0) == "40" and format_value(0.1 * 3) == "0.3"
    with pytest.raises(ConfigError, match="no <#> placeholder"):
        expand_template("LVEF IS NORMAL.", [1])


def test_regression_grid_with_fractional_step_and_report_range() -> None:
    ps = load_prompt_set(
        {
            "name": "x",
            "targets": {
                "ef": {"type": "regression", "templates": ["EF <#>%."], "range": [0, 1], "step": 0.1},
                "ef2": {
                    "type": "regression",
                    "templates": ["EF <#>%."],
                    "range": [0, 100],
                    "step": 5,
                    "report_range": [12, 31],
                },
            },
        }
    )
    assert list(ps.targets["ef"].values()) == pytest.approx([i / 10 for i in range(11)])
    assert ps.targets["ef"].prompts()[3] == ["EF 0.3%."]
    assert list(ps.targets["ef2"].values()) == [15, 20, 25, 30]


def test_save_and_load_round_trip(tmp_path) -> None:
    for name in list_prompt_sets():
        ps = load_prompt_set(name)
        path = save_prompt_set(ps, tmp_path / f"{name}.json")
        again = load_prompt_set(path)
        assert again.to_dict() == ps.to_dict()
        assert again.texts() == ps.texts()
    assert not list(tmp_path.glob("*.tmp"))


def test_contexts_wrap_every_prompt_and_survive_a_round_trip(tmp_path) -> None:
    ps = load_prompt_set(
        {
            "name": "ctx",
            "contexts": ["LVEF 60%. {} NO EFFUSION.", "{} NORMAL RV."],
            "targets": {
                "tavr": {"type": "binary", "positive": ["TAVR IN SITU."], "negative": ["NORMAL LA."]},
                "ef": {"type": "regression", "templates": ["EF <#>%."], "range": [40, 41], "step": 1},
                "view": {"type": "categorical", "classes": {"A4C": ["APICAL."], "PLAX": ["LONG AXIS."]}},
            },
        }
    )
    tavr, ef, view = ps.targets["tavr"], ps.targets["ef"], ps.targets["view"]
    assert tavr.positive == ("TAVR IN SITU.",)  # the prompts as written
    assert tavr.positive_texts() == ["LVEF 60%. TAVR IN SITU. NO EFFUSION.", "TAVR IN SITU. NORMAL RV."]
    assert tavr.negative_texts() == ["LVEF 60%. NORMAL LA. NO EFFUSION.", "NORMAL LA. NORMAL RV."]
    assert ef.prompts() == [
        ["LVEF 60%. EF 40%. NO EFFUSION.", "EF 40%. NORMAL RV."],
        ["LVEF 60%. EF 41%. NO EFFUSION.", "EF 41%. NORMAL RV."],
    ]
    assert view.class_texts("PLAX") == ["LVEF 60%. LONG AXIS. NO EFFUSION.", "LONG AXIS. NORMAL RV."]
    assert "APICAL. NORMAL RV." in ps.texts() and "TAVR IN SITU." not in ps.texts()
    again = load_prompt_set(save_prompt_set(ps, tmp_path / "ctx.json"))
    assert again.contexts == ps.contexts and again.texts() == ps.texts()
    # without contexts, a prompt is read as written
    plain = load_prompt_set({"targets": {"a": {"type": "binary", "positive": ["A PACEMAKER LEAD IS SEEN."]}}})
    assert plain.targets["a"].positive_texts() == ["A PACEMAKER LEAD IS SEEN."]


def test_the_device_set_asks_its_prompts_inside_ordinary_reports() -> None:
    devices = load_prompt_set("devices")
    assert len(devices.contexts) >= 4
    for target in devices.targets.values():
        assert target.contexts == devices.contexts
        assert len(target.positive_texts()) == len(devices.contexts) * len(target.positive)
        assert all(t.count(".") >= 4 for t in target.positive_texts())  # a few sentences around the prompt


def test_a_dict_is_a_prompt_set_too() -> None:
    ps = load_prompt_set({"targets": {"a": {"type": "binary", "positive": ["A PACEMAKER LEAD IS SEEN."]}}})
    assert ps.targets["a"].positive == ("A PACEMAKER LEAD IS SEEN.",) and ps.targets["a"].negative == ()


def _regression(**changes):
    target = {"type": "regression", "templates": ["LVEF <#>%."], "range": [0, 100], "step": 1, **changes}
    return {"name": "bad", "targets": {"ef": target}}


@pytest.mark.parametrize(
    ("prompt_set", "message"),
    [
        (
            _regression(templates=["LVEF IS NORMAL."]),
            "target 'ef': template 'LVEF IS NORMAL.' has no <#> placeholder",
        ),
        (_regression(templates=[]), "'templates' is an empty prompt list"),
        (_regression(step=0), "'step' must be positive"),
        (_regression(range=[50, 10]), "'range' .* has high < low"),
        (_regression(report_range=[200, 300]), "no candidate value"),
        (_regression(unit_typo="%"), r"unknown keys \['unit_typo'\]"),
        (_regression(method="median"), "unknown method 'median' for regression targets"),
        (_regression(method_options={"top_fraction": 0.3}), "'method_options' need the 'method'"),
        (
            _regression(method="echoclip_rank", method_options={"top_fraction": "a"}),
            "must be a finite number",
        ),
        ({"targets": {"p": {"type": "binary", "positive": []}}}, "'positive' is an empty prompt list"),
        ({"targets": {"p": {"type": "binary", "positive": "ONE STRING."}}}, "must be a list of prompts"),
        (
            {"targets": {"p": {"type": "binary", "positive": ["A."], "negative": []}}},
            "'negative' is an empty",
        ),
        (
            {"targets": {"v": {"type": "categorical", "classes": {"A4C": ["X."]}}}},
            "at least two class labels",
        ),
        ({"targets": {"v": {"type": "categorical", "classes": {"A4C": ["X."], "A2C": []}}}}, "class 'A2C'"),
        ({"targets": {"v": {"type": "ordinal"}}}, "'type' must be one of"),
        (
            {"contexts": ["LVEF 60%."], "targets": {"p": {"type": "binary", "positive": ["A."]}}},
            r"'contexts': every context needs exactly one \{\}",
        ),
        (
            {"contexts": ["{} AND {}."], "targets": {"p": {"type": "binary", "positive": ["A."]}}},
            "exactly one",
        ),
        (
            {"contexts": "LVEF 60%. {}", "targets": {"p": {"type": "binary", "positive": ["A."]}}},
            "'contexts' must be a list",
        ),
        ({"targets": {}}, "'targets' must be a non-empty object"),
        (
            {"targets": {"p": {"type": "binary", "positive": ["A."], "label": 3}}},
            "'label' must be a column name",
        ),
        (
            {"targets": {"p": {"type": "binary", "positive": ["A."], "calibration": {"method": "magic"}}}},
            "calibration",
        ),
    ],
)
def test_bad_prompt_sets_fail_with_one_readable_error(prompt_set, message) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_prompt_set(prompt_set)
    assert "\n" not in str(info.value)


def test_bad_files_and_names(tmp_path) -> None:
    with pytest.raises(ConfigError, match="unknown prompt set 'ejection'; shipped sets: .*devices"):
        load_prompt_set("ejection")
    with pytest.raises(ConfigError, match="prompt set file not found"):
        load_prompt_set(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"targets": {')
    with pytest.raises(ConfigError, match=re.escape(str(broken)) + ": not valid JSON"):
        load_prompt_set(broken)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_regression(templates=["LVEF."])))
    with pytest.raises(ConfigError, match=re.escape(str(bad))):
        load_prompt_set(bad)


def test_measurement_prompts_write_values_as_reports_do():
    lvidd = load_prompt_set("measurements").targets["lvidd"]
    assert lvidd.texts()[:3] == ["LVIDD 3.0 CM.", "LV CAVITY SIZE (LVIDD 3.0 CM).", "LVIDD 3.1 CM."]
    assert load_prompt_set("ejection_fraction").texts()[0].endswith(" 5%.")  # whole numbers stay whole
