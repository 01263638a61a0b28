"""create_model / save_pretrained / load_model / get_tokenizer, for every config."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from echoclip.data.transforms import VideoTransform
from echoclip.data.video import Video
from echoclip.errors import ModelError
from echoclip.models.factory import (
    create_model,
    create_model_and_transforms,
    get_model_config,
    get_tokenizer,
    list_models,
    load_model,
)
from echoclip.tokenizer import EchoTokenizer

TINY = ["echoclip-tiny", "echoclip-tiny-frames", "echoclip-vit-tiny"]
REPORTS = ["LV EJECTION FRACTION IS 35%.", "Normal left ventricular size and function. EF 60 %."]


def clips(model, n=2, seed=0):
    return torch.randn(n, *model.video_shape, generator=torch.Generator().manual_seed(seed))


def test_public_names_are_exported():
    import echoclip

    for name in (
        "list_models",
        "create_model",
        "create_model_and_transforms",
        "load_model",
        "get_tokenizer",
        "get_model_config",
        "add_model_config",
        "load_open_clip_checkpoint",
        "embed_videos",
        "embed_reports",
    ):
        assert callable(getattr(echoclip, name))


@pytest.mark.parametrize("name", TINY)
def test_create_encode_save_load_identical(name, tokenizer, tmp_path):
    model, preprocess = create_model_and_transforms(name, tokenizer=tokenizer)
    model.eval()
    assert isinstance(preprocess, VideoTransform)
    video = Video(np.random.default_rng(0).integers(0, 255, (40, 80, 96, 3), dtype=np.uint8), fps=50.0)
    x = torch.stack([preprocess(video), clips(model, 1)[0]])
    ids = tokenizer(REPORTS)
    with torch.no_grad():
        v = model.encode_video(x, normalize=True)
        t = model.encode_text(ids, normalize=True)
        raw = model.encode_video(x)
    d = model.config.embed_dim
    assert v.shape == (2, d) and t.shape == (2, d)
    torch.testing.assert_close(v.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(t.norm(dim=-1), torch.ones(2))
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(2))

    saveable = hasattr(tokenizer, "save")  # the stand-in tokenizer cannot be saved
    out = model.save_pretrained(tmp_path / "model", tokenizer=tokenizer if saveable else None)
    written = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "preprocess.json"} <= written
    assert ("tokenizer.json" in written) == saveable
    loaded = load_model(out)
    assert not loaded.training and loaded.config == model.config
    assert loaded.preprocess_config == model.preprocess_config
    with torch.no_grad():
        assert (loaded.encode_video(x, normalize=True) - v).abs().max() == 0
        assert (loaded.encode_text(ids, normalize=True) - t).abs().max() == 0


def test_forward_gives_what_clip_losses_take(stand_in_tokenizer):
    from open_clip.loss import ClipLoss

    model = create_model("echoclip-tiny", tokenizer=stand_in_tokenizer)
    out = model(clips(model), stand_in_tokenizer(REPORTS))
    assert set(out) == {"video_features", "text_features", "logit_scale"}
    assert out["logit_scale"].item() == pytest.approx(30.0)  # fixed temperature of the tiny config
    assert not model.logit_scale.requires_grad
    loss = ClipLoss()(out["video_features"], out["text_features"], out["logit_scale"])
    loss.backward()
    assert (
        model.video_tower.proj.weight.grad is not None
        and model.text_tower.clip.text_projection.grad is not None
    )


def test_siglip_bias_and_learnable_scale(stand_in_tokenizer):
    model = create_model(
        "echoclip-tiny",
        tokenizer=stand_in_tokenizer,
        logit_bias_init=-10.0,
        learn_logit_scale=True,
        logit_scale_init=float(np.log(10)),
    )
    out = model(clips(model), stand_in_tokenizer(REPORTS))
    assert out["logit_bias"].item() == -10.0 and out["logit_scale"].item() == pytest.approx(10.0)
    assert model.logit_scale.requires_grad and model.logit_bias.requires_grad


def test_model_directory_replaces_an_existing_one_atomically(stand_in_tokenizer, tmp_path):
    target = tmp_path / "final"
    a = create_model("echoclip-tiny-frames", tokenizer=stand_in_tokenizer)
    a.save_pretrained(target, tokenizer=EchoTokenizer())
    torch.manual_seed(1)
    b = create_model("echoclip-tiny-frames", tokenizer=stand_in_tokenizer)
    b.save_pretrained(target, tokenizer=EchoTokenizer())
    assert [p.name for p in tmp_path.iterdir()] == ["final"]  # no temporary or old folder left behind
    loaded = load_model(target)
    torch.testing.assert_close(loaded.state_dict(), b.state_dict(), rtol=0, atol=0, equal_nan=True)


def test_every_config_builds_without_network_and_gives_embeddings_of_its_size(stand_in_tokenizer):
    # on the meta device: shapes propagate through every tower with no memory or compute
    for name in list_models():
        cfg = get_model_config(name)
        tok = None if cfg.tokenizer == "clip" else stand_in_tokenizer
        with torch.device("meta"):
            model = create_model(name, tokenizer=tok)
            v = model.encode_video(torch.empty(2, *model.video_shape), normalize=True)
            t = model.encode_text(torch.zeros(2, cfg.text.context_length, dtype=torch.long), normalize=True)
        assert v.shape == t.shape == (2, cfg.embed_dim), name


def test_tokenizer_sizes_the_text_tower(stand_in_tokenizer):
    model = create_model("echoclip-tiny", tokenizer=stand_in_tokenizer)
    text = model.config.text
    assert (text.vocab_size, text.eos_token_id, text.pad_token_id) == (stand_in_tokenizer.vocab_size, 2, 0)
    assert model.text_tower.values.num_values == 101
    assert (
        create_model("echoclip-tiny", tokenizer=stand_in_tokenizer, vocab_size=1000).config.text.vocab_size
        == 1000
    )
    with pytest.raises(ModelError, match="smaller than the tokenizer"):
        create_model("echoclip-tiny", tokenizer=stand_in_tokenizer, vocab_size=100)


def test_text_of_another_vocabulary_fails_clearly(stand_in_tokenizer):
    model = create_model("echoclip-tiny", tokenizer=stand_in_tokenizer)
    with pytest.raises(ModelError, match="outside the text vocabulary of size 360"):
        model.encode_text(torch.full((1, 77), 5000))
    with pytest.raises(ModelError, match="context length 77"):
        model.encode_text(torch.ones(1, 78, dtype=torch.long))


def test_wrong_video_shape_names_the_expected_shape(stand_in_tokenizer):
    model = create_model("echoclip-tiny", tokenizer=stand_in_tokenizer)
    with pytest.raises(ModelError, match=r"\[B, 3, 16, 64, 64\].*got \[2, 3, 8, 64, 64\]"):
        model.encode_video(torch.zeros(2, 3, 8, 64, 64))
    with pytest.raises(ModelError, match=r"\[B, 3, 16, 64, 64\]"):
        model.encode_video(torch.zeros(3, 16, 64, 64))


def test_mismatched_checkpoint_lists_missing_and_unexpected_keys(stand_in_tokenizer, tmp_path):
    from safetensors.torch import load_file, save_file

    model = create_model("echoclip-tiny", tokenizer=stand_in_tokenizer)
    path = model.save_pretrained(tmp_path / "m", tokenizer=EchoTokenizer())
    weights = load_file(path / "model.safetensors")
    weights["video_tower.extra.weight"] = torch.zeros(1)
    del weights["video_tower.proj.weight"]
    save_file(weights, path / "model.safetensors")
    with pytest.raises(ModelError) as err:
        load_model(path)
    message = str(err.value)
    assert "missing keys (1): video_tower.proj.weight" in message
    assert "unexpected keys (1): video_tower.extra.weight" in message
    # a checkpoint of another architecture, used as pretrained= for this config
    with pytest.raises(ModelError, match="missing keys.*unexpected keys"):
        create_model("echoclip-tiny-frames", pretrained=tmp_path / "m", tokenizer=stand_in_tokenizer)


def test_pretrained_loads_the_weights_of_a_model_directory(stand_in_tokenizer, tmp_path):
    model = create_model("echoclip-tiny", tokenizer=stand_in_tokenizer)
    model.save_pretrained(tmp_path / "m", tokenizer=EchoTokenizer())
    torch.manual_seed(5)
    again = create_model("echoclip-tiny", pretrained=tmp_path / "m", tokenizer=stand_in_tokenizer)
    torch.testing.assert_close(again.state_dict(), model.state_dict(), rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("missing", ["config.json", "model.safetensors", "preprocess.json"])
def test_model_directory_missing_a_file_names_it(missing, stand_in_tokenizer, tmp_path):
    model = create_model("echoclip-tiny-frames", tokenizer=stand_in_tokenizer)
    path = model.save_pretrained(tmp_path / "m", tokenizer=EchoTokenizer())
    (path / missing).unlink()
    with pytest.raises(ModelError, match=missing):
        load_model(path)
    with pytest.raises(ModelError, match="no such model directory"):
        load_model(tmp_path / "nowhere")


def test_saved_config_records_the_tokenizer_ids(stand_in_tokenizer, tmp_path):
    model = create_model("echoclip-tiny", tokenizer=stand_in_tokenizer)
    path = model.save_pretrained(tmp_path / "m", tokenizer=EchoTokenizer())
    saved = json.loads((path / "config.json").read_text())
    assert saved["text"]["vocab_size"] == 360 and saved["text"]["eos_token_id"] == 2
    assert saved["format"] == "echoclip-model"
    assert json.loads((path / "preprocess.json").read_text())["fps"] == 12.5
    (path / "tokenizer.json").unlink()
    with pytest.raises(ModelError, match="tokenizer.json"):
        get_tokenizer(path)  # an echo-tokenizer model directory without its tokenizer


def test_clip_tokenizer_for_published_configs(tmp_path):
    from open_clip.tokenizer import SimpleTokenizer

    tok = get_tokenizer("echoclip-frames-convnext")
    assert isinstance(tok, SimpleTokenizer)
    ids = tok(["SEVERE AORTIC STENOSIS."])
    assert ids.shape == (1, 77) and ids[0, 0] == tok.sot_token_id


def test_default_echo_tokenizer_when_none_is_given():
    pytest.importorskip("echoclip.tokenizer", reason="echo tokenizer not installed")
    from echoclip.tokenizer import EchoTokenizer

    tok = get_tokenizer("echoclip-tiny")
    assert isinstance(tok, EchoTokenizer)
    model = create_model("echoclip-tiny")
    assert model.config.text.vocab_size >= tok.vocab_size
    assert model.config.text.eos_token_id == tok.eos_token_id
    assert model.text_tower.values.num_values == len(tok.value_token_values())


def test_echo_tokenizer_round_trips_through_the_model_directory(tmp_path):
    pytest.importorskip("echoclip.tokenizer", reason="echo tokenizer not installed")
    from echoclip.tokenizer import EchoTokenizer

    tok = EchoTokenizer()
    model = create_model("echoclip-tiny", tokenizer=tok).eval()
    path = model.save_pretrained(tmp_path / "m", tokenizer=tok)
    loaded_tok = get_tokenizer(path)
    torch.testing.assert_close(loaded_tok(REPORTS), tok(REPORTS))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(list_models()) - set(TINY)))
def test_full_size_configs_encode_save_and_load(name, tmp_path):
    cfg = get_model_config(name)
    if cfg.tokenizer == "bert":  # EchoPrime's text tower reads a WordPiece vocabulary
        from echoclip.models.echoprime_compat import WordPieceTokenizer

        words = [
            "[PAD]",
            "[UNK]",
            "[CLS]",
            "[SEP]",
            "[MASK]",
            *sorted(set(" ".join(REPORTS).lower().split())),
        ]
        (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
        tok = WordPieceTokenizer(tmp_path, context_length=cfg.text.context_length)
    else:
        tok = get_tokenizer(name)
    model = create_model(name, tokenizer=tok).eval()
    x, ids = clips(model, 1), tok(REPORTS[:1])
    with torch.no_grad():
        v, t = model.encode_video(x, normalize=True), model.encode_text(ids, normalize=True)
    assert v.shape == t.shape == (1, cfg.embed_dim)
    folder = model.save_pretrained(tmp_path / "m")
    loaded = load_model(folder)
    torch.testing.assert_close(get_tokenizer(folder)(REPORTS[:1]), ids, rtol=0, atol=0)
    with torch.no_grad():
        assert (loaded.encode_video(x, normalize=True) - v).abs().max() == 0
        assert (loaded.encode_text(ids, normalize=True) - t).abs().max() == 0


def test_save_pretrained_writes_the_models_own_tokenizer_or_says_why_not(tmp_path):
    tok = EchoTokenizer.train(REPORTS * 3)
    model = create_model("echoclip-tiny", tokenizer=tok)
    model.save_pretrained(tmp_path / "with")  # the tokenizer it was created with
    assert (tmp_path / "with" / "tokenizer.json").is_file()
    assert get_tokenizer(tmp_path / "with").encode(REPORTS[0]) == tok.encode(REPORTS[0])
    loaded = load_model(tmp_path / "with")
    loaded.save_pretrained(tmp_path / "again")  # a loaded model keeps its tokenizer too
    assert get_tokenizer(tmp_path / "again").encode(REPORTS[0]) == tok.encode(REPORTS[0])
    model.tokenizer = None
    with pytest.raises(ModelError, match="has none to save"):
        model.save_pretrained(tmp_path / "without")
    assert not (tmp_path / "without").exists()
