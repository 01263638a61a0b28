"""zero_shot end to end on a hand-built model: videos in, one row of known answers per study out."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from echoclip.errors import ConfigError, DataError
from echoclip.zeroshot.predict import encode_prompts, model_logit_scale, zero_shot
from echoclip.zeroshot.prompts import load_prompt_set

from .toy import axis, clip_with, ef_prompts, ef_vector, toy_model

# axes 0-1 carry the EF; a device prompt is its own axis, its negative prompts the opposite
DEVICE_AXES = {"pacemaker": 2, "tavr": 3, "surgical_valve": 4, "mitraclip": 5, "impella": 6}
VIEW_AXES = {"A4C": 2, "A2C": 3, "PLAX": 4, "PSAX": 5}
OOD_COLUMNS = ("ood_score", "out_of_distribution")  # NaN and None for a model without an OOD reference


def text_vectors() -> dict[str, np.ndarray]:
    vectors: dict[str, np.ndarray] = {}
    ef = load_prompt_set(ef_prompts()).targets["ef"]
    for value, texts in zip(ef.values(), ef.prompts(), strict=True):
        vectors.update(dict.fromkeys(texts, ef_vector(value)))
    for name, target in load_prompt_set("devices").targets.items():
        vectors.update(dict.fromkeys(target.positive_texts(), axis(DEVICE_AXES[name])))
        vectors.update(dict.fromkeys(target.negative_texts(), -axis(DEVICE_AXES[name])))
    for name, texts in load_prompt_set("views").targets["view"].classes.items():
        vectors.update(dict.fromkeys(texts, axis(VIEW_AXES[name])))
    return vectors


@pytest.fixture
def model_and_tokenizer():
    return toy_model(text_vectors())


def study_embedding(ef: float, devices: tuple[str, ...] = ()) -> np.ndarray:
    v = ef_vector(ef)
    for d in devices:
        v = v + 0.7 * axis(DEVICE_AXES[d])
    return v / np.linalg.norm(v)


def test_ef_from_clips_is_the_value_written_into_them(model_and_tokenizer) -> None:
    model, tokenizer = model_and_tokenizer
    truths = [20.0, 40.0, 64.0, 80.0]
    clips = torch.stack([clip_with(ef_vector(v)) for v in truths])
    for method in ("argmax", "echoclip_rank"):
        df = zero_shot(model, tokenizer, clips, prompts=ef_prompts(), method=method)
        assert list(df.columns) == ["study_id", "n_clips", *OOD_COLUMNS, "ef"]
        np.testing.assert_array_equal(df["ef"], truths)
        assert df.attrs["methods"] == {"ef": method}
    df = zero_shot(model, tokenizer, clips, prompts=ef_prompts(), method="expectation")
    np.testing.assert_allclose(df["ef"], truths, atol=0.5)


def test_devices_from_precomputed_embeddings(model_and_tokenizer) -> None:
    model, tokenizer = model_and_tokenizer
    studies = [(55.0, ("pacemaker",)), (30.0, ()), (45.0, ("tavr", "impella"))]
    emb = np.stack([study_embedding(ef, devs) for ef, devs in studies])
    df = zero_shot(model, tokenizer, emb, prompts="devices", method="similarity")
    assert list(df.columns) == ["study_id", "n_clips", *OOD_COLUMNS, *DEVICE_AXES]
    for row, (_, devs) in zip(df.itertuples(), studies, strict=True):
        for name in DEVICE_AXES:
            # similarity to a device's own axis: 0.7 / norm when present, 0 when absent
            assert (getattr(row, name) > 0.3) == (name in devs)
    contrast = zero_shot(model, tokenizer, emb, prompts="devices")  # the default: every target has negatives
    assert set(contrast.attrs["methods"].values()) == {"contrast"}
    # negatives point the other way, so contrast = similarity - (-similarity) = 2 x similarity
    np.testing.assert_allclose(contrast["tavr"], 2 * df["tavr"], atol=1e-6)


def test_clips_of_one_study_are_scored_together(model_and_tokenizer) -> None:
    model, tokenizer = model_and_tokenizer
    emb = np.stack([ef_vector(36.0), ef_vector(60.0), ef_vector(44.0), ef_vector(60.0)])
    df = zero_shot(
        model, tokenizer, emb, prompts=ef_prompts(), method="argmax", study_ids=["a", "b", "a", "c"]
    )
    assert list(df["study_id"]) == ["a", "b", "c"] and list(df["n_clips"]) == [2, 1, 1]
    # study a: the mean similarity over its two clips peaks half way, at 40
    assert list(df["ef"]) == [40.0, 60.0, 60.0]


def test_a_dataset_is_read_with_its_study_ids_and_failed_items_skipped(model_and_tokenizer) -> None:
    model, tokenizer = model_and_tokenizer

    class Items(torch.utils.data.Dataset):
        def __init__(self) -> None:
            self.items = [
                {"video": clip_with(ef_vector(24.0)), "study_id": "s1", "report": "X"},
                None,  # an unreadable video
                {"video": clip_with(ef_vector(72.0)), "study_id": "s2", "report": "Y"},
                {"video": clip_with(ef_vector(24.0)), "study_id": "s1", "report": "X"},
            ]
            self.skipped = [("broken.avi", "truncated")]

        def __len__(self) -> int:
            return len(self.items)

        def __getitem__(self, i: int):
            return self.items[i]

    df = zero_shot(model, tokenizer, Items(), prompts=ef_prompts(), method="argmax", batch_size=3)
    assert df[["study_id", "n_clips", "ef"]].values.tolist() == [["s1", 2, 24.0], ["s2", 1, 72.0]]


def test_views_are_classified_with_probabilities(model_and_tokenizer) -> None:
    model, tokenizer = model_and_tokenizer
    emb = np.stack([axis(VIEW_AXES["PLAX"]), axis(VIEW_AXES["A2C"])])
    df = zero_shot(model, tokenizer, emb, prompts="views")
    assert list(df["view"]) == ["PLAX", "A2C"]
    probs = df[[f"view_p_{c}" for c in VIEW_AXES]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    # at the model's logit scale 100, the right class takes exp(100) / (exp(100) + 3)
    assert probs[0, 2] == pytest.approx(1 / (1 + 3 * math.exp(-100.0)))


def test_videos_go_through_the_transform(model_and_tokenizer) -> None:
    from echoclip.data.video import Video

    model, tokenizer = model_and_tokenizer
    wanted = [ef_vector(28.0), ef_vector(68.0)]
    videos = [Video(np.zeros((4, 8, 8, 3), np.uint8), fps=25.0, meta={"n": i}) for i in range(2)]
    df = zero_shot(
        model,
        tokenizer,
        videos,
        prompts=ef_prompts(),
        method="argmax",
        transform=lambda v: clip_with(wanted[v.meta["n"]]),
    )
    assert list(df["ef"]) == [28.0, 68.0]


def test_bad_methods_and_data(model_and_tokenizer) -> None:
    model, tokenizer = model_and_tokenizer
    emb = ef_vector(40.0)[None]
    with pytest.raises(ConfigError, match="unknown method 'mean'"):
        zero_shot(model, tokenizer, emb, prompts=ef_prompts(), method="mean")
    with pytest.raises(
        ConfigError, match="scores binary targets, but prompt set 'toy_ef' has only regression"
    ):
        zero_shot(model, tokenizer, emb, prompts=ef_prompts(), method="contrast")
    with pytest.raises(ConfigError, match="unknown method 'contrast' for regression"):
        zero_shot(model, tokenizer, emb, prompts=ef_prompts(), method={"ef": "contrast"})
    with pytest.raises(ConfigError, match="lacks"):
        zero_shot(model, tokenizer, emb, prompts=ef_prompts(), method={"lvef": "argmax"})
    with pytest.raises(ConfigError, match="needs a calibration"):
        zero_shot(model, tokenizer, emb, prompts="devices", method="calibrated")
    with pytest.raises(DataError, match="2 study ids for 1 videos"):
        zero_shot(model, tokenizer, emb, prompts=ef_prompts(), study_ids=["a", "b"])
    with pytest.raises(DataError, match="no videos given"):
        zero_shot(model, tokenizer, [], prompts=ef_prompts())


def test_calibrated_method_uses_the_calibration_saved_in_the_prompt_set(model_and_tokenizer) -> None:
    from echoclip.zeroshot.calibration import calibrate_prompt_set

    model, tokenizer = model_and_tokenizer
    emb = np.stack([study_embedding(50.0, ("pacemaker",)), study_embedding(50.0)] * 5)
    raw = zero_shot(model, tokenizer, emb, prompts="devices")
    labels = np.tile([1.0, 0.0], 5)
    calibrated_set = calibrate_prompt_set("devices", {"pacemaker": raw["pacemaker"]}, {"pacemaker": labels})
    df = zero_shot(model, tokenizer, emb, prompts=calibrated_set, method={"pacemaker": "calibrated"})
    assert df["pacemaker"].between(0, 1).all()
    assert (df["pacemaker"][labels == 1] > 0.5).all() and (df["pacemaker"][labels == 0] < 0.5).all()
    assert df.attrs["methods"]["tavr"] == "contrast"  # the default of targets with negative prompts


def test_prompt_embeddings_are_cached_until_the_weights_change(model_and_tokenizer) -> None:
    model, tokenizer = model_and_tokenizer
    emb = ef_vector(40.0)[None]
    zero_shot(model, tokenizer, emb, prompts=ef_prompts())
    calls = model.text_calls
    zero_shot(model, tokenizer, emb, prompts=ef_prompts(), method="argmax")
    assert model.text_calls == calls
    with torch.no_grad():
        model.video.weight.mul_(1.0)  # an in-place update, as an optimiser step
    zero_shot(model, tokenizer, emb, prompts=ef_prompts())
    assert model.text_calls > calls
    # texts asked once (reports) can bypass the cache
    calls = model.text_calls
    encode_prompts(model, tokenizer, ["LVEF 40%."], cache=False)
    encode_prompts(model, tokenizer, ["LVEF 40%."], cache=False)
    assert model.text_calls == calls + 2


def test_the_model_mode_is_restored_and_logit_scale_read_from_log_space(model_and_tokenizer) -> None:
    model, tokenizer = model_and_tokenizer
    model.train()
    zero_shot(model, tokenizer, torch.stack([clip_with(ef_vector(40.0))]), prompts=ef_prompts())
    assert model.training
    assert model_logit_scale(model) == pytest.approx(100.0)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(20.0))
    assert model_logit_scale(model) == pytest.approx(20.0)


def test_smoke_with_the_tiny_model() -> None:
    """The real tiny model and its tokenizer run every shipped prompt set (answers untrained)."""
    try:
        from echoclip.models.factory import create_model, get_tokenizer
    except ImportError as e:
        pytest.skip(f"the model factory cannot be imported yet ({e})")
    model = create_model("echoclip-tiny")
    tokenizer = get_tokenizer("echoclip-tiny")
    cfg = model.preprocess_config
    clips = torch.randn(2, 3, cfg.num_frames, cfg.image_size, cfg.image_size)
    from_clips = zero_shot(model, tokenizer, clips, prompts="ejection_fraction", method="expectation")
    with torch.no_grad():
        video_emb = model.eval().encode_video(clips, normalize=True).numpy()
    from_emb = zero_shot(model, tokenizer, video_emb, prompts="ejection_fraction", method="expectation")
    assert from_emb["ejection_fraction"].between(5, 85).all()
    np.testing.assert_allclose(from_emb["ejection_fraction"], from_clips["ejection_fraction"], rtol=1e-4)
    for name in ("devices", "findings", "views"):
        df = zero_shot(model, tokenizer, video_emb, prompts=name)
        assert len(df) == 2 and df.drop(columns=list(OOD_COLUMNS)).notna().all().all()
        assert df["ood_score"].isna().all() and df["out_of_distribution"].isna().all()  # no reference


def test_scoring_in_chunks_gives_the_same_answers(model_and_tokenizer, monkeypatch) -> None:
    from echoclip.zeroshot import predict

    model, tokenizer = model_and_tokenizer
    rng = np.random.default_rng(0)
    values = rng.choice(np.arange(8, 93, 4), size=9).astype(float)
    emb = np.stack([ef_vector(v) for v in values])
    ids = [0, 1, 1, 2, 3, 4, 4, 5, 6]  # studies with one and two clips
    whole = zero_shot(model, tokenizer, emb, prompts=ef_prompts(), study_ids=ids)
    monkeypatch.setattr(predict, "_STUDIES_PER_CHUNK", 2)
    chunked = zero_shot(model, tokenizer, emb, prompts=ef_prompts(), study_ids=ids)
    pd.testing.assert_frame_equal(whole, chunked)
    assert list(chunked["ef"][[0, 2, 3, 5]]) == list(values[[0, 3, 4, 7]])  # single-clip studies read exactly


def test_a_target_can_name_its_method_and_options() -> None:
    from echoclip.zeroshot.predict import score_embeddings
    from echoclip.zeroshot.scoring import argmax, echoclip_rank

    rng = np.random.default_rng(0)
    videos = rng.normal(size=(6, 8)).astype(np.float32)
    videos /= np.linalg.norm(videos, axis=1, keepdims=True)
    values = np.arange(0.0, 21.0)
    prompts = rng.normal(size=(len(values), 8)).astype(np.float32)
    prompts /= np.linalg.norm(prompts, axis=1, keepdims=True)
    spec = {"type": "regression", "templates": ["EF <#>%."], "range": [0, 20], "step": 1}
    tuned = {"targets": {"ef": {**spec, "method": "echoclip_rank", "method_options": {"top_fraction": 0.5}}}}
    texts = load_prompt_set(tuned).targets["ef"].texts()
    text_emb = dict(zip(texts, prompts, strict=True))
    ids = list(range(len(videos)))

    df = score_embeddings(videos, ids, tuned, text_emb)
    np.testing.assert_array_equal(df["ef"], echoclip_rank(videos, prompts, values, top_fraction=0.5))
    plain = score_embeddings(videos, ids, {"targets": {"ef": spec}}, text_emb)
    np.testing.assert_array_equal(plain["ef"], echoclip_rank(videos, prompts, values))
    assert not np.array_equal(df["ef"], plain["ef"])  # the options changed the answer
    # another method asked for by name is not given the options it does not take
    other = score_embeddings(videos, ids, tuned, text_emb, methods="argmax")
    np.testing.assert_array_equal(other["ef"], argmax(videos, prompts, values))
    assert load_prompt_set(tuned).to_dict()["targets"]["ef"]["method_options"] == {"top_fraction": 0.5}


def test_studies_unlike_the_training_videos_are_flagged(model_and_tokenizer) -> None:
    """A study's OOD score is the mean of its videos' distances; above the threshold it is flagged."""
    from echoclip.models.ood import fit_reference

    model, tokenizer = model_and_tokenizer
    rng = np.random.default_rng(0)
    model.ood_reference = fit_reference(rng.normal(size=(300, 4))).calibrate(rng.normal(size=(200, 4)))
    stats = np.array(
        [[0.1, 0.0, 0.0, 0.0], [0.0, -0.2, 0.0, 0.0], [9.0, 9.0, 9.0, 9.0], [0.0, 0.0, 0.3, 0.0]]
    )
    emb = np.stack([ef_vector(40.0), ef_vector(40.0), ef_vector(60.0), ef_vector(58.0)])
    df = zero_shot(
        model, tokenizer, emb, prompts=ef_prompts(), study_ids=["a", "a", "b", "c"], ood_features=stats
    )
    distance = model.ood_reference.score(stats)
    np.testing.assert_allclose(df["ood_score"], [distance[:2].mean(), distance[2], distance[3]], rtol=1e-5)
    assert df["out_of_distribution"].tolist() == [False, True, False]
    assert df["ef"].tolist()[0] == 40.0  # the answers still come, marked
    unknown = zero_shot(model, tokenizer, emb, prompts=ef_prompts(), study_ids=["a", "a", "b", "c"])
    assert unknown["ood_score"].isna().all() and unknown["out_of_distribution"].isna().all()  # no statistics
