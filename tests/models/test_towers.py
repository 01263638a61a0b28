"""Video and text towers: aggregation, masking, pooling, value-aware embeddings, other backbones."""

from __future__ import annotations

import pytest
import torch

from echoclip.errors import ModelError
from echoclip.models.config import TextTowerConfig, VideoTowerConfig
from echoclip.models.factory import create_model, get_model_config, load_model
from echoclip.models.frames import MeanAggregation, StatsAggregation
from echoclip.models.text_towers import ClipTextTower, eos_positions, length_groups, row_lengths
from echoclip.models.value_embedding import ValueEmbedding
from echoclip.models.video_towers import build_video_tower
from echoclip.tokenizer import EchoTokenizer


def clips(model, n=2, seed=0):
    return torch.randn(n, *model.video_shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- video towers


def test_stats_aggregation_sees_motion_that_the_mean_cannot():
    static = torch.zeros(1, 16, 8)
    beating = torch.sin(torch.linspace(0, 4 * torch.pi, 16)).view(1, 16, 1).expand(1, 16, 8)
    assert torch.allclose(static.mean(1), beating.mean(1), atol=1e-6)  # same mean feature
    mean, stats = MeanAggregation(8), StatsAggregation(8, 16)
    assert torch.allclose(mean(static), mean(beating), atol=1e-6)
    assert (stats(static) - stats(beating)).abs().max() > 1e-2


def test_frame_tower_folds_frames_into_the_batch(stand_in_tokenizer):
    model = create_model("echoclip-tiny-frames", tokenizer=stand_in_tokenizer).eval()
    x = clips(model)
    with torch.no_grad():
        per_frame = model.video_tower.forward_features(x)
        single = model.video_tower.backbone(x[1, :, 5][None])
        assert per_frame.shape == (2, 16, 128)
        torch.testing.assert_close(per_frame[1, 5], single[0], atol=1e-5, rtol=0)
        # mean aggregation is EchoCLIP's: each frame projected and scaled to unit length, then averaged
        frames = model.encode_frames(x)
        assert frames.shape == (2, 16, model.config.embed_dim)
        torch.testing.assert_close(frames.norm(dim=-1), torch.ones(2, 16))
        expected = torch.nn.functional.normalize(model.video_tower.proj(per_frame), dim=-1).mean(1)
        torch.testing.assert_close(model.encode_video(x), expected, atol=1e-6, rtol=0)
    assert (
        model.embeds_frames and not create_model("echoclip-tiny", tokenizer=stand_in_tokenizer).embeds_frames
    )


@pytest.mark.parametrize("aggregation", ["stats", "transformer"])
def test_temporal_aggregations_learn_on_a_batch(aggregation, stand_in_tokenizer):
    # a few steps of the CLIP loss on 4 fixed pairs: the loss must fall
    from open_clip.loss import ClipLoss

    model = create_model(
        "echoclip-tiny",
        tokenizer=stand_in_tokenizer,
        video={
            "aggregation": aggregation,
            "num_frames": 4,
            "image_size": 32,
            "backbone_kwargs": {"widths": [16, 32, 64, 128]},
        },  # no strided stem at 32 px
        # six value frequencies: the four numbers start far apart and the text side tells
        # them apart at once (with three they start close, and 15 steps are too few)
        text={"value_frequencies": 6},
    )
    x = clips(model, 4)
    ids = stand_in_tokenizer([f"EF {v}%" for v in (20, 40, 60, 80)])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(15):
        out = model(x, ids)
        loss = ClipLoss()(out["video_features"], out["text_features"], out["logit_scale"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_videomae_masked_path_returns_only_visible_tokens(stand_in_tokenizer):
    model = create_model("echoclip-vit-tiny", tokenizer=stand_in_tokenizer, video={"layers": 2}).eval()
    tower = model.video_tower
    assert tower.num_patches == 8 * 7 * 7
    x = clips(model)
    mask = torch.zeros(2, tower.num_patches, dtype=torch.bool)
    mask[:, torch.randperm(tower.num_patches)[: int(0.9 * tower.num_patches)]] = True
    with torch.no_grad():
        visible = tower.forward_features(x, bool_masked_pos=mask)
        everything = tower.forward_features(x)
    assert visible.shape == (2, tower.num_patches - int(0.9 * tower.num_patches), 192)
    assert everything.shape == (2, tower.num_patches, 192)


def test_videomae_encoder_fits_the_videomae_pretraining_model(stand_in_tokenizer):
    from transformers import VideoMAEForPreTraining

    model = create_model("echoclip-vit-tiny", tokenizer=stand_in_tokenizer, video={"layers": 2})
    pretrain = VideoMAEForPreTraining(model.video_tower.model.config)
    missing, unexpected = pretrain.videomae.load_state_dict(model.video_tower.model.state_dict())
    assert not missing and not unexpected


def test_attentive_pooling_and_gradient_checkpointing_keep_outputs(stand_in_tokenizer):
    model = create_model(
        "echoclip-vit-tiny", tokenizer=stand_in_tokenizer, video={"layers": 2, "pool": "attentive"}
    )
    x = clips(model)
    ids = stand_in_tokenizer(["EF 55%", "EF 20%"])
    plain = model(x, ids)
    model.set_grad_checkpointing(True)
    checkpointed = model(x, ids)
    torch.testing.assert_close(plain["video_features"], checkpointed["video_features"])
    checkpointed["video_features"].sum().backward()
    assert model.video_tower.pool.query.grad is not None


def test_torchvision_backbone_on_small_clips(stand_in_tokenizer):
    model = create_model(
        "echoclip-r2plus1d",
        tokenizer=stand_in_tokenizer,
        embed_dim=32,
        video={"image_size": 32, "num_frames": 4},
        text={"width": 64, "layers": 1},
    )
    x = clips(model)
    model.encode_video(x, normalize=True).sum().backward()
    assert model.video_tower.backbone.stem[0].weight.grad is not None
    assert model.video_tower.proj.weight.shape == (32, 512)


def test_timm_backbone_per_frame(stand_in_tokenizer, tmp_path):
    model = create_model(
        "echoclip-tiny",
        tokenizer=stand_in_tokenizer,
        video={
            "backbone": "timm",
            "backbone_kwargs": {"model_name": "test_resnet"},
            "image_size": 32,
            "num_frames": 4,
        },
    ).eval()
    x = clips(model)
    with torch.no_grad():
        v = model.encode_video(x, normalize=True)
    assert v.shape == (2, model.config.embed_dim)
    loaded = load_model(model.save_pretrained(tmp_path / "timm", tokenizer=EchoTokenizer()))
    with torch.no_grad():
        assert (loaded.encode_video(x, normalize=True) - v).abs().max() == 0


def test_unknown_backbones_fail_with_the_known_ones():
    with pytest.raises(ModelError, match="r2plus1d_18"):
        build_video_tower(VideoTowerConfig(kind="torchvision", backbone="resnet50"), 32)
    with pytest.raises(ModelError, match="known: \\['frames', 'torchvision', 'videomae'\\]"):
        build_video_tower(VideoTowerConfig(kind="rnn"), 32)
    with pytest.raises(ModelError, match="model_name"):
        build_video_tower(VideoTowerConfig(kind="frames", backbone="timm"), 32)


# ---------------------------------------------------------------- text towers


def test_eos_positions_first_end_token_else_last_real_token():
    ids = torch.tensor([[1, 7, 2, 0, 0], [1, 7, 8, 9, 0], [1, 2, 5, 2, 0]])
    assert eos_positions(ids, eos_id=2, pad_id=0).tolist() == [2, 3, 1]


def test_clip_tower_pools_where_open_clip_does():
    # open_clip's forward takes exactly context_length tokens
    cfg = TextTowerConfig(
        kind="clip", context_length=6, vocab_size=100, width=32, heads=2, layers=2, pool="argmax"
    )
    tower = ClipTextTower(cfg, 16).eval()
    ids = torch.tensor([[98, 5, 6, 99, 0, 0], [98, 7, 99, 0, 0, 0]])  # CLIP: the end token has the largest id
    with torch.no_grad():
        torch.testing.assert_close(tower(ids), tower.clip(ids), rtol=0, atol=1e-6)  # open_clip's own forward
    eos = ClipTextTower(TextTowerConfig(**{**cfg.__dict__, "pool": "eos", "eos_token_id": 3}), 16).eval()
    eos.load_state_dict(tower.state_dict())
    eos.clip.pool_type, eos.clip.eos_id = "eos", 3
    ids = torch.tensor([[1, 5, 6, 3, 0, 0], [1, 7, 3, 0, 0, 0]])  # the end token is not the largest id here
    with torch.no_grad():
        torch.testing.assert_close(eos(ids), eos.clip(ids), rtol=0, atol=1e-6)
        # causal attention: what follows the end token cannot change the embedding
        torch.testing.assert_close(eos(ids), eos(torch.tensor([[1, 5, 6, 3, 9, 9], [1, 7, 3, 4, 4, 4]])))


def test_clip_eos_pool_needs_the_tokenizer_end_token():
    with pytest.raises(ModelError, match="eos_token_id"):
        ClipTextTower(
            TextTowerConfig(kind="clip", vocab_size=100, width=32, heads=2, layers=1, pool="eos"), 16
        )


def hf_text(pool: str) -> dict:
    return {
        "kind": "hf",
        "pool": pool,
        "hf_config": {
            "model_type": "bert",
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "max_position_embeddings": 80,
        },
    }


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_hf_text_tower_from_a_config(pool, stand_in_tokenizer, tmp_path):
    model = create_model("echoclip-tiny-frames", tokenizer=stand_in_tokenizer, text=hf_text(pool)).eval()
    assert model.text_tower.model.config.vocab_size == stand_in_tokenizer.vocab_size
    ids = stand_in_tokenizer(["EF 35%", "NORMAL LV SIZE AND FUNCTION"])
    with torch.no_grad():
        t = model.encode_text(ids, normalize=True)
        # padding is masked: the same texts with fewer pad tokens give the same embeddings
        torch.testing.assert_close(model.encode_text(ids[:, :40], normalize=True), t, atol=1e-5, rtol=0)
    assert t.shape == (2, 128)
    loaded = load_model(model.save_pretrained(tmp_path / "hf", tokenizer=EchoTokenizer()))
    with torch.no_grad():
        assert (loaded.encode_text(ids, normalize=True) - t).abs().max() == 0


def test_hf_text_tower_from_a_local_folder_saves_a_portable_directory(stand_in_tokenizer, tmp_path):
    from transformers import BertConfig, BertModel

    cfg = {k: v for k, v in hf_text("cls")["hf_config"].items() if k != "model_type"}
    BertModel(BertConfig(vocab_size=stand_in_tokenizer.vocab_size, **cfg)).save_pretrained(tmp_path / "bert")
    text = {"kind": "hf", "pool": "cls", "hf_path": str(tmp_path / "bert")}
    model = create_model("echoclip-tiny-frames", tokenizer=stand_in_tokenizer, text=text).eval()
    out = model.save_pretrained(tmp_path / "model", tokenizer=EchoTokenizer())
    for f in (tmp_path / "bert").iterdir():
        f.unlink()
    loaded = load_model(out)
    assert loaded.config.text.hf_path is None and loaded.config.text.hf_config["model_type"] == "bert"
    ids = stand_in_tokenizer(["EF 35%"])
    with torch.no_grad():
        assert (loaded.encode_text(ids) - model.encode_text(ids)).abs().max() == 0


# ---------------------------------------------------------------- value-aware embeddings


def test_value_embedding_is_zero_for_ordinary_tokens_and_ordered_for_values():
    emb = ValueEmbedding(vocab_size=256, width=64)
    emb.set_values({100 + v: float(v) for v in range(101)})
    assert emb.num_values == 101
    with torch.no_grad():
        out = emb(torch.tensor([[5, 135, 136, 190]]))[0]
    assert out[0].abs().max() == 0
    near, far = (out[1] - out[2]).norm(), (out[1] - out[3]).norm()
    assert near < 0.5 * far
    with pytest.raises(ModelError, match="outside the text vocabulary"):
        emb.set_values({500: 1.0})


def test_value_tokens_start_close_to_their_neighbours_only_with_value_embeddings(stand_in_tokenizer):
    def input_embedding_distances(value_embeddings: bool) -> torch.Tensor:
        torch.manual_seed(0)
        model = create_model(
            "echoclip-tiny", tokenizer=stand_in_tokenizer, text={"value_embeddings": value_embeddings}
        )
        ids = torch.tensor([[stand_in_tokenizer.first_value + v for v in (35, 34, 36, 90, 5)]])
        tower = model.text_tower
        with torch.no_grad():
            e = tower.clip.token_embedding(ids)[0]
            if tower.values is not None:
                e = e + tower.values(ids)[0]
        return (e[1:] - e[0]).norm(dim=-1)  # distances of 34, 36, 90, 5 from 35

    d = input_embedding_distances(True)
    assert d[:2].max() < 0.5 * d[2:].min()
    plain = input_embedding_distances(False)
    assert plain[:2].max() > 0.7 * plain[2:].min()  # plain embeddings: every value equally far


def test_value_map_is_saved_with_the_weights(stand_in_tokenizer, tmp_path):
    model = create_model("echoclip-tiny", tokenizer=stand_in_tokenizer)
    loaded = load_model(model.save_pretrained(tmp_path / "m", tokenizer=EchoTokenizer()))
    values = loaded.text_tower.values.token_values
    assert values[stand_in_tokenizer.first_value + 42].item() == 42.0
    assert torch.isnan(values[stand_in_tokenizer.first_byte]).item()


def test_echo_configs_get_the_echo_tokenizer_values():
    pytest.importorskip("echoclip.tokenizer")
    from echoclip.tokenizer import EchoTokenizer

    tok = EchoTokenizer()
    model = create_model(get_model_config("echoclip-tiny"), tokenizer=tok)
    table = model.text_tower.values.token_values
    for token_id, value in tok.value_token_values().items():
        assert table[token_id].item() == pytest.approx(value)


def test_clip_tower_embeds_a_text_the_same_in_any_batch(stand_in_tokenizer):
    """The causal tower drops padding columns: a short prompt batched alone (a few
    columns) or next to a long report (all 77) gets the same embedding."""
    torch.manual_seed(0)
    model = create_model("echoclip-tiny", tokenizer=stand_in_tokenizer).eval()
    prompt = "LV EJECTION FRACTION IS 40%."
    with torch.no_grad():
        alone = model.encode_text(stand_in_tokenizer([prompt]))
        batched = model.encode_text(stand_in_tokenizer([prompt, "SEVERE MITRAL REGURGITATION. " * 8]))
    assert torch.allclose(alone[0], batched[0], atol=1e-5)
    assert not torch.allclose(batched[0], batched[1], atol=1e-3)


def test_clip_tower_groups_rows_by_length_without_changing_them(stand_in_tokenizer):
    """A batch of very different lengths is encoded in groups of similar length; every
    row's embedding and gradient are those it has when encoded alone."""
    torch.manual_seed(0)
    model = create_model("echoclip-tiny", tokenizer=stand_in_tokenizer).train()
    texts = [("SEVERE MITRAL REGURGITATION. " * (1 + i % 7))[: 5 + 9 * i] for i in range(24)]
    ids = stand_in_tokenizer(texts)
    lengths = row_lengths(ids, 0).tolist()
    assert len(length_groups(lengths)) > 1  # the batch is split
    batched = model.encode_text(ids)
    weights = torch.randn(batched.shape)
    (batched * weights).sum().backward()
    grad_batched = model.text_tower.clip.token_embedding.weight.grad.clone()
    model.zero_grad()
    alone = torch.cat([model.encode_text(ids[i : i + 1]) for i in range(len(texts))])
    (alone * weights).sum().backward()
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-4)
    grad_alone = model.text_tower.clip.token_embedding.weight.grad
    torch.testing.assert_close(grad_batched, grad_alone, atol=1e-3 * grad_alone.abs().max().item(), rtol=0)


def test_length_groups_split_only_when_padding_costs_more_than_a_group():
    same = [12] * 40
    assert length_groups(same) == [list(range(40))]
    mixed = [70] * 10 + [8] * 90
    groups = length_groups(mixed)
    assert 2 <= len(groups) <= 4
    assert sorted(i for g in groups for i in g) == list(range(100))
    firsts = [max(mixed[i] for i in g) for g in groups]
    assert firsts == sorted(firsts)  # shortest group first
    assert max(mixed[i] for i in groups[0]) == 8  # the short rows are not padded to 70
    assert length_groups([]) == [[]]
    assert row_lengths(torch.tensor([[5, 6, 0, 0], [0, 0, 0, 0], [1, 0, 2, 0]]), 0).tolist() == [2, 0, 3]


def test_clip_tower_mean_pooling_averages_the_tokens_and_ignores_padding(stand_in_tokenizer):
    """``pool="mean"``: the embedding is the projected mean of the token features
    (padding excluded), so it does not depend on what it is batched with."""
    torch.manual_seed(0)
    model = create_model("echoclip-tiny", tokenizer=stand_in_tokenizer, text={"pool": "mean"}).eval()
    prompt = "LV EJECTION FRACTION IS 40%."
    ids = stand_in_tokenizer([prompt, "SEVERE MITRAL REGURGITATION. " * 8])
    with torch.no_grad():
        batched = model.encode_text(ids)
        alone = model.encode_text(stand_in_tokenizer([prompt]))
        tokens = model.text_tower.forward_features(ids[:1])
    n = int((ids[0] != 0).sum())
    assert torch.allclose(alone[0], batched[0], atol=1e-5)
    expected = tokens[0, :n].mean(dim=0) @ model.text_tower.clip.text_projection
    assert torch.allclose(batched[0], expected, atol=1e-5)
    eos = create_model("echoclip-tiny", tokenizer=stand_in_tokenizer).eval()
    eos.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert not torch.allclose(eos.encode_text(ids)[0], batched[0], atol=1e-3)
