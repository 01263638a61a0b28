"""The contrastive objective: sentence, concept and value terms, study pairs, sampling weights."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from echoclip.errors import ConfigError, DataError
from echoclip.loop.trainer import Trainer
from echoclip.train.config import ContrastiveConfig
from echoclip.train.contrastive import (
    ConceptMatcher,
    ContrastiveObjective,
    augment_report,
    report_holders,
    sample_rng,
    sentence_targets,
    sentence_to_report_loss,
    sentence_to_video_loss,
    shifted_values,
    value_order_loss,
)
from tests.train.toy import ToyClip, ToyClips, blank_tokenizer, toy_config, toy_objective


def test_study_pairs_read_weights_from_a_manifest_column():
    import pandas as pd

    from echoclip.train.pairs import StudyPairs

    base = ToyClips(3)
    base.table = pd.DataFrame({"study_id": ["a", "a", "b"], "report": ["R", "R", "S"], "w": [1.0, 3.0, 2.0]})
    assert StudyPairs.from_table_dataset(base, weight_column="w").sample_weights == [3.0, 2.0]
    with pytest.raises(DataError, match="no sample weight column 'weight'"):
        StudyPairs.from_table_dataset(base, weight_column="weight")


def test_mention_weights_boost_rare_mentions():
    from echoclip.train.balance import mention_weights

    reports = ["TAVR IN SITU."] + ["PACEMAKER LEAD."] * 3 + ["NORMAL STUDY."] * 16
    w = mention_weights(reports, {"tavr": r"\bTAVR\b", "pacemaker": "PACEMAKER", "clip": "MITRACLIP"}, 0.25)
    assert w.tolist() == [5.0] + [5 / 3] * 3 + [1.0] * 16  # 1/20 -> 0.25 and 3/20 -> 0.25
    assert mention_weights(reports, {"tavr": "TAVR"}, 0.5, max_weight=4.0)[0] == 4.0
    assert mention_weights(reports, {"normal": "NORMAL"}, 0.1).tolist() == [1.0] * 20  # common: no boost
    with pytest.raises(ValueError, match="target_share"):
        mention_weights(reports, {}, 0.0)


def test_share_weights_take_each_rows_largest_boost():
    from echoclip.train.balance import share_weights

    mentions = np.zeros((10, 3), dtype=bool)
    mentions[0, 0] = mentions[0, 1] = True  # 1/10 and 2/10 -> 0.4: boosts 4 and 2
    mentions[1, 1] = True
    mentions[:, 2] = True  # everywhere: no boost
    assert share_weights(mentions, 0.4).tolist() == [4.0, 2.0] + [1.0] * 8
    assert share_weights(np.zeros((0, 2), dtype=bool), 0.4).tolist() == []
    with pytest.raises(ValueError, match="max_weight"):
        share_weights(mentions, 0.4, max_weight=0.5)
    with pytest.raises(ValueError, match="reports, concepts"):
        share_weights(mentions[:, 0], 0.4)


def test_report_augmentation_never_drops_everything():
    report = "A. B. C. D."
    for i in range(200):
        out = augment_report(report, sample_rng(0, 0, i), dropout=0.9, shuffle=True)
        assert out and set(out.split()) <= {"A.", "B.", "C.", "D."}
    same = [augment_report(report, sample_rng(5, 1, 7), 0.3, False) for _ in range(3)]
    assert len(set(same)) == 1


def test_study_pairs_draw_one_video_per_study_and_skip_empty_reports():
    from echoclip.train.pairs import StudyPairs

    base = ToyClips(6)
    pairs = StudyPairs(base, ["s1", "s1", "s1", "s2", "s3", "s3"], ["R", "R", "R", "R2", "", ""], seed=0)
    assert len(pairs) == 2  # s3 has an empty report
    drawn = set()
    for epoch in range(12):
        pairs.set_epoch(epoch)
        item = pairs[0]
        drawn.add(round(float(item["video"].sum()), 4))
        assert item["index"] == 0
    assert len(drawn) == 3  # every video of study s1 is used over the epochs
    weighted = StudyPairs(base, ["s1", "s1", "s1", "s2", "s3", "s3"], weights=[1, 4, 2, 0.5, 3, 3])
    assert weighted.sample_weights == [4.0, 0.5, 3.0]  # a study weighs as its heaviest video
    assert pairs.sample_weights is None
    with pytest.raises(DataError, match="2 sample weights for 6 videos"):
        StudyPairs(base, ["s1", "s1", "s1", "s2", "s3", "s3"], weights=[1, 2])


def test_sentence_targets_merge_the_same_sentence_across_reports():
    sentences, holders = sentence_targets(
        ["1) Trivial MR. 2. NO LVH. EF 55%.", "TRIVIAL   MR. A pacemaker lead is seen."]
    )
    assert sentences == ["Trivial MR.", "NO LVH.", "EF 55%.", "A pacemaker lead is seen."]
    assert holders.tolist() == [[True, True], [True, False], [True, False], [False, True]]


def test_sentence_loss_counts_every_holder_as_a_positive():
    video = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]), dim=-1)
    sentence = torch.tensor([[1.0, 0.0]])
    scale = torch.tensor(10.0)
    both = sentence_to_video_loss(sentence, video, torch.tensor([[True, False, True]]), scale)
    one = sentence_to_video_loss(sentence, video, torch.tensor([[True, False, False]]), scale)
    # the two matching videos share the probability mass: only the non-holder costs anything
    assert float(both) == pytest.approx(-math.log(2 / (2 + math.exp(-10))), abs=1e-5)
    assert float(one) == pytest.approx(math.log(2 + math.exp(-10)), abs=1e-5)


def test_concept_matcher_marks_the_reports_that_name_a_sentences_concept_otherwise():
    concepts = ConceptMatcher({"tavr": r"\btav[ri]\b|transcatheter", "pacemaker": "pacemaker|pacer"})
    sentences = ["TAVR in situ.", "Normal RV size.", "PACER WIRE IN THE RV."]
    reports = ["EF 50%. Transcatheter valve, well seated.", "A pacemaker lead is seen.", "TAVR IN SITU."]
    expected = [[True, False, True], [False, False, False], [False, True, False]]
    assert concepts.shared(sentences, reports).tolist() == expected
    assert concepts.shared(sentences, reports).tolist() == expected  # the second time from memory
    assert concepts.reports(reports).tolist() == [[True, False], [False, True], [True, False]]
    assert concepts.sentences([]).shape == (0, 2)
    assert not ConceptMatcher() and ConceptMatcher().shared(["TAVR."], ["TAVR."]).tolist() == [[False]]
    with pytest.raises(ConfigError, match="'tavr'.*regular expression"):
        ConceptMatcher({"tavr": "(tavr"})


def test_sentence_loss_leaves_other_phrasings_of_its_concept_out_of_the_negatives():
    video = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]), dim=-1)
    sentence = torch.tensor([[1.0, 0.0]])
    scale = torch.tensor(10.0)
    holders = torch.tensor([[True, False, False]])
    plain = sentence_to_video_loss(sentence, video, holders, scale)
    # video 2 looks like video 0 and its report names the concept in other words
    ignored = sentence_to_video_loss(sentence, video, holders, scale, torch.tensor([[True, False, True]]))
    assert float(plain) == pytest.approx(math.log(2 + math.exp(-10)), abs=1e-5)
    assert float(ignored) == pytest.approx(math.log(1 + math.exp(-10)), abs=1e-5)
    # a holder stays a positive whatever the mask says
    both = torch.tensor([[True, False, True]])
    assert float(sentence_to_video_loss(sentence, video, both, scale, both)) == pytest.approx(
        float(sentence_to_video_loss(sentence, video, both, scale)), abs=1e-6
    )


def test_collate_masks_other_phrasings_for_the_videos_and_for_the_reports_as_read():
    objective = ContrastiveObjective(
        blank_tokenizer,
        ContrastiveConfig(
            sentence_dropout=0.5,
            sentence_loss_weight=1.0,
            sentence_report_weight=1.0,
            concept_patterns={"tavr": r"\btav[ri]\b|transcatheter"},
        ),
        seed=1,
    )
    reports = ["TAVR IN SITU. EF 50%. NORMAL RV.", "TRANSCATHETER VALVE SEATED. EF 30%. SMALL LA.", "EF 60%."]
    samples = [{"video": torch.zeros(2), "report": r, "index": i} for i, r in enumerate(reports)]
    tavr = sentence_targets(reports)[0].index("TAVR IN SITU.")
    read_as = {}  # does the second report, as the text tower reads it, name the TAVR? -> its mask
    for epoch in range(40):
        batch = objective.collate(samples, epoch=epoch)
        # the video side reads whole reports: the second study's video is never a negative
        assert batch["sentence_ignore"][tavr].tolist() == [True, True, False]
        assert batch["sentence_ignore"].shape == batch["sentence_holders"].shape
        augmented = augment_report(reports[1], sample_rng(1, epoch, 1), 0.5, False)
        read_as[("TRANSCATHETER" in augmented)] = bool(batch["sentence_report_ignore"][tavr, 1])
    # the report side reads them after sentence dropout: masked only when the phrase is kept
    assert read_as == {True: True, False: False}
    plain = toy_objective(sentence_loss_weight=1.0).collate([ToyClips(4)[0]], epoch=0)
    assert "sentence_ignore" not in plain and "sentence_holders" in plain


def test_the_sentence_terms_leave_out_what_the_concept_masks_mark():
    torch.manual_seed(0)
    model = ToyClip()
    # one concept named in two words: a RED sentence is no longer a negative of GREEN clips
    objective = toy_objective(
        sentence_loss_weight=1.0, sentence_report_weight=1.0, concept_patterns={"warm": "RED|GREEN"}
    )
    data = ToyClips(16)
    batch = objective.collate([data[i] for i in range(16)], epoch=0)
    _, figures = objective.loss(model, batch, step=0)
    with torch.no_grad():
        out = model(batch["video"], batch["text"])
        sentences = model.encode_text(batch["sentences"], normalize=True)
    v, t, scale = out["video_features"], out["text_features"], out["logit_scale"]
    holders, ignore = batch["sentence_holders"], batch["sentence_ignore"]
    masked = sentence_to_video_loss(sentences, v, holders, scale, ignore)
    assert figures["sentence_loss"] == pytest.approx(float(masked), rel=1e-5)
    assert float(masked) < float(sentence_to_video_loss(sentences, v, holders, scale)) - 1e-3
    report_holders_, report_ignore = batch["sentence_report_holders"], batch["sentence_report_ignore"]
    text_loss = sentence_to_report_loss(sentences, t, report_holders_, scale, report_ignore)
    assert figures["sentence_report_loss"] == pytest.approx(float(text_loss), rel=1e-5)


def test_training_config_rejects_a_bad_concept_pattern(tmp_path):
    with pytest.raises(ConfigError, match="concept_patterns\\['tavr'\\]"):
        toy_config(tmp_path, contrastive=ContrastiveConfig(concept_patterns={"tavr": "(tavr"}))


def test_sentence_term_trains_and_is_logged(tmp_path):
    torch.manual_seed(0)
    objective = toy_objective(sentence_loss_weight=1.0)
    result = Trainer(ToyClip(), objective, ToyClips(64), toy_config(tmp_path, steps=30)).fit()
    rows = [r for r in result.history if r.get("sentence_loss") not in (None, "")]
    assert len(rows) == 30
    first, last = float(rows[0]["sentence_loss"]), float(rows[-1]["sentence_loss"])
    assert last < 0.6 * first
    for r in rows:
        total = float(r["report_loss"]) + float(r["sentence_loss"])
        assert float(r["loss"]) == pytest.approx(total, rel=1e-5)


def test_report_holders_read_the_reports_as_the_text_tower_does():
    holders = report_holders(
        ["Trivial MR.", "NO LVH.", "A pacemaker lead is seen."], ["1) TRIVIAL MR.", "No LVH."]
    )
    assert holders.tolist() == [[True, False], [False, True], [False, False]]


def test_sentence_to_report_loss_skips_sentences_no_report_holds():
    reports = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=-1)
    sentences = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    scale = torch.tensor(10.0)
    held = torch.tensor([[True, False], [False, False]])
    loss = sentence_to_report_loss(sentences, reports, held, scale)
    assert float(loss) == pytest.approx(math.log(1 + math.exp(-10)), abs=1e-5)
    nothing = sentence_to_report_loss(sentences, reports, torch.zeros(2, 2, dtype=torch.bool), scale)
    assert float(nothing) == 0.0 and nothing.requires_grad is False


def test_sentence_report_term_trains_and_is_logged(tmp_path):
    torch.manual_seed(0)
    objective = toy_objective(sentence_report_weight=1.0)
    result = Trainer(ToyClip(), objective, ToyClips(64), toy_config(tmp_path, steps=30)).fit()
    rows = [r for r in result.history if r.get("sentence_report_loss") not in (None, "")]
    assert len(rows) == 30
    # the toy reports name their class in every sentence: the text tower finds a
    # sentence's reports (about one in eight of the batch) far better than chance
    late = [float(r["sentence_report_loss"]) for r in rows[-10:]]
    assert sum(late) / len(late) < 0.3 * math.log(8)
    # without the sentence-to-video term the sentences still come, with their report holders
    for r in rows:
        total = float(r["report_loss"]) + float(r["sentence_report_loss"])
        assert float(r["loss"]) == pytest.approx(total, rel=1e-5)
        assert r.get("sentence_loss") in (None, "")


def test_max_sentences_draws_a_repeatable_subset():
    objective = ContrastiveObjective(
        blank_tokenizer, ContrastiveConfig(sentence_dropout=0.0, sentence_loss_weight=1.0, max_sentences=3)
    )
    samples = [
        {"video": torch.zeros(2), "report": f"A{i}. B{i}. Shared sentence.", "index": i} for i in range(4)
    ]
    batch = objective.collate(samples, epoch=0)
    assert batch["sentences"].shape[0] == 3
    assert batch["sentence_holders"].shape == (3, 4)
    assert torch.equal(batch["sentence_holders"], objective.collate(samples, epoch=0)["sentence_holders"])
    # every kept sentence has at least one holder; the shared one, if kept, has all four
    holders = batch["sentence_holders"]
    assert bool(holders.any(dim=1).all())
    assert sorted(holders.sum(dim=1).tolist()) in ([1, 1, 1], [1, 1, 4])


def test_max_sentences_takes_the_sentences_naming_a_concept_first():
    tokenized: list[list[str]] = []

    def tokenizer(texts, context_length):
        tokenized.append(list(texts))
        return torch.zeros(len(texts), 4, dtype=torch.long)

    def kept_sentences(epoch: int, **kw) -> list[str]:
        objective = ContrastiveObjective(
            tokenizer,
            ContrastiveConfig(sentence_dropout=0.0, sentence_loss_weight=1.0, max_sentences=3, **kw),
        )
        objective.collate(samples, epoch)
        return tokenized[-1]

    samples = [{"video": torch.zeros(2), "report": f"A{i}. B{i}. C{i}. D{i}.", "index": i} for i in range(4)]
    samples[1]["report"] += " TAVR IN SITU."
    samples[3]["report"] += " TRANSCATHETER VALVE."
    devices = {"TAVR IN SITU.", "TRANSCATHETER VALVE."}
    plain = []
    for epoch in range(10):
        kept = kept_sentences(epoch, concept_patterns={"tavr": r"\btavr\b|transcatheter"})
        # both device sentences are kept whatever the draw, and one other
        assert len(kept) == 3 and devices < set(kept)
        plain.append(len(devices & set(kept_sentences(epoch))))
    # without the patterns they are drawn like any other of the 18 sentences
    assert min(plain) == 0
    # a concept left out of first_concepts is still a concept, but its sentences are not first
    both = {"tavr": r"\btavr\b|transcatheter", "a": r"^A\d"}
    for epoch in range(10):
        assert devices < set(kept_sentences(epoch, concept_patterns=both, first_concepts=["tavr"]))
    not_first = [
        len(devices & set(kept_sentences(e, concept_patterns=both, first_concepts=["a"]))) for e in range(10)
    ]
    assert min(not_first) == 0
    with pytest.raises(ConfigError, match="first_concepts"):
        ContrastiveConfig(concept_patterns=both, first_concepts=["pacemaker"])


def test_contrastive_loss_is_computed_in_fp32_under_bf16_autocast():
    # the towers may run in bf16; the similarities and softmax must not (their rounding
    # is as large as the gaps between neighbouring EF prompts)
    from open_clip.loss import ClipLoss

    torch.manual_seed(0)
    model, objective = ToyClip(), toy_objective(sentence_loss_weight=1.0)
    data = ToyClips(16)
    batch = objective.collate([data[i] for i in range(16)], epoch=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, figures = objective.loss(model, batch, step=0)
        with torch.no_grad():
            out = model(batch["video"], batch["text"])
            sentences = model.encode_text(batch["sentences"], normalize=True)
    v, t, scale = out["video_features"].float(), out["text_features"].float(), out["logit_scale"].float()
    report_loss = ClipLoss()(v, t, scale)
    sentence_loss = sentence_to_video_loss(sentences.float(), v, batch["sentence_holders"], scale)
    assert out["video_features"].dtype == torch.bfloat16  # the towers did run in bf16
    assert figures["report_loss"] == pytest.approx(float(report_loss), rel=1e-6)
    assert float(loss.detach()) == pytest.approx(float(report_loss + sentence_loss), rel=1e-6)


# -- the value-order term --------------------------------------------------------------

NUMBER_BASE = 20  # token id of the integer 0 in the numeric toy tokenizer


def numeric_tokenizer(texts, context_length: int = 8) -> torch.Tensor:
    """The toy tokenizer plus integer tokens 0-100 (``NUMBER_BASE + v``) and one decimal token."""
    from .toy import WORDS

    if isinstance(texts, str):
        texts = [texts]
    out = torch.zeros(len(texts), context_length, dtype=torch.long)
    for i, t in enumerate(texts):
        ids = []
        for w in t.replace(". ", " ").rstrip(".").split():
            if w in WORDS:
                ids.append(WORDS.index(w) + 1)
            elif w.isdigit():
                ids.append(NUMBER_BASE + int(w))
            elif w == "0.5":
                ids.append(NUMBER_BASE + 101)
        out[i, : len(ids[:context_length])] = torch.tensor(ids[:context_length], dtype=torch.long)
    return out


numeric_tokenizer.value_token_values = lambda: {  # type: ignore[attr-defined]
    **{NUMBER_BASE + v: float(v) for v in range(101)},
    NUMBER_BASE + 101: 0.5,
}


def test_shifted_values_move_every_number_of_a_sentence_together():
    variants, offsets = shifted_values("RED 50 55", random.Random(0), num_variants=6)
    assert len(variants) == len(offsets) == 7
    assert variants[0] == "RED 50 55" and offsets[0] == 0
    for text, d in zip(variants, offsets, strict=True):
        assert text == f"RED {50 + d} {55 + d}"
    near = [abs(d) for d in offsets[1:] if abs(d) <= 10]
    assert len(near) == 3 and len(set(offsets)) == 7  # half near, all distinct
    # every number stays in range: 98 has only two integers above it
    high = shifted_values("RED 98", random.Random(0), 6)
    assert high is not None and all(0 <= 98 + d <= 100 for d in high[1])


def test_shifted_values_move_decimals_in_tenths_and_leave_digits_inside_words():
    sentence = "LV cavity size is increased (LVIDd 6.4 cm) in A4C, LA volume index 41 mL/m2; 2D."
    variants, offsets = shifted_values(sentence, random.Random(0), num_variants=6)
    for text, d in zip(variants, offsets, strict=True):
        size = 64 + d
        assert text == (
            f"LV cavity size is increased (LVIDd {size // 10}.{size % 10} cm) in A4C, "
            f"LA volume index {41 + d} mL/m2; 2D."
        )
    # a value above 10 with a decimal moves in tenths too: "12" + ".5" for the tokenizer
    moved = shifted_values("Aortic root 12.5 cm.", random.Random(0), 6)
    assert moved is not None and moved[0][1] == f"Aortic root {(125 + moved[1][1]) / 10:.1f} cm."


def test_shifted_values_leave_list_numbers_and_numbers_out_of_range_as_written():
    rng = random.Random(0)
    assert shifted_values("RED CLIP in A4C, mL/m2.", rng, 6) is None
    assert shifted_values("3) Normal LV size.", rng, 6) is None  # a list item's number
    assert shifted_values("Summary: 1.", rng, 6) is None
    assert shifted_values("EF 0.55.", rng, 6) is None  # two decimals: not one value token
    variants, offsets = shifted_values("SUMMARY: 2) LVEDV 187 ML, EF 55%, E/E' 16)", rng, 6)
    for text, d in zip(variants, offsets, strict=True):
        assert text == f"SUMMARY: 2) LVEDV 187 ML, EF {55 + d}%, E/E' {16 + d})"
    # too few offsets in range for the variants asked for
    assert shifted_values("RED 1", rng, 6, far=2, largest=2) is None


def test_shifted_copies_are_tokenised_as_the_echo_tokenizer_reads_values():
    from echoclip.tokenizer import EchoTokenizer

    tokenizer = EchoTokenizer()  # untrained: characters, plus every value token
    values = tokenizer.value_token_values()
    variants, offsets = shifted_values("LVIDd 4.4 cm.", random.Random(0), 6)
    for text, d in zip(variants, offsets, strict=True):
        ids = tokenizer([text], context_length=20)[0].tolist()
        # each copy states its size as one value token: 4.4 cm moved by d tenths
        assert [values[i] for i in ids if i in values] == [pytest.approx((44 + d) / 10)]


def test_value_order_loss_prefers_the_stated_value_then_its_neighbours():
    # three copies of one sentence: the value itself, one step off, far off
    variants = torch.nn.functional.normalize(torch.tensor([[[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]]]), dim=-1)
    offsets = torch.tensor([[0.0, 2.0, 30.0]])
    holders = torch.tensor([[True, False]])
    scale = torch.tensor(10.0)

    def loss_for(video):
        video = torch.nn.functional.normalize(torch.tensor([video, [0.0, 1.0]]), dim=-1)
        return float(value_order_loss(variants, offsets, video, holders, scale, sigma=3.0))

    # the non-holder video is ignored; a video at its stated value beats one at a far value
    assert loss_for([1.0, 0.0]) < loss_for([0.0, 1.0])
    target = torch.softmax(-offsets.abs() / 3.0, dim=1)
    logits = scale * variants[0] @ torch.tensor([1.0, 0.0])
    expected = -(target[0] * torch.log_softmax(logits, dim=0)).sum()
    assert loss_for([1.0, 0.0]) == pytest.approx(float(expected), rel=1e-6)


class NumberClips(ToyClips):
    """ToyClips whose reports also state the class as a number ("EF 15" ... "EF 85")."""

    def __getitem__(self, i: int):
        item = super().__getitem__(i)
        item["report"] += f" EF {int(item['ef']) // 2}."
        return item


def test_value_term_trains_and_is_logged(tmp_path):
    torch.manual_seed(0)
    model = ToyClip()
    model.embed = torch.nn.Embedding(NUMBER_BASE + 102, 32, padding_idx=0)
    objective = ContrastiveObjective(
        numeric_tokenizer,
        ContrastiveConfig(context_length=8, sentence_dropout=0.3, value_loss_weight=1.0, value_sentences=8),
    )
    batch = objective.collate([NumberClips(8)[i] for i in range(8)], epoch=0)
    assert batch["value_variants"].shape[1:] == (7, 8)
    assert batch["value_holders"].any(dim=1).all()
    result = Trainer(model, objective, NumberClips(64), toy_config(tmp_path, steps=40)).fit()
    rows = [r for r in result.history if r.get("value_loss") not in (None, "")]
    assert len(rows) == 40
    first = sum(float(r["value_loss"]) for r in rows[:5]) / 5
    last = sum(float(r["value_loss"]) for r in rows[-5:]) / 5
    assert last < 0.8 * first
    for r in rows:
        total = float(r["report_loss"]) + float(r["value_loss"])
        assert float(r["loss"]) == pytest.approx(total, rel=1e-5)


def test_value_term_needs_a_tokenizer_with_number_tokens():
    objective = toy_objective(value_loss_weight=1.0)
    with pytest.raises(ConfigError, match="value_token_values"):
        objective.collate([ToyClips(4)[i] for i in range(4)], epoch=0)
