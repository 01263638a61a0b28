"""Tests of tokenizer/echoclip_r.py: the EchoCLIP-R id layout, its cleaning, and the count of dropped text."""

from __future__ import annotations

from pathlib import Path

import pytest

from echoclip.tokenizer import EchoClipRTokenizer, TokenizerError
from echoclip.tokenizer.echoclip_r import VALUE_VOCAB, learn_phrase_file

PHRASES = [
    "LV EJECTION FRACTION IS <#>%. ",
    "THE LEFT VENTRICLE IS NORMAL IN SIZE. ",
    "",  # empty lines take no id
    "THERE IS <#> MITRAL REGURGITATION. ",
    "THE LEFT VENTRICLE IS NORMAL IN SIZE. ",  # repeated lines neither
    "LVIDD <#>CM, LVIDS <#>CM. ",
    "THE LEFT VENTRICLE ",
]


@pytest.fixture()
def template(tmp_path: Path) -> EchoClipRTokenizer:
    path = tmp_path / "phrases.txt"
    path.write_text("\n".join(PHRASES) + "\n", encoding="utf-8")
    return EchoClipRTokenizer(path)


def test_id_layout(template: EchoClipRTokenizer) -> None:
    tok = template
    assert tok.phrase_vocab_size == 5 + 5  # 5 specials, 5 distinct phrases
    offset = tok.phrase_vocab_size
    assert len(VALUE_VOCAB) + 5 == 132
    assert (
        tok.bos_token_id == offset + 132
        and tok.eos_token_id == offset + 133
        and tok.vocab_size == offset + 134
    )
    ids = tok.encode("LV ejection fraction was 55 %.")
    assert ids == [tok.bos_token_id, 5, offset + 5 + 55, tok.eos_token_id]
    # phrases in file order from 5; values offset; severity words and decimals in the value vocabulary
    ids = tok.encode(
        "The left ventricle is normal in size. There is moderate mitral regurgitation. LVIDD 4.5 cm, LVIDS 3.1 cm."
    )
    sep, mild, moderate = offset + 5 + 101, offset + 5 + 102, offset + 5 + 103
    assert ids == [
        tok.bos_token_id,
        6,
        7,
        moderate,
        8,
        offset + 5 + 4,
        offset + 5 + 101 + 6 + 5,  # ".5"
        sep,
        offset + 5 + 3,
        offset + 5 + 101 + 6 + 1,  # ".1"
        tok.eos_token_id,
    ]
    assert mild == offset + VALUE_VOCAB.index("MILD") + 5
    assert (
        tok.id_to_token(5) == "[LV EJECTION FRACTION IS <#>%. ]" and tok.id_to_token(moderate) == "<MODERATE>"
    )


def test_longest_phrase_first(template: EchoClipRTokenizer) -> None:
    # "THE LEFT VENTRICLE " is a prefix of a longer phrase: the longer one wins
    assert template.encode("THE LEFT VENTRICLE IS NORMAL IN SIZE.")[1:-1] == [6]
    assert template.encode("THE LEFT VENTRICLE")[1:-1] == [9]


def test_unmatched_text_is_dropped_and_counted(template: EchoClipRTokenizer) -> None:
    tok = template
    ids, dropped, total = tok.encode_with_stats("LV EJECTION FRACTION IS 40%. A THROMBUS OF 12 MM IS SEEN.")
    assert ids == [tok.bos_token_id, 5, tok.phrase_vocab_size + 5 + 40, tok.eos_token_id]
    assert total == len("LVEJECTIONFRACTIONIS40%.ATHROMBUSOF12MMISSEEN.")
    assert dropped == len("ATHROMBUSOF12MMISSEEN.")
    assert tok.dropped_share == 0
    tok(["LV EJECTION FRACTION IS 40%.", "UNKNOWN SENTENCE."])
    assert 0 < tok.dropped_share < 1
    tok.reset_stats()
    tok(["LV EJECTION FRACTION IS 40%."])
    assert tok.dropped_share == 0


def test_padding_and_truncation(template: EchoClipRTokenizer) -> None:
    tok = template
    ids = tok(["LV EJECTION FRACTION IS 55%.", "LVIDD 4.5 CM, LVIDS 3.1 CM. " * 30])
    assert ids.shape == (2, 77)
    assert ids[0, :4].tolist() == [tok.bos_token_id, 5, tok.phrase_vocab_size + 60, tok.eos_token_id]
    assert (ids[0, 4:] == 0).all()
    assert ids[1, -1] == tok.eos_token_id and (ids[1] != 0).all()
    assert tok("", context_length=4).tolist() == [[tok.bos_token_id, tok.eos_token_id, 0, 0]]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("lv function was normally preserved", "LV FUNCTION IS NORMAL PRESERVED "),
        ("valves were mildly and/or moderately thickened", "VALVES ARE MILD AND MODERATE THICKENED "),
        ("severely dilated pulmonary artery", "SEVERE DILATED PA "),
        ("EF 55 % on 03/14/2023 or 14.03.2023, dx I50.9.", "EF 55% ON OR , DX. "),
        ("[LVIDD] 4.5 cm^ and 20 mmHg‡CRLF", "LVIDD 4.5CM AND 20MMHG "),
        ("NORMAL .THE END..", "NORMAL. THE END. "),
        ("", ""),
    ],
)
def test_cleaning(raw: str, expected: str) -> None:
    assert EchoClipRTokenizer.clean(raw) == expected


def test_bad_input(template: EchoClipRTokenizer, tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        template(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        template([b"bytes"])  # type: ignore[list-item]
    with pytest.raises(TokenizerError, match="no such phrase file"):
        EchoClipRTokenizer(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(TokenizerError, match="no phrases"):
        EchoClipRTokenizer(empty)
    with pytest.raises(ValueError):
        EchoClipRTokenizer()


def test_learned_phrase_file_covers_its_corpus(
    corpus: list[str], held_out: list[str], tmp_path: Path
) -> None:
    path = learn_phrase_file(corpus, tmp_path / "learned.txt", min_frequency=3)
    phrases = path.read_text(encoding="utf-8").splitlines()
    assert 50 < len(phrases) <= 770 and all(p.endswith(" ") for p in phrases)
    tok = EchoClipRTokenizer(path)
    ids = tok(held_out[:100])
    assert (ids[:, 0] == tok.bos_token_id).all()
    assert 0 < tok.dropped_share < 0.5
