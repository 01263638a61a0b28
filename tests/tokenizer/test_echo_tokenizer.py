"""Tests of tokenizer/echo_tokenizer.py: lossless, compact, batch layout, files and loaders, bad input."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from echoclip.tokenizer import CleaningConfig, EchoTokenizer, TokenizerError


def test_round_trip_on_held_out_reports(trained: EchoTokenizer, held_out: list[str]) -> None:
    for report in held_out:
        assert trained.decode(trained.encode(report)) == trained.clean(report)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_round_trip_on_any_text_untrained(text: str) -> None:
    tok = _UNTRAINED
    assert tok.decode(tok.encode(text)) == tok.clean(text)


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.sampled_from(list("0123456789.-%/ <>MILDSEVRATOPQ\u00e9\u6771\n")) | st.characters())
)
def test_round_trip_on_any_text_trained(text: str) -> None:
    tok = _trained_for_fuzzing()
    assert tok.decode(tok.encode(text)) == tok.clean(text)
    ids = tok([text, ""], context_length=16)
    assert ids.shape == (2, 16) and int(ids[0, 0]) == tok.bos_token_id


def test_trained_tokenizer_is_compact(
    trained: EchoTokenizer, untrained: EchoTokenizer, held_out: list[str]
) -> None:
    learned = np.mean([len(ids) for ids in trained.encode_batch(held_out)])
    bytes_only = np.mean([len(ids) for ids in untrained.encode_batch(held_out)])
    assert learned < 0.15 * bytes_only
    assert learned < 80


def test_batch_layout(trained: EchoTokenizer, held_out: list[str]) -> None:
    tok = trained
    short = "LV EJECTION FRACTION IS 55%."
    out = tok.tokenize([short, held_out[0] * 4], context_length=40)
    ids, mask = out["input_ids"], out["attention_mask"]
    assert ids.dtype == torch.long and ids.shape == (2, 40)
    n = len(tok.encode(short)) + 2
    assert ids[0, 0] == tok.bos_token_id and ids[0, n - 1] == tok.eos_token_id
    assert (ids[0, n:] == tok.pad_token_id).all() and tok.pad_token_id == 0
    assert mask[0].tolist() == [1] * n + [0] * (40 - n)
    # truncation keeps the end token, as open_clip does
    assert ids[1, -1] == tok.eos_token_id and mask[1].all()
    assert ids[1, 1:-1].tolist() == tok.encode(held_out[0] * 4)[:38]
    assert torch.equal(tok(short), tok([short])) and tok(short).shape == (1, 77)
    assert tok.decode_batch(ids)[0] == tok.clean(short)
    assert tok.eos_token_id == tok.vocab_size - 1 and tok.bos_token_id == tok.vocab_size - 2


def test_long_input_is_cut_without_changing_the_kept_tokens(
    trained: EchoTokenizer, held_out: list[str]
) -> None:
    long_text = " ".join(held_out[:60])  # far beyond the cut length
    full = trained.encode(long_text)
    ids = trained([long_text], context_length=77)[0].tolist()
    assert ids[1:-1] == full[:75]


def test_empty_and_huge_strings(untrained: EchoTokenizer, trained: EchoTokenizer) -> None:
    for tok in (untrained, trained):
        ids = tok(["", "   "])
        assert ids[:, :2].tolist() == [[tok.bos_token_id, tok.eos_token_id]] * 2 and (ids[:, 2:] == 0).all()
        huge = ("LV EJECTION FRACTION IS 55%. THE LEFT VENTRICLE IS NORMAL IN SIZE. " * 15_000)[:1_000_000]
        start = time.perf_counter()
        ids = tok(huge)
        assert time.perf_counter() - start < 10
        assert ids.shape == (1, 77) and ids[0, -1] == tok.eos_token_id and (ids != 0).all()
        assert tok(["x" * 1_000_000]).shape == (1, 77)


@pytest.mark.parametrize("bad", [None, b"report", 42, 3.5])
def test_wrong_types_are_type_errors(untrained: EchoTokenizer, bad: object) -> None:
    with pytest.raises(TypeError, match="str"):
        untrained(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="str"):
        untrained.encode(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        untrained(["fine", bad])  # type: ignore[list-item]


def test_bad_context_length(untrained: EchoTokenizer) -> None:
    for bad in (1, 0, -5, 7.5, True):
        with pytest.raises(ValueError, match="context_length"):
            untrained("text", context_length=bad)  # type: ignore[arg-type]


# Reports unlike the simulator's: lower and mixed case, dates, identifiers, unicode
# spaces and digits, accents, tabs and line breaks.
OUT_OF_DOMAIN = [
    "lv ejection fraction is 55 %. normal lv size.",
    "Echo on 03/14/2023: LVEF 35%, moderate MR.",
    "MRN: 12345678\nAccession # AB123456\tStudy date 2023-03-14",
    "Patient\u00a0seen 14 Mar 2023; EF\u00a050-55%.",
    "ＬＶＥＦ ５５％, full-width digits and letters",
    "Dr. Müller notes trace TR; São Paulo referral, naïve café",
    "Ejection fraction was estimated at 60 % by Simpson\u2019s biplane method.",
    "\tIndented\r\nwindows line ends\r\nand  double  spaces ",
    "Severe AS: AVA 0.8 cm², mean gradient 45 mmHg, Vmax 4.2 m/s.",
    "Pacemaker lead seen in RA/RV. ICD code I50.9 and I25.10.",
    "Phone 310-555-0123; uid 1.2.840.10008.5.1.4",
    "Mild–moderate MR (≥2+), E/e\u2032 14, LAVI 40 mL/m²",
    "patient id: 1234-5678 · medical record no. 00123456",
    "The LV is ﬁne; ligature ﬁ and Ⅻ roman numeral",
    "Ǆ ǰ ß ŉ ΐ: letters whose upper case is longer or decomposed",
    "Стресс-эхо: ФВ ЛЖ 55%, а\u0301кцент",
    "Zero\u200bwidth\u200dspace, soft\u00adhyphen and bidi \u202ework\u202c",
    "ΕΚΚΕΝΤΡΟ jet; τριγλώχινα mild regurgitation",
    "RVSP 35 + CVP mmHg on March 14, 2023",
    "  leading and trailing\u3000ideographic space\u2028line separator  ",
]


def test_out_of_domain_reports_are_varied() -> None:
    assert len(OUT_OF_DOMAIN) == 20 and sum(not r.isascii() for r in OUT_OF_DOMAIN) >= 12


def test_save_load_and_loaders_give_identical_ids_on_raw_text(
    trained: EchoTokenizer, corpus: list[str], held_out: list[str], tmp_path: Path
) -> None:
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    path = trained.save(tmp_path / "tok")
    assert path == tmp_path / "tok" / "tokenizer.json" and not list((tmp_path / "tok").glob("*.tmp"))
    config = json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    loaded = EchoTokenizer.load(tmp_path / "tok")
    rust = Tokenizer.from_file(str(path))
    hf = PreTrainedTokenizerFast(tokenizer_file=str(path))
    auto = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert isinstance(auto, PreTrainedTokenizerFast)
    assert auto.pad_token_id == 0 and auto.eos_token_id == trained.eos_token_id

    simulated = (corpus + held_out)[:1000]
    assert len(simulated) == 1000
    for reports in (simulated, OUT_OF_DOMAIN):
        # <bos> ids <eos>: what the loaders add by default, and what __call__ puts before the padding
        ours = trained.encode_batch(reports, add_special_tokens=True)
        assert auto(reports)["input_ids"] == ours
        assert hf(reports)["input_ids"] == ours
        assert [e.ids for e in rust.encode_batch(reports)] == ours
        assert auto(reports, add_special_tokens=False)["input_ids"] == trained.encode_batch(reports)
        assert loaded.encode_batch(reports) == trained.encode_batch(reports)
        cleaned = [trained.clean(r) for r in reports]
        assert auto(cleaned)["input_ids"] == ours  # cleaning twice changes nothing
        assert [hf.decode(ids, skip_special_tokens=True) for ids in ours] == cleaned
    assert torch.equal(loaded(simulated[:20]), trained(simulated[:20]))
    assert loaded(OUT_OF_DOMAIN)[:, :5].tolist() == [row[:5] for row in ours]


def test_ids_of_simulated_reports_are_those_of_before_the_normalizer(
    trained: EchoTokenizer, corpus: list[str], held_out: list[str]
) -> None:
    """The demo's figures depend on these ids: moving the cleaning into tokenizer.json
    must not change a single one (hash of the ids this test's tokenizer gave before)."""
    import hashlib

    ids = trained.encode_batch((corpus + held_out)[:1000])
    assert sum(map(len, ids)) == 45668 and trained.vocab_size == 3129
    digest = hashlib.sha256(json.dumps(ids).encode()).hexdigest()
    assert digest == "8c4f5aaeaf8cda1a9fe41a6e2c22555219cbc151adf41f736154231c0342f068"


def test_a_file_without_the_normalizer_still_loads(
    trained: EchoTokenizer, held_out: list[str], tmp_path: Path
) -> None:
    (tmp_path / "tokenizer.json").write_text(trained.backend.to_str())
    old = EchoTokenizer.load(tmp_path)
    assert old.encode_batch(held_out[:50] + OUT_OF_DOMAIN) == trained.encode_batch(
        held_out[:50] + OUT_OF_DOMAIN
    )
    assert Tokenizer.from_str(old.to_str()).normalizer is not None


def test_cleaning_options_travel_with_the_files(corpus: list[str], tmp_path: Path) -> None:
    tok = EchoTokenizer.train(
        corpus[:100], phrase_vocab_size=64, subword_vocab_size=64, cleaning=CleaningConfig(uppercase=False)
    )
    tok.save(tmp_path)
    loaded = EchoTokenizer.load(tmp_path / "tokenizer.json")
    assert loaded.cleaning == tok.cleaning and loaded.clean("Mild <eos>") == "Mild <eos>"
    # a literal special token in a report is text for this class
    assert loaded.decode(loaded.encode("Mild <eos> x")) == "Mild <eos> x"


def test_training_learns_phrases(trained: EchoTokenizer, held_out: list[str]) -> None:
    multi_word = [t for t in trained.backend.get_vocab() if len(t.split()) >= 3]
    assert len(multi_word) > 100
    tokens = [t for r in held_out[:50] for t in trained.tokens(r)]
    assert sum(len(t.split()) >= 3 for t in tokens) > 0.2 * len(tokens)


def test_phrase_min_frequency_keeps_rare_sentences_as_words() -> None:
    common = "NORMAL LEFT VENTRICULAR WALL THICKNESS. TRACE MITRAL REGURGITATION."
    rare = "ECHOGENIC PACER WIRE IN THE RIGHT ATRIUM."
    corpus = [common] * 60 + [f"{common} {rare}"] * 10
    default = EchoTokenizer.train(corpus, phrase_vocab_size=256, subword_vocab_size=256)
    strict = EchoTokenizer.train(
        corpus, phrase_vocab_size=256, subword_vocab_size=256, phrase_min_frequency=20
    )

    def longest_phrase(tok: EchoTokenizer, text: str) -> int:
        return max(len(t.split()) for t in tok.tokens(text))

    # seen 10 times: one phrase at the default threshold, its words at 20
    assert longest_phrase(default, rare) >= 4
    assert longest_phrase(strict, rare) <= 2
    assert len(strict.encode(rare)) > len(default.encode(rare))
    # seen 70 times: a phrase either way, and nothing is lost
    assert longest_phrase(strict, common) >= 3
    assert strict.decode(strict.encode(f"{common} {rare}")) == f"{common} {rare}"


def test_training_errors(corpus: list[str]) -> None:
    with pytest.raises(TokenizerError, match="empty"):
        EchoTokenizer.train(["", "  "])
    with pytest.raises(ValueError, match="min_frequency"):
        EchoTokenizer.train(corpus[:5], min_frequency=0)
    with pytest.raises(ValueError, match="phrase_min_frequency"):
        EchoTokenizer.train(corpus[:5], phrase_min_frequency=0)
    with pytest.raises(ValueError, match="phrase_vocab_size"):
        EchoTokenizer.train(corpus[:5], phrase_vocab_size=-1)
    with pytest.raises(TypeError):
        EchoTokenizer.train(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        EchoTokenizer.train(["ok", None])  # type: ignore[list-item]


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="no such tokenizer file"):
        EchoTokenizer.load(tmp_path / "missing")
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(TokenizerError, match=str(bad)):
        EchoTokenizer.load(bad)
    EchoTokenizer().save(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"echoclip": {"cleaning": {"shout": True}}}))
    with pytest.raises(TokenizerError, match="tokenizer_config.json"):
        EchoTokenizer.load(tmp_path)
    other = Tokenizer.from_str(EchoTokenizer().backend.to_str())
    other.post_processor = None
    other_path = tmp_path / "other"
    other_path.mkdir()
    (other_path / "tokenizer.json").write_text(json.dumps({**json.loads(other.to_str()), "added_tokens": []}))
    with pytest.raises(TokenizerError, match="not an echoclip tokenizer"):
        EchoTokenizer.load(other_path)


_UNTRAINED = EchoTokenizer()
_FUZZ: list[EchoTokenizer] = []


def _trained_for_fuzzing() -> EchoTokenizer:
    # hypothesis tests cannot take function-scoped fixtures; this one is built once
    if not _FUZZ:
        from echoclip.data.synthetic import simulate_reports

        _FUZZ.append(
            EchoTokenizer.train(simulate_reports(150, seed=3), phrase_vocab_size=256, subword_vocab_size=256)
        )
    return _FUZZ[0]


@pytest.mark.slow
def test_lossless_on_10000_simulated_reports() -> None:
    from echoclip.data.synthetic import simulate_reports

    reports = simulate_reports(10_000, seed=7)
    tok = EchoTokenizer.train(reports[:5000])
    failures = [r for r in reports if tok.decode(tok.encode(r)) != tok.clean(r)]
    assert failures == []


def test_pickles_for_data_loader_workers(trained: EchoTokenizer, held_out: list[str], tmp_path: Path) -> None:
    import pickle

    copy = pickle.loads(pickle.dumps(trained))
    assert copy.cleaning == trained.cleaning
    assert torch.equal(copy(held_out[:20]), trained(held_out[:20]))
    # a loaded tokenizer travels with the normalizer of its file
    trained.save(tmp_path)
    loaded = pickle.loads(pickle.dumps(EchoTokenizer.load(tmp_path)))
    assert loaded.encode_batch(OUT_OF_DOMAIN) == trained.encode_batch(OUT_OF_DOMAIN)


@pytest.mark.parametrize("which", ["untrained", "trained"])
def test_text_that_looks_like_a_byte_or_special_token_is_text(
    which: str, request: pytest.FixtureRequest
) -> None:
    tok: EchoTokenizer = request.getfixturevalue(which)
    lower = EchoTokenizer(tok.backend, CleaningConfig(uppercase=False))
    for text in ("<0x41>", "55<0x41>", "<pad>", "1 <pad> 2 <bos><eos>"):
        assert lower.decode(lower.encode(text)) == text
        assert tok.decode(tok.encode(text)) == tok.clean(text)
