"""Tests of tokenizer/echoclip_r.py: the EchoCLIP-R id layout, its cleaning, and the count of dropped text.

The published phrase file is not part of this project. The tests that compare with the
published tokenizer use a stand-in phrase file of 770 phrases (the published size)
that holds the phrases its cleaning rules aim at, and expect ids as the published
code's rules and id layout predict them. ``ECHOCLIP_R_PHRASE_FILE`` names the published
file to run the same checks on it too.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from echoclip.tokenizer import EchoClipRTokenizer, TokenizerError
from echoclip.tokenizer.echoclip_r import PLACEHOLDER, VALUE_VOCAB, learn_phrase_file

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
        ("a", "a"),  # text of fewer than two characters is left as it is
        ("it`s 5[.]5 and 5.5", "IT'S 5. 5 AND 5.5 "),  # periods split before brackets go
        ("RVSP 30 + CVP mmHg", "RVSP 30MMHG "),
        ("lv ejection fraction is 60 %", "LV EJECTION FRACTION IS 60%. "),
        ("lv ejection fraction is 60%.", "LV EJECTION FRACTION IS 60%. "),
        ("shortness breath, chest pain", "SHORTNESS BREATH., CHEST PAIN "),
        ("Normal CMR and A4.5", "NORMALCMR AND "),  # units join any word; a code-like token goes
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


# ---------------------------------------------------------------- fidelity to the published tokenizer

# The published value vocabulary after the five special tokens, written out here so that
# these tests pin the layout rather than read it from the module under test.
PUBLISHED_VALUES = [
    *(str(i) for i in range(101)),
    "‡",
    "MILD",
    "MODERATE",
    "SEVERE",
    "MILD/MODERATE",
    "MODERATE/SEVERE",
    *(f".{d}" for d in range(10)),
    *(f"0{d}" for d in range(10)),
]
SEVERITIES = ["MILD", "MODERATE", "SEVERE", "MILD/MODERATE", "MODERATE/SEVERE"]

# Phrases of the published file that its cleaning adds a final period to
PERIOD_ADDED = [
    "THE PEAK TRANSAORTIC GRADIENT IS <#>MMHG. ",
    "THE MEAN TRANSAORTIC GRADIENT IS <#>MMHG. ",
    "LV EJECTION FRACTION IS <#>%. ",
    "ESTIMATED PA PRESSURE IS <#>MMHG. ",
    "RESTING SEGMENTAL WALL MOTION ANALYSIS. ",
    "THE IVC DIAMETER IS <#>MM. ",
    "EST RV/RA PRESSURE GRADIENT IS <#>MMHG. ",
    "ESTIMATED PEAK RVSP IS <#>MMHG. ",
    "HEART FAILURE, UNSPECIFIED. ",
    "CHEST PAIN, UNSPECIFIED. ",
    "SINUS OF VALSALVA: <#>CM. ",
    "THE PEAK TRANSMITRAL GRADIENT IS <#>MMHG. ",
    "THE MEAN TRANSMITRAL GRADIENT IS <#>MMHG. ",
    "ASCENDING AORTA <#>CM. ",
    "ESTIMATED PA SYSTOLIC PRESSURE IS <#>MMHG. ",
    "SHORTNESS BREATH. ",
    "ABNORMAL ELECTROCARDIOGRAM ECG EKG. ",
    "THE LEFT ATRIAL APPENDAGE IS NORMAL IN APPEARANCE WITH NO EVIDENCE OF THROMBUS. ",
]
IVC_PHRASE = "THE INFERIOR VENA CAVA SHOWS A NORMAL RESPIRATORY COLLAPSE CONSISTENT WITH NORMAL RIGHT ATRIAL PRESSURE (<#>MMHG). "
IVC_LONG = (
    "The inferior vena cava is normal in size and shows a normal respiratory collapse, "
    "consistent with normal right atrial pressure ({} mmHg)."
)

# Stand-in phrases in the shapes of the published file: values inside words
# ("<#>D", "A<#>", "CM<#>"), ranges, brackets, several sentences, no final period.
SUBJECTS = [
    "THE LEFT VENTRICLE",
    "THE RIGHT VENTRICLE",
    "THE LEFT ATRIUM",
    "THE RIGHT ATRIUM",
    "THE AORTIC ROOT",
    "THE ASCENDING AORTA",
    "THE MITRAL VALVE",
    "THE AORTIC VALVE",
    "THE TRICUSPID VALVE",
    "THE PULMONIC VALVE",
    "THE INTERATRIAL SEPTUM",
    "THE VENTRICULAR SEPTUM",
    "THE PERICARDIUM",
    "THE INFERIOR VENA CAVA",
    "THE LEFT ATRIAL APPENDAGE",
    "THE DESCENDING AORTA",
    "THE AORTIC ARCH",
    "THE MITRAL ANNULUS",
    "THE SINOTUBULAR JUNCTION",
    "THE LV OUTFLOW TRACT",
]
PREDICATES = [
    "IS NORMAL IN SIZE. ",
    "IS <#> DILATED. ",
    "APPEARS <#> THICKENED. ",
    "IS NOT WELL VISUALIZED. ",
    "MEASURES <#>CM. ",
    "MEASURES <#>MM IN DIAMETER. ",
    "HAS A PEAK GRADIENT OF <#>MMHG. ",
    "SHOWS <#> CALCIFICATION. ",
    "IS UNCHANGED SINCE THE PRIOR STUDY ",
    "HAS AN AREA OF <#>CM<#> ",
    "IS <#>% SMALLER THAN BEFORE. ",
    "SHOWS <#> TO <#> REGURGITATION. ",
    "IS SEEN IN DETAIL BY <#>D IMAGING. ",
    "HAS A WALL OF <#>-<#>MM. ",
    "SUGGESTS A HIGH PRESSURE (><#>MMHG). ",
    "JOINS SEGMENTS A<#> AND P<#> OF THE LEAFLETS. ",
    "IS STATUS POST REPAIR. THE REPAIR APPEARS INTACT. ",
    "HAS A MOBILE ECHO DENSITY, CONSISTENT WITH A VEGETATION. ",
    "CANNOT BE ASSESSED (LIMITED WINDOWS). ",
    "IS THE PATIENT'S NATIVE STRUCTURE. ",
    "SHOWS A NEW FINDING; CONSIDER TEE. ",
    "IS COMPARED WITH THE STUDY OF <#>/<#>/<#> AND ",
    "HAS A VOLUME OF <#> ML/M<#> AT REST. ",
    "IS HYPERDYNAMIC. ",
    "MOVES PARADOXICALLY. ",
    "IS ECHO-FREE IN APPEARANCE. ",
    "HAS A VELOCITY OF <#> M/S. ",
    "IS <#> TO LARGE. ",
    "APPEARS <#> RESTRICTED IN MOTION. ",
    "IS NOW <#>MMHG HIGHER. ",
    "HAS <#> OF <#> SEGMENTS INVOLVED. ",
    "HAS BEEN REPLACED ",
    "IS ANEURYSMAL AT THE BASE. ",
    "IS THIN AND HYPERMOBILE. ",
    "HAS A SCORE OF <#> ON REVIEW. ",
    "IS NORMAL IN APPEARANCE AND FUNCTION. ",
    "SHOWS SPONTANEOUS ECHO CONTRAST. ",
    "IS <#> HYPOKINETIC. ",
    "HAS A STRAIN OF <#>%. ",
    "HAS A MEAN GRADIENT OF <#>MMHG AT <#> BPM. ",
]
# sentences that no phrase matches, with values that go with them
UNKNOWN = ["A THROMBUS OF 12MM IS SEEN. ", "Patient tolerated the procedure; HR 72 BPM. "]


def stand_in_phrases() -> list[str]:
    """770 distinct phrases, the rule phrases among generated ones, in a fixed shuffled order."""
    generated = [f"{subject} {predicate}" for predicate in PREDICATES for subject in SUBJECTS]
    phrases = [*PERIOD_ADDED, IVC_PHRASE, *generated[: 770 - len(PERIOD_ADDED) - 1]]
    random.Random(0).shuffle(phrases)
    return phrases


@pytest.fixture(scope="module")
def published_phrases(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("echoclip_r") / "phrases.txt"
    path.write_text("\n".join(stand_in_phrases()) + "\n", encoding="utf-8")
    return path


def fill(phrase: str, rng: random.Random) -> tuple[str, list[str]]:
    """``phrase`` with each ``<#>`` replaced by a value, and the values.

    Inside a word or a date-like group a value is a small integer; next to other
    characters (``<#>%``, ``(<#>MMHG``) a number, since the published code takes a
    severity word there for no value or adds no period after it; between spaces an
    integer 0-100, a one-decimal number or a severity word.
    """
    parts = phrase.split(PLACEHOLDER)
    values = []
    for before, after in zip(parts, parts[1:], strict=False):
        around = before[-1:] + after[:1]
        if any(c.isalpha() or c == "/" for c in around):
            values.append(str(rng.randint(1, 9)))
            continue
        kind = rng.randrange(3 if around == "  " else 2)
        if kind == 0:
            values.append(str(rng.randint(0, 100)))
        elif kind == 1:
            values.append(f"{rng.randint(0, 9)}.{rng.randint(0, 9)}")
        else:
            values.append(rng.choice(SEVERITIES))
    text = parts[0] + "".join(v + part for v, part in zip(values, parts[1:], strict=True))
    return text, values


def expected_ids(phrase_id: int, values: list[str], phrase_ids: int = 775) -> list[int]:
    """The published layout: the phrase id, then its values joined by ``‡`` in the value vocabulary."""
    tokens: list[str] = []
    for k, value in enumerate(values):
        if k:
            tokens.append("‡")
        whole, point, decimal = value.partition(".")
        tokens += [whole, f".{decimal}"] if point else [value]
    return [phrase_id, *(phrase_ids + 5 + PUBLISHED_VALUES.index(t) for t in tokens)]


def without_final_period(text: str) -> str:
    text = text.rstrip()
    return text[:-1] if text.endswith(".") else text


def test_stand_in_phrases_are_distinct_and_none_holds_another() -> None:
    # so that each phrase, and each report of whole phrases, matches phrase by phrase
    phrases = stand_in_phrases()
    assert len(set(phrases)) == 770
    assert not [(a, b) for a in phrases for b in phrases if a != b and a in b]


def test_published_layout_of_770_phrases(published_phrases: Path) -> None:
    tok = EchoClipRTokenizer(published_phrases)
    assert (tok.phrase_vocab_size, tok.bos_token_id, tok.eos_token_id) == (775, 907, 908)


def test_770_phrases_as_written_lower_case_and_without_final_period(published_phrases: Path) -> None:
    tok = EchoClipRTokenizer(published_phrases)
    bos, eos = tok.bos_token_id, tok.eos_token_id
    rng = random.Random(1)
    counts = {"as written": 0, "lower case": 0, "without period": 0}
    period_added = set(PERIOD_ADDED)
    for i, phrase in enumerate(stand_in_phrases()):
        text, values = fill(phrase, rng)
        matched = [bos, *expected_ids(5 + i, values), eos]
        counts["as written"] += tok.encode(text) == matched
        counts["lower case"] += tok.encode(text.lower()) == matched
        # without its final period a phrase matches only if the cleaning adds it back
        # (or it has none); otherwise nothing matches and all is dropped
        keeps = phrase in period_added or not phrase.endswith(". ")
        counts["without period"] += tok.encode(without_final_period(text)) == (
            matched if keeps else [bos, eos]
        )
    assert counts == {"as written": 770, "lower case": 770, "without period": 770}


def test_long_ivc_and_cvp_sentences_map_to_their_phrases(published_phrases: Path) -> None:
    tok = EchoClipRTokenizer(published_phrases)
    phrases = stand_in_phrases()
    bos, eos = tok.bos_token_id, tok.eos_token_id
    ivc = 5 + phrases.index(IVC_PHRASE)
    pa_systolic = 5 + phrases.index("ESTIMATED PA SYSTOLIC PRESSURE IS <#>MMHG. ")
    gradient = 5 + phrases.index("EST RV/RA PRESSURE GRADIENT IS <#>MMHG. ")
    analysis = 5 + phrases.index("RESTING SEGMENTAL WALL MOTION ANALYSIS. ")
    cases = {
        IVC_LONG.format(3): [bos, *expected_ids(ivc, ["3"]), eos],
        IVC_LONG.format(3).upper(): [bos, *expected_ids(ivc, ["3"]), eos],
        "Estimated PA systolic pressure is 35 + CVP mmHg.": [bos, *expected_ids(pa_systolic, ["35"]), eos],
        "estimated pulmonary artery systolic pressure was 40 + cvp mmhg": [
            bos,
            *expected_ids(pa_systolic, ["40"]),
            eos,
        ],
        # "+CVP" without its space stays apart from the number: no phrase matches
        "Estimated PA systolic pressure is 40 +CVP mmHg.": [bos, eos],
        "EST RV/RA PRESSURE GRADIENT IS 30 + CVP MMHG": [bos, *expected_ids(gradient, ["30"]), eos],
        "Resting segmental wall motion analysis:": [bos, analysis, eos],
    }
    assert {text: tok.encode(text) for text in cases} == cases


def test_50_reports_of_20_phrases(published_phrases: Path) -> None:
    tok = EchoClipRTokenizer(published_phrases)
    phrases = stand_in_phrases()
    rng = random.Random(2)
    identical = 0
    for _ in range(50):
        pieces, expected = [], [tok.bos_token_id]
        for i in rng.sample(range(len(phrases)), 20):
            text, values = fill(phrases[i], rng)
            style = rng.randrange(4)
            if phrases[i] == IVC_PHRASE and style == 0:
                text = IVC_LONG.format(values[0])
            elif style == 1:
                text = text.lower()
            elif style == 2 and (phrases[i] in PERIOD_ADDED or not phrases[i].endswith(". ")):
                text = without_final_period(text)
            pieces.append(text)
            expected += expected_ids(5 + i, values)
            if rng.random() < 0.2:  # unmatched text, dropped with its values
                pieces.append(rng.choice(UNKNOWN))
        expected.append(tok.eos_token_id)
        report = "".join(piece + rng.choice([" ", "\n", "\t ", " \u00a0 "]) for piece in pieces)
        identical += tok.encode(report) == expected
    assert identical == 50


def test_values_as_the_published_code_reads_them(tmp_path: Path) -> None:
    path = tmp_path / "phrases.txt"
    path.write_text("TOTAL SCORE IS <#>. \nTHERE IS <#> STENOSIS. \n", encoding="utf-8")
    tok = EchoClipRTokenizer(path)
    bos, eos, off = tok.bos_token_id, tok.eos_token_id, tok.phrase_vocab_size
    # an integer takes the period after it, so its sentence no longer matches; a decimal does
    assert tok.encode("Total score is 5.") == [bos, eos]
    assert tok.encode("Total score is 4.5.") == [bos, *expected_ids(5, ["4.5"], off), eos]
    # "VERY SEVERE" is one value, outside the value vocabulary but for its last word
    very_severe = [bos, 6, off, off + 5 + PUBLISHED_VALUES.index("SEVERE"), eos]
    assert tok.encode("There is very severe stenosis.") == very_severe


@pytest.mark.skipif(not os.environ.get("ECHOCLIP_R_PHRASE_FILE"), reason="ECHOCLIP_R_PHRASE_FILE not set")
def test_the_published_phrase_file() -> None:
    path = Path(os.environ["ECHOCLIP_R_PHRASE_FILE"])
    tok = EchoClipRTokenizer(path)
    phrases = [p for p in path.read_text(encoding="utf-8").split("\n") if p]
    assert (tok.phrase_vocab_size, tok.bos_token_id, tok.eos_token_id) == (775, 907, 908)
    rng = random.Random(3)
    for i, phrase in enumerate(phrases):
        text, values = fill(phrase, rng)
        if phrase.endswith("<#>. "):  # an integer would take the period (see above)
            text, values = text[: text.rindex(values[-1])] + "4.5. ", [*values[:-1], "4.5"]
        expected = [tok.bos_token_id, *expected_ids(5 + i, values), tok.eos_token_id]
        assert tok.encode(text) == expected, phrase
        assert tok.encode(text.lower()) == expected, phrase
        if phrase in PERIOD_ADDED:
            assert tok.encode(without_final_period(text)) == expected, phrase
