"""The scale embedding: a clip's cm per pixel as an input of the video embedding, carried from
the file through every resize, crop and zoom to ``encode_video``; unknown scales get their
own learned vector."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from echoclip.data.augment import AugmentConfig, TrainTransform, augment_clip, augment_clip_zoom, sample_rng
from echoclip.data.datasets import Manifest
from echoclip.data.transforms import PreprocessConfig, VideoTransform
from echoclip.data.video import Video, save_video
from echoclip.errors import ModelError
from echoclip.models.embed import embed_videos
from echoclip.models.factory import create_model, load_model
from echoclip.models.scale_embedding import ScaleEmbedding
from echoclip.tokenizer import EchoTokenizer

NAN = float("nan")


def _nonzero(module: ScaleEmbedding, seed: int = 0) -> ScaleEmbedding:
    """The embedding as after some training: its zero-initialised output layer and unknown vector set."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        module.mlp[-1].weight.copy_(torch.randn(module.mlp[-1].weight.shape, generator=g))
        module.unknown.copy_(torch.randn(module.unknown.shape, generator=g))
    return module


def test_it_starts_as_no_input_and_gives_unknown_scales_their_own_vector():
    torch.manual_seed(0)
    emb = ScaleEmbedding(8).eval()
    scales = torch.tensor([[0.1, 0.1], [0.3, 0.25], [NAN, NAN], [0.2, NAN]])
    assert torch.equal(emb(scales), torch.zeros(4, 8))  # a pretrained embedding is unchanged at step 0
    _nonzero(emb)
    out = emb(scales)
    assert torch.equal(out[2], emb.unknown.detach()) and torch.equal(out[3], emb.unknown.detach())
    assert not torch.allclose(out[0], out[1]) and not torch.allclose(out[0], out[2])
    with pytest.raises(ModelError, match=r"\[B, 2\]"):
        emb(torch.tensor([0.1, 0.2]))


def test_dropout_hides_known_scales_in_training_only():
    torch.manual_seed(0)
    emb = _nonzero(ScaleEmbedding(8, dropout=0.5))
    scales = torch.full((2000, 2), 0.2)
    hidden = (emb.train()(scales) == emb.unknown.detach()).all(dim=1).float().mean().item()
    assert hidden == pytest.approx(0.5, abs=0.05)
    assert not (emb.eval()(scales) == emb.unknown.detach()).all(dim=1).any()
    with pytest.raises(ModelError, match="dropout"):
        ScaleEmbedding(8, dropout=1.0)


def test_a_scale_model_reads_cm_per_px_and_saves_its_embedding(tmp_path):
    torch.manual_seed(0)
    model = create_model("echoclip-tiny", tokenizer=EchoTokenizer(), scale_embedding=True).eval()
    assert model.uses_scale and not create_model("echoclip-tiny", tokenizer=EchoTokenizer()).uses_scale
    _nonzero(model.scale_embedding)
    clip = torch.randn(2, *model.video_shape)
    with torch.no_grad():
        near = model.encode_video(clip, cm_per_px=torch.tensor([[0.2, 0.2], [0.2, 0.2]]))
        deep = model.encode_video(clip, cm_per_px=torch.tensor([[0.4, 0.4], [0.4, 0.4]]))
        unknown = model.encode_video(clip)
        assert torch.equal(unknown, model.encode_video(clip, cm_per_px=torch.full((2, 2), NAN)))
        assert not torch.allclose(near, deep) and not torch.allclose(near, unknown)
        with pytest.raises(ModelError, match="cm_per_px"):
            model.encode_video(clip, cm_per_px=torch.ones(3, 2))
        loaded = load_model(model.save_pretrained(tmp_path / "m")).eval()
        assert loaded.config.scale_embedding
        assert torch.allclose(loaded.encode_video(clip, cm_per_px=torch.full((2, 2), 0.4)), deep, atol=1e-6)


def test_frame_embedding_towers_cannot_take_a_scale(stand_in_tokenizer):
    with pytest.raises(ModelError, match="frames tower"):
        create_model("echoclip-tiny-frames", tokenizer=stand_in_tokenizer, scale_embedding=True)


def test_the_scale_follows_every_resize_crop_and_zoom():
    frames = np.random.default_rng(0).integers(0, 255, (8, 96, 128, 3), dtype=np.uint8)
    config = PreprocessConfig(image_size=48, num_frames=4, fps=25.0)
    clip, scale = VideoTransform(config).scaled(Video(frames, 25.0, {"cm_per_px": (0.1, 0.1)}))
    assert clip.shape == (3, 4, 48, 48)
    assert scale.tolist() == pytest.approx([0.2, 0.2])  # the short side, 96 px, to 48
    assert torch.isnan(VideoTransform(config).scaled(Video(frames, 25.0, {}))[1]).all()
    # training's random crop magnifies the clip: each pixel spans less
    half = AugmentConfig(scale=(0.25, 0.25), ratio=(1.0, 1.0), brightness=0, contrast=0, gamma=(1, 1))
    x, zoom = augment_clip_zoom(frames[:, :, :96], sample_rng(0, 0, 0), half)
    assert zoom == pytest.approx((2.0, 2.0))
    assert torch.equal(x, augment_clip(frames[:, :, :96], sample_rng(0, 0, 0), half))
    train = TrainTransform(config, augment=half)
    _, zoomed = train.scaled(Video(frames, 25.0, {"cm_per_px": (0.1, 0.1)}), sample_rng(0, 0, 1))
    assert zoomed.tolist() == pytest.approx([0.1, 0.1])


def test_datasets_and_embed_videos_give_the_model_each_videos_scale(tmp_path, stand_in_tokenizer):
    frames = np.random.default_rng(0).integers(0, 255, (16, 64, 64, 3), dtype=np.uint8)
    for name in ("a", "b"):
        save_video(frames, tmp_path / f"{name}.avi", fps=25.0, codec="ffv1")
    pd.DataFrame(
        {
            "video_path": ["a.avi", "b.avi"],
            "report": ["", ""],
            "patient_id": ["p", "q"],
            "study_id": ["a", "b"],
            "cm_per_px": [0.1, 0.3],
        }
    ).to_parquet(tmp_path / "manifest.parquet")
    torch.manual_seed(0)
    model = create_model("echoclip-tiny", tokenizer=stand_in_tokenizer, scale_embedding=True).eval()
    _nonzero(model.scale_embedding)
    dataset = Manifest(tmp_path / "manifest.parquet", transform=VideoTransform(model.preprocess_config))
    size = model.preprocess_config.image_size
    assert dataset[1]["cm_per_px"].tolist() == pytest.approx([0.3 * 64 / size] * 2)
    emb = embed_videos(model, dataset, progress=False)
    assert not np.allclose(emb[0], emb[1])  # the same pixels, two scales
    same = [Video(frames, 25.0, {"cm_per_px": (s, s)}) for s in (0.1, 0.3)]
    assert np.allclose(embed_videos(model, same, progress=False), emb, atol=1e-5)
    unknown = embed_videos(model, [Video(frames, 25.0, {})], progress=False)
    with torch.no_grad():
        clip = VideoTransform(model.preprocess_config)(Video(frames, 25.0, {}))[None]
        expected = model.encode_video(clip, normalize=True).numpy()
    assert np.allclose(unknown, expected, atol=1e-5) and not math.isclose(float(unknown[0] @ emb[0]), 1.0)
