"""The report splitter: headed, numbered and headless reports, and its config."""

from __future__ import annotations

import numpy as np
import pytest

from echoclip.errors import ConfigError
from echoclip.zeroshot.sections import SECTION_NAMES, load_section_config, split_sections, split_sentences

# what each sentence of the simulator states -> the section it belongs to
TOPIC_SECTION = {
    "indication": "other",
    "quality": "other",
    "rhythm": "other",
    "aorta": "other",
    "measurements": "other",
    "normal": "other",
    "comparison": "comparison",
    "ef": "lv",
    "lv_dilation": "lv",
    "lv_hypertrophy": "lv",
    "lv_function": "lv",
    "wall_motion": "lv",
    "diastolic": "lv",
    "rv_dilation": "rv",
    "la_enlargement": "atria",
    "ra": "atria",
    "aortic_valve": "valves",
    "mitral_valve": "valves",
    "tricuspid": "valves",
    "pericardial_effusion": "pericardium",
    **{d: "devices" for d in ("pacemaker", "tavr", "surgical_valve", "mitraclip", "impella")},
}
HEADINGS = ["LEFT VENTRICLE:", "RIGHT VENTRICLE / ATRIA:", "VALVES:", "PERICARDIUM / OTHER:", "IMPRESSION:"]


def _topic_section(topic: str) -> str:
    return TOPIC_SECTION.get(topic.removeprefix("no_"), "?")


def _simulated(n: int, seed: int):
    from echoclip.data.synthetic import cardiac_state, make_patient
    from echoclip.data.synthetic.reports import report_sentences

    rng = np.random.default_rng(seed)
    for i in range(n):
        state = cardiac_state(make_patient(seed * 1000 + i), 0, 1)
        yield report_sentences(state, rng)


def _sentences_of(text: str) -> list[str]:
    """A simulator sentence may hold two ("Trace TR. Estimated RVSP 30 mmHg.")."""
    import re

    return [s for s in re.split(r"(?<=[.!?])\s+", text) if s]


@pytest.mark.parametrize("layout", ["headed", "numbered", "headless"])
def test_every_sentence_of_simulated_reports_lands_in_its_section(layout) -> None:
    checked = 0
    for sections in _simulated(60, seed={"headed": 1, "numbered": 2, "headless": 3}[layout]):
        expected: list[tuple[str, str]] = []
        if layout == "headed":
            lines = [" ".join(s for _, s in sections[0])]
            for heading, section in zip(HEADINGS, sections[1:], strict=True):
                lines.append(
                    heading
                    + " "
                    + " ".join(
                        f"{i}. {s}" if heading == "IMPRESSION:" else s for i, (_, s) in enumerate(section, 1)
                    )
                )
            text = "\n".join(lines)
            for i, section in enumerate(sections):
                for topic, s in section:
                    want = "summary" if i == 5 else _topic_section(topic)
                    expected += [(want, p) for p in _sentences_of(s)]
        else:
            body = [pair for section in sections for pair in section]
            if layout == "numbered":
                text = "\n".join(f"{i}) {s}" for i, (_, s) in enumerate(body, 1))
            else:
                text = " ".join(s for _, s in body)
            expected = [(_topic_section(t), p) for t, s in body for p in _sentences_of(s)]
        got = split_sentences(text.upper() if checked % 2 else text)
        assert [g for g, _ in got] == [e for e, _ in expected], text
        checked += 1
    assert checked == 60


def test_headings_labels_and_an_unknown_heading() -> None:
    text = (
        "INDICATION: Dyspnea. No prior study for comparison.\n"
        "LEFT VENTRICLE: The LV is dilated. EF: 30%. A pacemaker lead is seen.\n"
        "BUBBLE STUDY: Negative for shunt.\n"
        "Right Ventricle / Atria: RV is normal. LA: normal.\n"
        "OTHER: Pericardium: small effusion. Normal caliber aortic root.\n"
        "Conclusion: 1. Dilated LV. 2. Pacemaker in place."
    )
    assert split_sections(text) == {
        "lv": "The LV is dilated. EF: 30%.",
        "rv": "RV is normal.",
        "atria": "LA: normal.",
        "pericardium": "Pericardium: small effusion.",
        "devices": "A pacemaker lead is seen.",
        "comparison": "No prior study for comparison.",
        "summary": "Dilated LV. Pacemaker in place.",
        "other": "INDICATION: Dyspnea. Negative for shunt. Normal caliber aortic root.",
    }
    assert list(split_sections(text)) == [n for n in SECTION_NAMES if n in split_sections(text)]


def test_prose_with_an_inline_conclusion() -> None:
    text = "Reason for study: Murmur. Mild LVH. Trace MR. Conclusion: Normal LV function. Mild LVH."
    assert split_sections(text) == {
        "lv": "Mild LVH.",
        "valves": "Trace MR.",
        "summary": "Normal LV function. Mild LVH.",
        "other": "Reason for study: Murmur.",
    }


def test_the_config_is_respected(tmp_path) -> None:
    import json

    config = {
        "name": "tiny",
        "sections": [
            {"name": "heart", "headings": ["CARDIAC"], "patterns": ["ventric"]},
            {"name": "lungs", "headings": ["PULMONARY"], "patterns": ["lung|pleura"]},
        ],
    }
    text = "The lungs are clear. Left ventricle normal. Bowel normal.\nCARDIAC: Normal size. No effusion."
    expected = {
        "heart": "Left ventricle normal. Normal size. No effusion.",
        "lungs": "The lungs are clear.",
        "other": "Bowel normal.",
    }
    assert split_sections(text, config) == expected
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(config))
    assert split_sections(text, path) == expected
    assert load_section_config(path).order == ("heart", "lungs", "other")
    with pytest.raises(ConfigError, match="tiny.json"):
        path.write_text('{"sections": [{"name": "x", "patterns": ["("]}]}')
        load_section_config(path)
    with pytest.raises(ConfigError, match="unknown section config 'nope'"):
        load_section_config("nope")


def test_the_shipped_config_names_the_canonical_sections() -> None:
    assert set(load_section_config().order) == set(SECTION_NAMES)


def test_device_phrases_of_simulated_reports_land_in_devices() -> None:
    from echoclip.data.synthetic import simulate_reports
    from echoclip.data.synthetic.reports import DEVICE_PATTERNS

    for report in simulate_reports(40, seed=5):
        for section, sentence in split_sentences(report):
            if section not in ("summary",) and any(p.search(sentence) for p in DEVICE_PATTERNS.values()):
                assert section == "devices", sentence
