"""Tests of value tokens (tokenizer/values.py): every integer 0-100 is one token, templates expand per value."""

from __future__ import annotations

import pytest

from echoclip.tokenizer import EchoTokenizer, expand_template
from echoclip.tokenizer.values import format_value

EF_TEMPLATE = "LV EJECTION FRACTION IS <#>%"


def test_expand_template_formats_values() -> None:
    assert expand_template("EF <#>%.", [35, 40.0, 42.5, "MILD"]) == [
        "EF 35%.",
        "EF 40%.",
        "EF 42.5%.",
        "EF MILD%.",
    ]
    assert format_value(0.1 + 0.2) == "0.3"
    with pytest.raises(ValueError, match="placeholder"):
        expand_template("EF IS 55%", [1])
    with pytest.raises(TypeError):
        expand_template("EF <#>", [None])
    with pytest.raises(TypeError):
        expand_template(None, [1])  # type: ignore[arg-type]


@pytest.mark.parametrize("which", ["untrained", "trained"])
def test_ef_template_gives_101_prompts_differing_in_one_token(
    which: str, request: pytest.FixtureRequest
) -> None:
    tok: EchoTokenizer = request.getfixturevalue(which)
    prompts = tok.expand_template(EF_TEMPLATE, range(101))
    assert len(prompts) == 101
    ids = tok(prompts)
    assert ids.shape == (101, 77)
    differs = (ids != ids[0]).any(dim=0)
    assert int(differs.sum()) == 1, "all prompts must share every token but the value"
    position = int(differs.nonzero()[0, 0])
    values = tok.value_token_values()
    assert [values[int(i)] for i in ids[:, position]] == [float(v) for v in range(101)]


@pytest.mark.parametrize("which", ["untrained", "trained"])
def test_every_integer_0_to_100_is_one_token_in_context(which: str, request: pytest.FixtureRequest) -> None:
    tok: EchoTokenizer = request.getfixturevalue(which)
    values = tok.value_token_values()
    for n in range(101):
        for text in (f"EF {n}%", f"({n})", f"{n}", f"SIZE {n} CM.", f"{n}-{n}"):
            tokens = tok.tokens(text)
            assert str(n) in tokens, (text, tokens)
            assert values[tok.encode(str(n))[0]] == n


def test_whole_numbers_only(untrained: EchoTokenizer) -> None:
    tok = untrained
    assert tok.tokens("100") == ["100"]  # not 10 + 0
    assert "100" not in tok.tokens("1000") and "10" not in tok.tokens("1000")
    assert "55" not in tok.tokens("A55B")  # single digits are characters too, and share the ids of 0-9
    assert "10" not in tok.tokens("05 010")
    assert tok.tokens("3.5 CM") == ["3.5", " ", "C", "M"]
    assert tok.tokens("12.5")[:2] == ["12", ".5"]


def test_severity_words_are_value_tokens(trained: EchoTokenizer) -> None:
    severity = trained.severity_token_values()
    for word, value in [
        ("MILD", 1.0),
        ("MODERATE", 2.0),
        ("SEVERE", 3.0),
        ("MILD/MODERATE", 1.5),
        ("MODERATE TO SEVERE", 2.5),
    ]:
        ids = trained.encode(f"THERE IS {word} MITRAL REGURGITATION.")
        assert [severity[i] for i in ids if i in severity] == [value], word
    assert not set(trained.encode("MILDER")) & set(severity)


def test_value_token_values_map_ids_to_their_text(trained: EchoTokenizer) -> None:
    values = trained.value_token_values()
    assert len(values) == 101 + 100 + 10
    for token_id, value in values.items():
        assert float(trained.decode([token_id])) == value
    assert max(values) < trained.vocab_size
